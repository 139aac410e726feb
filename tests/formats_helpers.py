"""What the log-format adapter tests share: the fixtures, and conversions that check every record.

Every record an adapter emits goes through the project's own parser (``parse_mail``/``parse_dns``),
and a mail record through the contract's schema too, so "the adapter produced it" always means
"the core accepts it".
"""

from __future__ import annotations

import json
from pathlib import Path

import orjson
from jsonschema import Draft202012Validator

from detector.core.records import parse_dns, parse_mail
from detector.formats.bind import Bind
from detector.formats.coredns import CoreDns
from detector.formats.unbound import Unbound
from detector.formats.zeek import ZeekDns, ZeekSmtp

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "formats"
MAIL_SCHEMA = Draft202012Validator(
    json.loads((ROOT / "schemas" / "mail-flow-record.schema.json").read_text()))
#: The adapters that sniff each other's logs: a sample of one must score low with all the others.
ALL_ADAPTERS = (ZeekDns, ZeekSmtp, Unbound, Bind, CoreDns)
#: Contract records, as a file of JSON lines in the contract's own format starts.
CONTRACT_LINES = [
    b'{"ts": "2026-11-27T10:15:02Z", "qname": "bank.example", "rcode": "SERVFAIL"}',
    b'{"ts": 1795774502, "message_id": "m1", "status": "deferred"}']


def fixture_lines(name: str) -> list[bytes]:
    return (FIXTURES / name).read_bytes().splitlines()


def convert(adapter, lines: list[bytes]):
    """Feed ``lines`` to a mail adapter; return (records as dicts, rejected, skipped), every record
    contract-valid."""
    batch = adapter.feed(lines)
    records = []
    for raw in batch.records:
        parse_mail(raw)
        record = orjson.loads(raw)
        MAIL_SCHEMA.validate(record)
        records.append(record)
    return records, batch.rejected, batch.skipped


def feed_and_flush(adapter, lines: list[bytes]):
    """Feed and flush; return the records as dicts (each one checked by its stream's parser) and
    what the feed gave (its ``rejected`` and ``skipped``)."""
    out = adapter.feed(lines)
    tail = adapter.flush()
    parse = parse_dns if adapter.stream == "dns" else parse_mail
    for raw in out.records + tail.records:
        parse(raw)
    return [orjson.loads(r) for r in out.records + tail.records], out


def sniff_scores(name: str) -> dict[str, float]:
    """How sure each of ``ALL_ADAPTERS`` is that the fixture's first lines are its format."""
    return {cls.name: cls.sniff(fixture_lines(name)[:50]) for cls in ALL_ADAPTERS}
