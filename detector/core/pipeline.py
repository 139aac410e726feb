"""The detector: raw mail-flow and DNS resolver lines in, anomaly events out, no I/O.

``Detector.feed(stream, lines, source)`` takes a batch of raw lines (bytes or str) of one stream
from one input and returns the anomaly events that the batch made due, and the lines it rejected
with their reasons. Everything between is event-time driven (``clock``): deliveries wait until the
watermark has passed their time plus the join window, are joined to their lookups (``join``),
counted into steps (``windows``), and each closed step is judged against the baseline (``model``)
by the alert lifecycle (``alerts``). No wall clock is read, so the same input gives the same
events whatever the batching, in a replay as in the live worker. ``snapshot()`` returns the whole
state as JSON-able data and ``Detector(config, state=...)`` resumes from it.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from river import stats

from . import records as rec
from .alerts import AlertBook, Judgement
from .clock import Deduplicator, EventClock
from .config import DetectorConfig
from .join import DnsJoin
from .model import Baseline, score_of
from .otp import OtpRules
from .outcomes import ALL_INDEX, KEY_INDEX, KEYS, N_KEYS
from .windows import SlidingCounts, StepCounts, top_counted, top_values

STATE_VERSION = 2
EVIDENCE_FIELDS = ("sender_domains", "resolvers", "tenants", "status_codes")
SAMPLES_FIELD = 4
#: An open anomaly keeps at most this many distinct values per evidence field (and samples).
ALERT_EVIDENCE_VALUES = 100
MAIL, DNS = "mail", "dns"

# A delivery waiting for its join: (ts, seq, failed, message_id, sender_domain, tenant, server,
# status_code, lookups, dns_outcome). Plain tuples: cheap to heap and to checkpoint.
Pending = tuple


@dataclass
class FeedResult:
    """What one batch produced: anomaly events, and rejected lines as ``(index, reason)``."""

    events: list[dict] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)


class Detector:
    """The pure core. See the module docstring; the shells are ``detector.io`` and the worker."""

    def __init__(self, config: DetectorConfig | None = None, state: dict | None = None) -> None:
        self.config = config = config or DetectorConfig()
        model = config.model
        self.step_s = model.step_s
        self.steps_per_bucket = model.bucket_s // model.step_s
        self.rules = OtpRules(config.otp.sender_allowlist, config.otp.sender_patterns,
                              config.otp.subject_patterns)
        self.clock = EventClock(config.clock.allowed_lateness_s)
        self.dedup = Deduplicator(config.clock.dedup_horizon_s, config.clock.dedup_max_entries)
        self.join = DnsJoin(config.join.window_before_s, config.join.window_after_s,
                            config.join.max_buffered_dns, config.join.match_client)
        self.windows = SlidingCounts(self.steps_per_bucket, model.long_window_s // model.step_s)
        self.baseline = Baseline(N_KEYS, model.half_life_s, model.bucket_s,
                                 (model.prior_failures, model.prior_successes))
        # Expected OTP attempts per bucket, for the events' ``expected.attempts``.
        self.volume = stats.EWMean(fading_factor=1.0 - self.baseline.decay)
        self.volume_seen = False
        self.books = AlertBook(config.alerts, model.bucket_s)
        self.pending: list[Pending] = []
        self.seq = 0
        self.open_steps: dict[int, StepCounts] = {}
        self.next_step: int | None = None
        self.first_ts: float | None = None
        self.learned_attempts = 0
        self.bucket_max_score = np.zeros(N_KEYS)
        self.counters: Counter[str] = Counter()
        if state is not None:
            self._restore(state)

    # ------------------------------------------------------------------ input

    def feed(self, stream: str, lines: list, source: str | None = None,
             now: float | None = None) -> FeedResult:
        """Process one batch of raw lines of ``stream`` (``"mail"`` or ``"dns"``) from ``source``.

        ``now`` (epoch seconds), when the shell knows the wall clock, also rejects records more
        than ``max_future_skew_s`` ahead of it.
        """
        if stream not in (MAIL, DNS):
            raise ValueError(f"unknown stream {stream!r}: expected 'mail' or 'dns'")
        result = FeedResult()
        rejected = result.rejected
        counters = self.counters
        parse = rec.mail_from_object if stream == MAIL else rec.dns_from_object
        parsed = rec.parse_lines(lines, parse, rejected)
        counters[f"{stream}_records"] += len(lines)
        # The batch's times, gathered once for the future check, the first and the newest.
        times = [record.ts for _, record in parsed]
        if parsed:
            parsed, times = self._drop_future(parsed, times, rejected, now)
        watermark = self.clock.watermark
        if stream == MAIL:
            self._accept_mail(parsed, watermark, rejected)
        elif parsed and min(times) >= watermark:       # the usual batch: nothing late
            self.join.add_many([record for _, record in parsed])
        else:
            accepted = []
            for index, record in parsed:
                if record.ts < watermark:
                    rejected.append((index, "late"))
                else:
                    accepted.append(record)
            self.join.add_many(accepted)
        for _, reason in rejected:
            counters[f"rejected:{reason}"] += 1
        if parsed:
            newest = max(times)
            first = min(times)
            if self.first_ts is None or first < self.first_ts:
                self.first_ts = first
            self.clock.observe(source or stream, newest)
        rejected.sort()
        self._advance(self.clock.advance(), result.events)
        return result

    def add_source(self, source: str) -> None:
        """Declare an input before its first batch, so it holds the watermark back until then."""
        self.clock.add(source)

    def finish_source(self, source: str) -> list[dict]:
        """An input ended (or is idle): it stops holding the watermark back."""
        self.clock.finish(source)
        events: list[dict] = []
        self._advance(self.clock.advance(), events)
        return events

    def close(self) -> list[dict]:
        """End of input: join and judge everything seen; open anomalies stay open."""
        events: list[dict] = []
        if self.pending or self.open_steps:
            newest = max([p[0] for p in self.pending] + [i * self.step_s for i in self.open_steps])
            # Judge through the end of the step that holds the newest record.
            end = (math.floor(newest / self.step_s) + 1) * self.step_s
            self._advance(end + self.config.join.window_after_s, events)
            # What was judged is final: a record for those steps arriving later is late.
            self.clock.watermark = max(self.clock.watermark, end + self.config.join.window_after_s)
        return events

    def _drop_future(self, parsed: list, times: list[float], rejected: list,
                     now: float | None) -> tuple[list, list[float]]:
        """Reject timestamps far ahead of the rest of their batch (and of ``now`` when known).

        One host with a wrong clock must not move the watermark. In the batch's sorted times, a
        jump of more than ``max_future_skew_s`` followed by only a few records (at most 1 % of the
        batch) marks those few as a bad clock; a real gap in the traffic is followed by the rest
        of the traffic. A live shell also gives the wall clock, which settles single records.
        """
        skew = self.config.clock.max_future_skew_s
        stamps = np.array(times, dtype=float)
        limit = math.inf if now is None else now + skew
        if len(stamps) > 1:
            ordered = np.sort(stamps)
            tail_allowed = max(1, len(stamps) // 100)
            for gap in np.flatnonzero(np.diff(ordered) > skew):
                if len(stamps) - (gap + 1) <= tail_allowed:
                    limit = min(limit, float(ordered[gap]) + skew)
                    break
        if stamps.max() <= limit:
            return parsed, times
        kept = []
        for item in parsed:
            if item[1].ts > limit:
                rejected.append((item[0], "future_ts"))
            else:
                kept.append(item)
        return kept, [record.ts for _, record in kept]

    def _accept_mail(self, parsed: list, watermark: float, rejected: list) -> None:
        counters = self.counters
        seen = self.dedup.seen
        is_otp = self.rules.is_otp
        pending = self.pending
        not_final = rec.NOT_FINAL
        failure = rec.FINAL_FAILURE
        for index, mail in parsed:
            if mail.ts < watermark:
                rejected.append((index, "late"))
                continue
            if seen(mail.message_id, mail.status, mail.ts):
                counters["duplicates"] += 1
                continue
            if mail.status in not_final:
                counters["not_final"] += 1
                continue
            if not is_otp(mail.category, mail.sender, mail.subject):
                counters["not_otp"] += 1
                continue
            self.seq += 1
            heapq.heappush(pending, (
                mail.ts, self.seq, mail.status in failure, mail.message_id, mail.sender_domain,
                mail.tenant, mail.server, mail.status_code, mail.lookups, mail.dns_outcome))

    # ------------------------------------------------------------ event time

    def _advance(self, watermark: float, events: list[dict]) -> None:
        if watermark == -math.inf:
            return
        after = self.config.join.window_after_s
        self._join_until(watermark - after)
        self._close_steps_until(watermark - after, events)
        self.join.expire(watermark - after - self.config.join.window_before_s)
        self.dedup.expire(watermark)

    def _join_until(self, limit: float) -> None:
        pending, counters, step_s = self.pending, self.counters, self.step_s
        resolve = self.join.resolve_fields
        steps = self.open_steps
        while pending and pending[0][0] <= limit:
            (ts, _, failed, message_id, sender_domain, tenant, server, status_code, lookups,
             dns_outcome) = heapq.heappop(pending)
            outcome, resolver = resolve(ts, server, sender_domain, lookups, dns_outcome)
            index = int(ts // step_s)
            step = steps.get(index)
            if step is None:
                step = steps[index] = StepCounts()
            step.attempts += 1
            counters["otp_attempts"] += 1
            counters[f"otp_outcome:{outcome}"] += 1
            if failed:
                counters["otp_failures"] += 1
                failure = (sender_domain, resolver, tenant, status_code, message_id)
                step.add_failure(KEY_INDEX[outcome], failure)
                step.add_failure(ALL_INDEX, failure)

    def _close_steps_until(self, limit: float, events: list[dict]) -> None:
        """Close every step whose end is at or before ``limit``."""
        step_s = self.step_s
        last = math.floor(limit / step_s) - 1          # newest closable step index
        if self.next_step is None:
            if not self.open_steps:
                return
            self.next_step = min(self.open_steps)
        while self.next_step <= last:
            if self.windows.is_empty() and not self.books.open:
                target = min(self.open_steps, default=last + 1)
                target = min(target, last + 1)
                if target - self.next_step > self.windows.long_steps:
                    self._skip_to(target)
                    continue
            self._close_step(self.next_step, events)
            self.next_step += 1

    def _skip_to(self, target: int) -> None:
        """Jump over a gap with no traffic: the baseline forgets as it would have, nothing else."""
        per_bucket = self.steps_per_bucket
        buckets = target // per_bucket - self.next_step // per_bucket
        self.baseline.fade(buckets)
        for _ in range(min(buckets, 10_000)):
            self.volume.update(0.0)
        self.windows.pushed += target - self.next_step
        self.windows.clear()
        self.bucket_max_score[:] = 0.0
        self.next_step = target

    def _close_step(self, index: int, events: list[dict]) -> None:
        step = self.open_steps.pop(index, None) or StepCounts()
        windows = self.windows
        windows.push(step)
        end = (index + 1) * self.step_s
        model, alerts = self.config.model, self.config.alerts
        a, b = self.baseline.params()
        expected = a / (a + b)
        short_n, long_n = windows.short_attempts, windows.long_attempts
        short_x, long_x = windows.short_failures, windows.long_failures
        candidates = set(self.books.open)
        short_gate = self._gate(short_n, short_x, expected, alerts.min_lift)
        long_gate = self._gate(long_n, long_x, expected, alerts.long_min_lift)
        candidates.update(KEYS[k] for k in np.flatnonzero(short_gate | long_gate))
        alertable = (self.first_ts is not None and end - self.first_ts >= model.warmup_s
                     and self.learned_attempts >= model.warmup_attempts)
        # Excess failures of open outcome keys in each window, to judge ALL against.
        explained_short = explained_long = 0.0
        for key in sorted(candidates, key=KEY_INDEX.__getitem__):
            k = KEY_INDEX[key]
            short = self._judge(k, short_n, int(short_x[k]), a, b, bool(short_gate[k]),
                                end - model.bucket_s, end, "short")
            long = self._judge(k, long_n, int(long_x[k]), a, b, bool(long_gate[k]),
                               end - model.long_window_s, end, "long")
            self.bucket_max_score[k] = max(self.bucket_max_score[k], short.score, long.score)
            alert = self.books.open.get(key)
            if alert is not None:
                _merge_evidence(alert.evidence, step.evidence.get(k, ()))
            may_open = alertable
            if k == ALL_INDEX and alert is None:
                # ALL is for failures spread over outcomes: it stays quiet when open outcome
                # keys already explain half of its excess in either window (one incident, one
                # page).
                may_open = alertable and not (
                    explained_short >= 0.5 * (short_x[k] - short_n * expected[k])
                    or explained_long >= 0.5 * (long_x[k] - long_n * expected[k]))
            decision = self.books.decide(key, end, short, long, step.attempts,
                                         step.failures[k], may_open)
            if decision is not None:
                if decision[0] == "open":
                    _merge_evidence(decision[1].evidence,
                                    windows.evidence(k, self._steps_of(decision[2])))
                events.append(self._event(*decision, end))
            if k != ALL_INDEX and key in self.books.open:
                explained_short += max(0.0, short_x[k] - short_n * expected[k])
                explained_long += max(0.0, long_x[k] - long_n * expected[k])
        if (index + 1) % self.steps_per_bucket == 0:
            self._learn_bucket(end)

    def _steps_of(self, judgement: Judgement) -> int:
        return int(round((judgement.end - judgement.start) / self.step_s))

    def _gate(self, attempts: int, failures: np.ndarray, expected: np.ndarray,
              min_lift: float) -> np.ndarray:
        """Cheap, vectorised preconditions of an alert (see ``alerts`` for their meaning)."""
        if attempts <= 0:
            return np.zeros(N_KEYS, dtype=bool)
        alerts = self.config.alerts
        rate = failures / attempts
        return ((failures >= alerts.min_failures) & (rate >= expected * min_lift)
                & (rate - expected >= alerts.min_excess_rate))

    def _judge(self, k: int, attempts: int, failures: int, a: np.ndarray, b: np.ndarray,
               gate: bool, start: float, end: float, rule: str) -> Judgement:
        score = score_of(failures, attempts, float(a[k]), float(b[k])) if failures else 0.0
        expected = float(a[k] / (a[k] + b[k]))
        fires = gate and score >= self.config.alerts.open_score
        return Judgement(attempts, failures, expected, score, fires, start, end, rule)

    def _learn_bucket(self, end: float) -> None:
        model = self.config.model
        windows = self.windows
        attempts = windows.short_attempts
        learn = self.bucket_max_score < model.learn_max_score
        for key, alert in self.books.open.items():
            if end - alert.opened_at < model.max_freeze_s:
                learn[KEY_INDEX[key]] = False
        self.baseline.learn(attempts, windows.short_failures, learn)
        self.learned_attempts += attempts
        self.volume.update(float(attempts))
        self.volume_seen = True
        self.bucket_max_score[:] = 0.0

    # ---------------------------------------------------------------- output

    def _event(self, state: str, alert, judgement: Judgement, end: float) -> dict:
        alerts, model = self.config.alerts, self.config.model
        self.counters[f"anomalies:{state}"] += 1
        k = KEY_INDEX[alert.key]
        top = alerts.evidence_top
        if state == "resolved":
            # The whole anomaly: its totals and the evidence gathered while it was open.
            window_start, window_end = alert.since, alert.last_elevated_end
            attempts, failures = alert.attempts, alert.failures
            evidence = {name: top_counted(alert.evidence.get(field, {}), top)
                        for field, name in enumerate(EVIDENCE_FIELDS)}
        else:
            window_start, window_end = judgement.start, judgement.end
            attempts, failures = judgement.attempts, judgement.failures
            found = self.windows.evidence(k, self._steps_of(judgement))
            evidence = {name: top_values(found, field, top)
                        for field, name in enumerate(EVIDENCE_FIELDS)}
        samples = alert.evidence.get(SAMPLES_FIELD, {})
        evidence["sample_message_ids"] = sorted(samples)[: alerts.evidence_samples]
        rate = failures / attempts if attempts else 0.0
        expected_rate = judgement.expected_rate
        window_buckets = (window_end - window_start) / model.bucket_s
        expected_attempts = self.volume.get() * window_buckets if self.volume_seen else 0.0
        reason = (
            f"{alert.key} OTP failures {failures}/{attempts} ({rate:.1%}) vs expected "
            f"{expected_rate:.2%} over {int(window_end - window_start)} s"
            + (f"; p = 1e-{judgement.score:.1f}" if state != "resolved" else "; back to normal")
        )
        return {
            "id": alert.id,
            "state": state,
            "key": {"outcome": alert.key},
            "detected_at": rec.format_ts(end + self.config.join.window_after_s),
            "since": rec.format_ts(alert.since),
            "window": {"start": rec.format_ts(window_start), "end": rec.format_ts(window_end)},
            "observed": {"attempts": attempts, "failures": failures, "failure_rate": round(rate, 6)},
            "expected": {"attempts": round(expected_attempts, 2),
                         "failures": round(attempts * expected_rate, 3),
                         "failure_rate": round(expected_rate, 6)},
            "score": round(judgement.score, 2),
            "severity": alert.severity if state != "open" else self.books.severity(judgement),
            "rule": judgement.rule if state != "resolved" else alert.rule,
            "reason": reason,
            "evidence": evidence,
        }

    # ----------------------------------------------------------------- state

    @property
    def watermark(self) -> float:
        return self.clock.watermark

    def open_anomalies(self) -> int:
        return len(self.books.open)

    def stats(self) -> dict:
        """Counters plus gauges (buffer sizes), for summaries and metrics."""
        out = dict(self.counters)
        out["pending_deliveries"] = len(self.pending)
        out["dns_buffered"] = self.join.size
        out["dns_evicted"] = self.join.evicted
        out["dedup_entries"] = len(self.dedup)
        out["dedup_evicted"] = self.dedup.evicted
        out["open_anomalies"] = len(self.books.open)
        return out

    def snapshot(self) -> dict:
        """The whole state as JSON-able data (no pickle: a checkpoint is input, too)."""
        return {
            "version": STATE_VERSION,
            "config": self.config.to_mapping(),
            "clock": self.clock.snapshot(),
            "dedup": self.dedup.snapshot(),
            "join": self.join.snapshot(),
            "pending": [[p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7],
                         None if p[8] is None else [list(lk) for lk in p[8]], p[9]]
                        for p in sorted(self.pending)],
            "seq": self.seq,
            "open_steps": {str(i): s.to_plain() for i, s in sorted(self.open_steps.items())},
            "next_step": self.next_step,
            "windows": self.windows.snapshot(),
            "baseline": self.baseline.snapshot(),
            "volume": self.volume.get() if self.volume_seen else None,
            "first_ts": self.first_ts,
            "learned_attempts": self.learned_attempts,
            "bucket_max_score": self.bucket_max_score.tolist(),
            "alerts": self.books.snapshot(),
            "counters": dict(self.counters),
            "evicted": {"dns": self.join.evicted, "dedup": self.dedup.evicted},
        }

    def _restore(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"state version {state.get('version')!r} is not {STATE_VERSION}")
        self.clock.restore(state["clock"])
        self.dedup.restore(state["dedup"])
        self.join.restore(state["join"])
        self.pending = [(p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7],
                         None if p[8] is None else [tuple(lk) for lk in p[8]], p[9])
                        for p in state["pending"]]
        heapq.heapify(self.pending)
        self.seq = int(state["seq"])
        self.open_steps = {int(i): StepCounts.from_plain(row)
                           for i, row in state["open_steps"].items()}
        self.next_step = state["next_step"]
        self.windows.restore(state["windows"])
        self.baseline.restore(state["baseline"])
        if state["volume"] is not None:
            self.volume.update(float(state["volume"]))   # an EWMean's first update is its value
            self.volume_seen = True
        self.first_ts = state["first_ts"]
        self.learned_attempts = int(state["learned_attempts"])
        self.bucket_max_score = np.asarray(state["bucket_max_score"], dtype=float)
        self.books.restore(state["alerts"])
        self.counters = Counter(state["counters"])
        self.join.evicted = int(state["evicted"]["dns"])
        self.dedup.evicted = int(state["evicted"]["dedup"])


def _merge_evidence(evidence: dict, failures) -> None:
    """Fold failure tuples into an anomaly's per-field counts, bounded per field.

    Message ids are kept as the first ``ALERT_EVIDENCE_VALUES`` seen (samples, not counts).
    """
    for failure in failures:
        for field_index, value in enumerate(failure):
            if not value:
                continue
            counts = evidence.get(field_index)
            if counts is None:
                counts = evidence[field_index] = {}
            if value in counts:
                counts[value] += 1
            elif len(counts) < ALERT_EVIDENCE_VALUES:
                counts[value] = 1

