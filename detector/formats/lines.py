"""What every adapter does with one raw line: decode it, and cut the strings it keeps.

Adapters read bytes (``base``); the contract's records are JSON, so invalid UTF-8 becomes U+FFFD
rather than a rejection, and a kept string is cut where the core would cut it anyway, so no record
grows past the contract's size. ``LineAdapter`` is the ``feed`` loop of the formats read one line
at a time, where a line gives records (now or later), ``skipped``, or a rejection reason.

>>> line_text(b"\\xef\\xbb\\xbfNov 27 10:15:02 mx1 postfix/smtp[91]: caf\\xc3\\xa9\\r\\n")
'Nov 27 10:15:02 mx1 postfix/smtp[91]: café'
>>> decode(b"[1795774502] unbound[811:0] info: \\xff\\n")
'[1795774502] unbound[811:0] info: \\ufffd'
"""

from __future__ import annotations

from abc import abstractmethod

from ..core.records import MAX_FIELD_CHARS, MAX_LINE_BYTES
from .base import Adapter, Converted


def decode(raw: bytes) -> str:
    """A raw line as text: invalid UTF-8 becomes U+FFFD (records must be valid JSON strings)."""
    return raw.decode("utf-8", "replace").rstrip("\r\n")


def line_text(raw: bytes | str) -> str:
    """One line as text: invalid UTF-8 replaced, no line end, no byte-order mark.

    Unlike ``decode``, a file's leading byte-order mark goes too (exports from Windows tools carry
    one; the mail adapters read those).
    """
    text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
    return text.rstrip("\r\n").lstrip("\ufeff")


def clip_field(value: str) -> str:
    """A string kept in a record: cut where the core cuts it anyway, so no record is too large."""
    return value[:MAX_FIELD_CHARS]


class LineAdapter(Adapter):
    """A log read line by line: each line gives records (now or later), ``skipped``, or a reason.

    Subclasses say what one line means (``_line``: the rejection reason, or None) and how much one
    line looks like theirs (``_sniff_line``: 0..1); ``sniff`` averages that over the sample.
    """

    def feed(self, lines: list[bytes]) -> Converted:
        out = Converted()
        for index, raw in enumerate(lines):
            reason = "too_large" if len(raw) > MAX_LINE_BYTES else self._line(decode(raw), out)
            if reason:
                out.rejected.append((index, reason))
        return out

    @abstractmethod
    def _line(self, line: str, out: Converted) -> str | None:
        """Convert one line into ``out``; a rejection reason, or ``None``."""

    @classmethod
    def sniff(cls, lines: list[bytes]) -> float:
        scores = [cls._sniff_line(decode(raw)) for raw in lines[:50] if raw.strip()]
        return sum(scores) / len(scores) if scores else 0.0

    @classmethod
    def _sniff_line(cls, line: str) -> float:
        return 0.0
