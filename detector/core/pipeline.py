"""The detector: raw mail-flow and DNS resolver lines in, anomaly events out, no I/O.

``Detector.feed(stream, lines, source)`` takes a batch of raw lines (bytes or str) of one stream
from one input and returns the anomaly events that the batch made due, and the lines it rejected
with their reasons. Everything between is event-time driven (``clock``): deliveries wait until the
watermark has passed their time plus the join window, are joined to their lookups (``join``),
counted into steps (``windows``), and each closed step is judged against the baseline (``model``)
by the alert lifecycle (``alerts``). No wall clock is read, so the same input gives the same
events whatever the batching, in a replay as in the live worker. ``snapshot()`` returns the whole
state as JSON-able data and ``Detector(config, state=...)`` resumes from it.

The work is done by two parts that also run apart when the detector is scaled out: a join task
(``core.task.JoinTask``: per record, up to each step's counts) and the judge
(``core.judge.Judge``: per step, the model and the alert lifecycle). A ``Detector`` is one task
over all its inputs and the judge, in one process.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .config import DetectorConfig
from .events import AnomalyEvent
from .judge import ALERT_EVIDENCE_VALUES, Judge, series_row
from .task import DNS, MAIL, Carry, JoinTask, PendingDelivery

#: The layout of ``Detector.snapshot()``: 4 holds the task and the judge apart.
STATE_VERSION = 4
#: The task's name in the judge of a ``Detector``.
TASK = "all"


@dataclass
class FeedResult:
    """What one batch produced: anomaly events, and rejected lines as ``(index, reason)``."""

    events: list[AnomalyEvent] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    #: With ``feed(carry=True)``: the batch's tail left for the source's next batch, if any.
    carry: Carry | None = None


class Detector:
    """The pure core: raw lines in, anomaly events out (see the module docstring). The shells
    are ``detector replay`` (``detector.replay``) and the Kafka worker (``detector.worker``).

    Parameters
    ----------
    config
        The model, join, alert and slice parameters (``DetectorConfig()``: the defaults the
        README's "Model" section justifies).
    state
        A ``snapshot()`` to resume from (JSON data; a checkpoint is input, so never pickle).
    series
        Keep one ``series_row`` per closed step in ``self.series`` for a shell to drain (the
        HTML report's rates).

    Examples
    --------
    One OTP sender, one mail a second, each depending on an SPF lookup the resolver logs a
    moment before; after 40 healthy minutes (the model learns for 30) the lookups SERVFAIL for
    two minutes:

    >>> import orjson
    >>> from detector.core import Detector
    >>> def one_second(t, rcode):
    ...     dns = {"ts": t, "qname": "bank.example", "qtype": "TXT", "rcode": rcode,
    ...            "resolver": "res-a", "client": "mx1"}
    ...     mail = {"ts": t + 0.2, "message_id": f"<{t}@mx1>", "sender": "verify@bank.example",
    ...             "subject": "Your verification code", "server": "mx1",
    ...             "status": "delivered" if rcode == "NOERROR" else "deferred",
    ...             "dns_lookups": [{"qname": "bank.example", "qtype": "TXT"}]}
    ...     return orjson.dumps(dns), orjson.dumps(mail)
    >>> detector, events = Detector(), []
    >>> for minute in range(52):
    ...     rcode = "SERVFAIL" if 40 <= minute < 42 else "NOERROR"
    ...     lines = [one_second(1795737600 + 60 * minute + s, rcode) for s in range(60)]
    ...     events += detector.feed("dns", [d for d, _ in lines], source="dns").events
    ...     events += detector.feed("mail", [m for _, m in lines], source="mail").events
    >>> events += detector.close()
    >>> for event in events:
    ...     print(event.state, event.key["outcome"], event.detected_at, event.observed.failures)
    open SERVFAIL 2026-11-27T00:40:15Z 10
    update SERVFAIL 2026-11-27T00:41:15Z 60
    update SERVFAIL 2026-11-27T00:42:25Z 40
    resolved SERVFAIL 2026-11-27T00:47:55Z 120

    The first ten failures (ten seconds of the outage, plus the join's five-second wait) open
    it; the sender's own slice is the same incident, so it is not paged separately. Each event
    is the contract's JSON through ``encode_event``:

    >>> from detector.core import encode_event
    >>> encode_event(events[0])[:50]
    b'{"id":"servfail-a3744e26b4b0c660","state":"open","'
    """

    def __init__(self, config: DetectorConfig | None = None, state: dict | None = None,
                 series: bool = False) -> None:
        self.config = config = config or DetectorConfig()
        if state is not None and state.get("version") != STATE_VERSION:
            raise ValueError(f"state version {state.get('version')!r} is not {STATE_VERSION}")
        self.task = JoinTask(config, state=state and state["task"])
        self.judge = Judge(config, state=state and state["judge"], series=series)
        self.judge.add_task(TASK)

    # ------------------------------------------------------------------ input

    def feed(self, stream: str, lines: list, source: str | None = None,
             now: float | None = None, *, carry: bool = False,
             limit: float | None = None) -> FeedResult:
        """Process one batch of raw lines of ``stream`` (``"mail"`` or ``"dns"``) from ``source``.

        ``now`` (epoch seconds), when the shell knows the wall clock, also rejects records more
        than ``max_future_skew_s`` ahead of it. With ``carry``, a tail the batch alone cannot
        settle may be left for the source's next batch (``FeedResult.carry``; see
        ``JoinTask.feed``, which also says what ``limit`` is).
        """
        carried: list[Carry] | None = [] if carry else None
        rejected = self.task.feed(stream, lines, source, now, carry=carried, limit=limit)
        return FeedResult(self._judge(), rejected, carried[0] if carried else None)

    def add_source(self, source: str) -> None:
        """Declare an input before its first batch, so it holds the watermark back until then."""
        self.task.add_source(source)

    def finish_source(self, source: str) -> list[AnomalyEvent]:
        """An input ended (or is idle): it stops holding the watermark back."""
        self.task.finish_source(source)
        return self._judge()

    def close(self) -> list[AnomalyEvent]:
        """End of input: join and judge everything seen; open anomalies stay open."""
        self.judge.offer(TASK, self.task.close())
        return self.judge.close()

    def _judge(self) -> list[AnomalyEvent]:
        self.judge.offer(TASK, self.task.advance())
        return self.judge.advance()

    # ----------------------------------------------------------------- state

    @property
    def clock(self):
        """The event clock of the inputs (per input high-water marks, the watermark)."""
        return self.task.clock

    @property
    def watermark(self) -> float:
        return self.task.clock.watermark

    @property
    def series(self) -> list[dict] | None:
        """With ``series=True``: one ``series_row`` per closed step, for a shell to drain."""
        return self.judge.series

    @series.setter
    def series(self, rows: list[dict] | None) -> None:
        self.judge.series = rows

    @property
    def counters(self) -> Counter[str]:
        """Every counter of the task and the judge (a copy)."""
        return self.task.counters + self.judge.counters

    @property
    def first_ts(self) -> float | None:
        return self.task.first_ts

    def open_anomalies(self) -> int:
        return self.judge.open_anomalies()

    def stats(self) -> dict:
        """Counters plus gauges (buffer sizes), for summaries and metrics."""
        return {**self.task.stats(), **self.judge.stats()}

    def snapshot(self) -> dict:
        """The whole state as JSON-able data (no pickle: a checkpoint is input, too)."""
        return {"version": STATE_VERSION, "config": self.config.to_mapping(),
                "task": self.task.snapshot(), "judge": self.judge.snapshot()}


__all__ = ["ALERT_EVIDENCE_VALUES", "Carry", "DNS", "MAIL", "STATE_VERSION", "Detector", "FeedResult",
           "PendingDelivery", "series_row"]
