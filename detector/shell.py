"""What both shells do between an input and the core: the adapter step and the checkpoint envelope.

A replay reads files, the worker reads Kafka partitions; each file or partition is a *source* of
the core's watermark, in the contract's JSON or in a log format of its own. ``Source`` is that
step, written once for both: values in (a file's lines, a partition's record values), through the
format's adapter when there is one, into the core, and back out the core's events with one list of
everything rejected on the way, by the adapter or by the core (``Rejection``). Each shell only
maps rejections to its own dead-letter sink (file letters with line numbers; Kafka records with
headers and offsets) and writes the events. No I/O here: a ``Source`` is fed bytes and returns
values, like the core.

A ``Source`` feeds whatever ``Task`` it was given (today the shell's one ``Detector``, shared by
all its sources), so a shell could equally give each source a task of its own.

The checkpoint both shells save is one envelope, ``{"detector": <the core's snapshot>,
"adapters": {<key>: <adapter snapshot>}}`` (``envelope``), keyed by the shell's own name for each
input (the replay: the input's position, so a state file outlives file names; the worker:
``topic/partition``); ``restore`` and ``saved_adapters`` read it back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from .core import AnomalyEvent, Detector, DetectorConfig, FeedResult
from .formats import Adapter


class Task(Protocol):
    """What a ``Source`` feeds: the core's ``Detector``, or anything with its input verbs."""

    def add_source(self, source: str) -> None: ...

    def feed(self, stream: str, lines: list, source: str | None = None,
             now: float | None = None, *, carry: bool = False,
             limit: float | None = None) -> FeedResult: ...

    def snapshot(self) -> dict: ...


class Rejection(NamedTuple):
    """One value refused on the way into the core, by the adapter or by the core itself."""

    raw: bytes                 # the value as fed, or the record the adapter made of it
    reason: str                # the dead-letter reason (``missing_field:ts``, ``not_postfix``...)
    position: Any              # its reference among the values fed (their ``refs``: a line
                               # number, an offset; else its index), a value carried from an
                               # earlier batch included; None for a record the adapter made (or
                               # gave at ``flush``), which no single value is
    converted: bool            # the core refused a record the adapter made
    adapter: str | None        # the adapter's format name when the adapter refused the value


@dataclass(slots=True)
class Fed:
    """What one ``feed`` or ``flush`` gave: the core's events and every rejection, the adapter's
    first, each in the order of the values."""

    events: list[AnomalyEvent]
    rejected: list[Rejection]
    records: int = 0           # records the core judged (the values, or the adapter's records)
    skipped: int = 0           # values the adapter read that carry no record


class Source:
    """One input of a shell: its stream, its name as a watermark source, its format's adapter.

    Creating it declares the source to the task (it holds the watermark back until its first
    batch) and restores the adapter's state from ``saved`` (an ``adapter.snapshot()``), if given.

    A source without an adapter *carries*: the last values of a batch that the core could not
    settle alone (records far ahead of the rest, at its very end: the first records after a
    quiet gap, or a host with a wrong clock; ``JoinTask.feed``) are kept here, with their
    references, and fed again at the start of the next batch, which settles them; ``release``
    feeds them alone when the input has no more (the end of a file, an idle partition), where
    they are judged as the batch they came in would have judged them. ``held_from`` is the
    reference of the first value held (a shell commits no offset past it).

    >>> from detector.core import Detector
    >>> source = Source(Detector(), "dns", "dns/0")
    >>> fed = source.feed([b'{"ts": 1764237600, "qname": "a.example", "rcode": "SERVFAIL"}',
    ...                    b'{"qname": "b.example"}'])
    >>> fed.records, [(r.reason, r.position, r.converted) for r in fed.rejected]
    (2, [('missing_field:ts', 1, False)])
    """

    __slots__ = ("task", "stream", "name", "adapter", "_held", "_held_refs", "_held_limit")

    def __init__(self, task: Task, stream: str, name: str, adapter: Adapter | None = None,
                 saved: dict | None = None) -> None:
        self.task = task
        self.stream = stream
        self.name = name
        self.adapter = adapter
        self._held: list[bytes] = []
        self._held_refs: list[Any] = []
        self._held_limit = 0.0
        task.add_source(name)
        if adapter is not None and saved is not None:
            adapter.restore(saved)

    def feed(self, values: list[bytes], now: float | None = None,
             refs: list | None = None) -> Fed:
        """One batch of values, in order, with their references (``refs``: line numbers,
        offsets; their indexes when not given). ``now`` is the core's ``now`` (future
        records)."""
        adapter = self.adapter
        if refs is None:
            refs = list(range(len(values)))
        if adapter is None:
            if self._held:
                values, refs = self._held + values, self._held_refs + refs
            result = self.task.feed(self.stream, values, source=self.name, now=now, carry=True)
            carry = result.carry
            if carry is None:
                self._held, self._held_refs = [], []
            else:
                cut = len(values) - carry.lines
                self._held, self._held_refs = values[cut:], refs[cut:]
                self._held_limit = carry.limit
                values = values[:cut]
            return self._fed(result, values, refs, [], 0, converted=False)
        made = adapter.feed(values)
        rejected = [Rejection(values[index], reason, refs[index], False, adapter.name)
                    for index, reason in made.rejected]
        return self._core(made.records, rejected, made.skipped, now, converted=True)

    @property
    def held_from(self) -> Any:
        """The reference of the first value held for the next batch (None: none held)."""
        return self._held_refs[0] if self._held_refs else None

    def release(self, now: float | None = None) -> Fed:
        """The input has no more for now: the values held from its last batch are judged
        alone, as that batch would have judged them (nothing when none are held)."""
        values, refs = self._held, self._held_refs
        if not values:
            return Fed([], [])
        self._held, self._held_refs = [], []
        result = self.task.feed(self.stream, values, source=self.name, now=now,
                                limit=self._held_limit)
        return self._fed(result, values, refs, [], 0, converted=False)

    def flush(self, now: float | None = None) -> Fed:
        """End of this input: what the adapter still holds goes to the core (nothing without an
        adapter; the core's own last windows are the shell's ``close()``)."""
        adapter = self.adapter
        if adapter is None:
            return Fed([], [])
        made = adapter.flush()
        rejected = [Rejection(b"", reason, None, False, adapter.name)
                    for _index, reason in made.rejected]
        return self._core(made.records, rejected, made.skipped, now, converted=True)

    def _core(self, records: list[bytes], rejected: list[Rejection], skipped: int,
              now: float | None, converted: bool) -> Fed:
        result = self.task.feed(self.stream, records, source=self.name, now=now)
        return self._fed(result, records, None, rejected, skipped, converted)

    @staticmethod
    def _fed(result: FeedResult, records: list[bytes], refs: list | None,
             rejected: list[Rejection], skipped: int, converted: bool) -> Fed:
        """``result`` of the core for ``records`` (at ``refs``), after ``rejected``."""
        if result.rejected:
            rejected += [Rejection(records[index], reason,
                                   None if converted or refs is None else refs[index],
                                   converted, None)
                         for index, reason in result.rejected]
        return Fed(result.events, rejected, len(records), skipped)


def envelope(task: Task, sources: Mapping[str, Source]) -> dict[str, Any]:
    """The checkpoint of a shell: the core's state and the state of each source's adapter, by
    the shell's key for that source (sources without an adapter have none)."""
    return {"detector": task.snapshot(),
            "adapters": {key: source.adapter.snapshot() for key, source in sources.items()
                         if source.adapter is not None}}


def restore(saved: Mapping[str, Any] | None, config: DetectorConfig | None = None,
            **options: Any) -> Detector:
    """The core of a checkpoint envelope (a fresh one for ``None``); ``options`` go to
    ``Detector``. Raises what ``Detector`` raises for a damaged state (``ValueError``,
    ``KeyError``, ``TypeError``...)."""
    return Detector(config, state=None if saved is None else saved["detector"], **options)


def saved_adapters(saved: Mapping[str, Any] | None) -> dict[str, dict]:
    """The adapters' states of a checkpoint envelope, by the shell's key for each source."""
    return dict(saved.get("adapters", {})) if saved is not None else {}
