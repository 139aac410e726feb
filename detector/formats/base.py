"""The adapter protocol: a log format's lines in, the contract's records out.

An adapter turns lines of one real log format (Postfix maillog, a Zeek dns.log, ...) into records
in the contract's JSON form, so everything after it (the core, the worker, the dead-letter sink)
works unchanged. Adapters are small classes with two verbs: ``feed(lines)`` for a batch of raw
lines (bytes, without the newline) and ``flush()`` at the end of the input; both return a
``Converted``. A line that cannot be used is *rejected* with a reason, like any other record: an
adapter never raises on input. Some formats spread one delivery over several lines (Postfix logs a
queue id's sender, then its deliveries): such an adapter keeps bounded state between batches and
says so in ``max_pending``; ``snapshot()``/``restore()`` give that state as JSON-able data.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import orjson


@dataclass
class Converted:
    """What a batch of lines became.

    ``records`` are contract records as JSON bytes; ``rejected`` pairs the index of a line in the
    batch with its reason (``not_<format>``, ``truncated``, ``bad_ts``, ...); ``skipped`` counts
    lines that are valid but carry no record (a Postfix ``connect from`` line, a Zeek header).
    """

    records: list[bytes] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    skipped: int = 0

    def add(self, record: dict) -> None:
        self.records.append(orjson.dumps(record))


class Adapter(ABC):
    """Base class: a named format for one stream (``"mail"`` or ``"dns"``)."""

    #: The name users give with ``--mail-format`` / ``--dns-format``.
    name: str = ""
    #: ``"mail"`` or ``"dns"``: the contract stream its records belong to.
    stream: str = ""
    #: Upper bound on the entries it keeps between batches (0: stateless).
    max_pending: int = 0

    @abstractmethod
    def feed(self, lines: list[bytes]) -> Converted:
        """Convert one batch of lines (bytes, without the newline)."""

    def flush(self) -> Converted:
        """End of input: records still held (a stateless adapter returns an empty result)."""
        return Converted()

    @classmethod
    def sniff(cls, lines: list[bytes]) -> float:
        """How sure (0..1) this adapter is that ``lines`` (the file's first lines) are its format."""
        return 0.0

    def snapshot(self) -> dict:
        return {}

    def restore(self, state: dict) -> None:
        return None


def convert_chunks(adapter: Adapter, chunks):
    """``(Converted, line numbers)`` for each ``(lines, numbers)`` chunk of a file, then the
    adapter's ``flush()`` at the end of it (with no line numbers)."""
    for lines, numbers in chunks:
        yield adapter.feed(lines), numbers
    yield adapter.flush(), []
