"""Adapters from the logs people already have to the contract's records (protocol: ``base``).

``FORMATS`` names every format per stream; ``json`` is the contract's own JSON lines (no adapter).
``make_adapter(name, stream)`` builds one; ``detect(lines, stream)`` recognises a format from a
file's first lines, the way ``--mail-format auto`` does, and says how sure it is.
"""

from __future__ import annotations

import orjson

from .base import Adapter, Converted, convert_chunks
from .bind import Bind
from .coredns import CoreDns
from .m365 import M365Adapter
from .postfix import PostfixAdapter
from .unbound import Unbound
from .zeek import ZeekDns, ZeekSmtp

CONTRACT = "json"
ADAPTERS: dict[str, type[Adapter]] = {
    cls.name: cls for cls in (PostfixAdapter, M365Adapter, ZeekSmtp, ZeekDns, Unbound, Bind, CoreDns)
}
FORMATS: dict[str, tuple[str, ...]] = {
    stream: (CONTRACT, *(name for name, cls in ADAPTERS.items() if cls.stream == stream))
    for stream in ("mail", "dns")
}
#: Lines read from the start of a file to recognise its format.
SNIFF_LINES = 50


def make_adapter(name: str, stream: str) -> Adapter | None:
    """The adapter for ``name`` (``None`` for the contract's JSON); ValueError when unknown."""
    if name == CONTRACT:
        return None
    cls = ADAPTERS.get(name)
    if cls is None or cls.stream != stream:
        raise ValueError(f"unknown {stream} format {name!r} (known: {', '.join(FORMATS[stream])})")
    return cls()


def contract_score(lines: list[bytes], stream: str) -> float:
    """Share of lines that are contract records of ``stream`` (JSON objects with its fields)."""
    required = ("ts", "message_id", "status") if stream == "mail" else ("ts", "qname", "rcode")
    seen = hits = 0
    for line in lines:
        if not line.strip():
            continue
        seen += 1
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict) and all(field in obj for field in required):
            hits += 1
    return hits / seen if seen else 0.0


def scores(lines: list[bytes], stream: str) -> dict[str, float]:
    """How sure (0..1) each format of ``stream`` is of a file starting with ``lines``, best first
    (the contract's JSON first among equals)."""
    found = {CONTRACT: contract_score(lines, stream)}
    for name, cls in ADAPTERS.items():
        if cls.stream == stream:
            found[name] = cls.sniff(lines)
    ordered = sorted(found, key=lambda name: (-found[name], name != CONTRACT))
    return {name: found[name] for name in ordered}


def detect(lines: list[bytes], stream: str) -> tuple[str, float]:
    """The most likely format of ``stream`` for a file starting with ``lines``, and its score."""
    best, score = next(iter(scores(lines, stream).items()))
    return best, score


__all__ = ["ADAPTERS", "CONTRACT", "FORMATS", "Adapter", "Converted", "contract_score",
           "convert_chunks", "detect", "make_adapter", "scores"]
