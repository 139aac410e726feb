"""The alert lifecycle: when an anomaly opens, how often it is updated, when it is resolved.

A key opens when a window *fires*: at least ``min_failures`` failures, a failure rate at least
``min_lift`` times the baseline and ``min_excess_rate`` above it, and a score of at least
``open_score``. While open, the key is *elevated* as long as its short-window score stays at or
above ``resolve_score`` (or its long window still fires); it resolves only after it has not been
elevated for ``resolve_hold_s``. An anomaly is judged on the window that opened it. The gap between the two thresholds and the hold time is the
hysteresis that keeps a noisy incident from flapping (the same scheme as Prometheus' ``for:`` /
``keep_firing_for:``). An open anomaly emits at most one ``update`` per bucket, and only when its
severity changes or its failure rate moved by ``update_change`` since the last event. Ids come
from the key and the onset, so a replay of the same input gives the same ids.

A key may also open on the sequential test (rule ``cusum``, ``sequential``), which has no window
of its own to judge the end by, and a faint rise it found may be significant in no window at
all. Such an anomaly stays elevated until the evidence that its rate is back to the baseline
outweighs the evidence that it is still at the rate that opened it by ``10 ** resolve_score``
to one: a CUSUM of the reverse change (Page 1954 again), kept by the pipeline and passed as
``still_elevated``. Its ``update`` events report its recent window. Keys are strings: an outcome (``SERVFAIL``, ``ALL``) or a slice,
``OUTCOME|dimension=value`` (``slice_key``), shown to consumers as the event's ``key`` object.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field

from .config import AlertConfig
from .events import Rule, Severity, State


@dataclass(slots=True)
class Judgement:
    """One window's verdict for one key."""

    attempts: int
    failures: int
    expected_rate: float
    score: float
    fires: bool
    start: float
    end: float
    rule: Rule

    @property
    def rate(self) -> float:
        return self.failures / self.attempts if self.attempts else 0.0


@dataclass(slots=True)
class Alert:
    """An open anomaly."""

    id: str
    key: str
    since: float               # onset: start of the window that opened it
    opened_at: float           # end of the step at which it opened
    rule: Rule
    severity: Severity
    last_rate: float
    last_emit_end: float
    last_elevated_end: float
    attempts: int = 0          # totals over the steps since it opened
    failures: int = 0
    evidence: dict = field(default_factory=dict)   # field index -> {value: failures}
    # An anomaly opened by the sequential test: [attempts, failures] of its newest
    # ``recent_steps`` steps (what its updates report), the failure rate that opened it, and
    # the evidence that the rate is back to the baseline (a reverse CUSUM, nats).
    recent: list = field(default_factory=list)
    recent_steps: int = 0
    incident_rate: float = 0.0
    back: float = 0.0
    # One incident, one page: an anomaly another open one explains is not paged; its id is in
    # the paged one's ``related`` and ``parent`` names the paged one.
    paged: bool = True
    parent: str | None = None
    related: list = field(default_factory=list)


#: What ``AlertBook.decide`` returns when an event is due: the new state, the anomaly, and the
#: judgement that decided it.
Decision = tuple[State, Alert, Judgement]


def slice_key(outcome: str, dimension: str, value: str) -> str:
    """The key string of a slice.

    >>> slice_key("SERVFAIL", "sender_domain", "auth.bank1.example")
    'SERVFAIL|sender_domain=auth.bank1.example'
    """
    return f"{outcome}|{dimension}={value}"


def key_fields(key: str) -> dict[str, str]:
    """A key string as the event's ``key`` object (a value may hold any character).

    >>> key_fields("TIMEOUT|resolver=res=b|x")
    {'outcome': 'TIMEOUT', 'resolver': 'res=b|x'}
    """
    outcome, _, rest = key.partition("|")
    if not rest:
        return {"outcome": outcome}
    dimension, _, value = rest.partition("=")
    return {"outcome": outcome, dimension: value}


def anomaly_id(key: str, since: float) -> str:
    """Stable id from the key and the onset (event time, whole milliseconds).

    >>> anomaly_id("SERVFAIL", 1795774500.0)
    'servfail-73dabdff62c7572c'
    >>> anomaly_id("SERVFAIL|sender_domain=auth.bank1.example", 1795774500.0)[:16]
    'servfail-sender-'
    """
    digest = hashlib.sha1(f"{key}|{round(since * 1000)}".encode()).hexdigest()[:16]
    outcome, _, rest = key.partition("|")
    if rest:
        return f"{outcome.lower()}-{rest.partition('=')[0].split('_')[0]}-{digest}"
    return f"{key.lower()}-{digest}"


class AlertBook:
    """Open anomalies by key and the transitions of each closed step.

    ``decide`` is called once per closed step for every key that fired or is open, in key order,
    and returns ``(state, alert, judgement)`` when an event is due, else ``None``.
    """

    def __init__(self, config: AlertConfig, bucket_s: float) -> None:
        self.config = config
        self.bucket_s = bucket_s
        self.open: dict[str, Alert] = {}
        # Per key, the end of its last resolved anomaly: the long window may open the key again
        # only on evidence that came after it, not on the tail of the incident just resolved.
        self.resolved_until: dict[str, float] = {}

    def severity(self, judgement: Judgement) -> Severity:
        excess = judgement.rate - judgement.expected_rate
        return "critical" if excess >= self.config.critical_excess_rate else "warning"

    def decide(self, key: str, end: float, step_attempts: int, step_failures: int,
               alertable: bool, short: Judgement | None = None, long: Judgement | None = None,
               sequential: Judgement | None = None, recent: Judgement | None = None,
               still_elevated: bool = False) -> Decision | None:
        """The transition of ``key`` at the step ending at ``end``, if an event is due.

        ``short`` and ``long`` are the windows' verdicts (outcome-wide keys), ``sequential`` the
        sequential test's (its window is the CUSUM's run), ``recent`` the exponentially weighted
        last minutes of an open anomaly.
        """
        config = self.config
        alert = self.open.get(key)
        if alert is None:
            if not alertable:
                return None
            floor = self._evidence_floor(key)
            # The long window opens only while the newest minute is still above the baseline: it
            # must not re-open an incident that has just ended from the evidence it still holds.
            long_opens = (long is not None and long.fires and short is not None
                          and _still_high(short, config.long_min_lift) and long.start >= floor)
            sequential_opens = (sequential is not None and sequential.fires
                                and sequential.start >= floor)
            if short is not None and short.fires:
                opening = short
            elif long_opens and long is not None:
                opening = long
            elif sequential_opens and sequential is not None:
                opening = sequential
            else:
                return None
            alert = Alert(id=anomaly_id(key, opening.start), key=key, since=opening.start,
                          opened_at=end, rule=opening.rule, severity=self.severity(opening),
                          last_rate=opening.rate, last_emit_end=end, last_elevated_end=end,
                          attempts=opening.attempts, failures=opening.failures)
            self.open[key] = alert
            return "open", alert, opening

        alert.attempts += step_attempts
        alert.failures += step_failures
        # An anomaly is judged on the window that opened it: the long window lags an incident's
        # end by its whole length, which must not delay resolving a short, sharp incident.
        # (The pipeline passes the windows an outcome-wide key has, and ``recent`` for a slice.)
        if alert.rule == "short":
            assert short is not None
            judgement = short
            elevated = judgement.score >= config.resolve_score
        elif alert.rule == "long":
            assert long is not None and short is not None
            judgement = long
            elevated = judgement.score >= config.resolve_score and _still_high(short, 1.0)
        else:
            assert recent is not None
            judgement = recent
            elevated = still_elevated
        if not elevated:
            if end - alert.last_elevated_end >= config.resolve_hold_s:
                self.close(key)
                return "resolved", alert, judgement
            return None
        alert.last_elevated_end = end
        severity = self.severity(judgement)
        rate, last = judgement.rate, alert.last_rate
        moved = (rate >= last * config.update_change or last >= rate * config.update_change)
        if end - alert.last_emit_end >= self.bucket_s and (severity != alert.severity or moved):
            alert.severity, alert.last_rate, alert.last_emit_end = severity, rate, end
            return "update", alert, judgement
        return None

    def close(self, key: str) -> Alert:
        """Forget an open anomaly (resolved, or dropped with the page that explained it)."""
        alert = self.open.pop(key)
        self.resolved_until[key] = alert.last_elevated_end
        return alert

    def _evidence_floor(self, key: str) -> float:
        """Event time before which the long window holds a resolved anomaly's failures: those of
        the key itself, and for ``ALL`` those of every key (they are all in ALL's counts)."""
        if key == "ALL":
            return max(self.resolved_until.values(), default=-math.inf)
        return self.resolved_until.get(key, -math.inf)

    def snapshot(self) -> dict:
        rows = []
        for alert in self.open.values():
            row = asdict(alert)
            row["evidence"] = {str(f): dict(v) for f, v in alert.evidence.items()}
            rows.append(row)
        return {"open": rows, "resolved_until": dict(self.resolved_until)}

    def restore(self, state: dict) -> None:
        self.open = {}
        self.resolved_until = {k: float(v) for k, v in state["resolved_until"].items()}
        for row in state["open"]:
            row = dict(row)
            row["evidence"] = {int(f): dict(v) for f, v in row["evidence"].items()}
            row["related"] = list(row["related"])
            row["recent"] = [list(pair) for pair in row["recent"]]
            self.open[row["key"]] = Alert(**row)


def _still_high(short: Judgement, lift: float) -> bool:
    """The newest minute is above the baseline by ``lift`` and not by chance alone (p < 0.1)."""
    return short.score >= 1.0 and short.rate >= short.expected_rate * lift
