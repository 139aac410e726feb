"""The join task: raw lines of some inputs in, the counts of each closed step out.

A *task* does what is per record: decode and validate, reject late and far-future records,
de-duplicate, keep the OTP deliveries, join each to the DNS answers it depended on (``join``) and
count it into its step (``windows.StepCounts``), with evidence. It owns the event clock of its
inputs: when its watermark passes a step's end plus the join window, no record can change that
step any more, and the step is *closed*: ``advance()`` hands it over. The judge
(``core.judge``) merges the closed steps of every task and judges them; it never sees a record.

One process replaying files runs one task over every input (``Detector``). Scaled out over
Kafka, each pair of co-partitioned input partitions (mail *p*, DNS *p*) is a task of its own, on
whichever join worker owns it, and its closed steps travel to the judge as partial counts. A
task's counts do not depend on any judge state, so the same records give the same partials
wherever the task runs, however often it is restored and replayed (the judge drops partials it
already has). ``snapshot()`` and ``JoinTask(config, state=...)`` carry a task to another member.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, NamedTuple

import numpy as np
from msgspec import Struct

from . import records as rec
from .clock import Deduplicator, EventClock
from .config import DetectorConfig
from .join import PREFER_HEALTHY, DnsJoin, prefer_of
from .otp import OtpRules
from .outcomes import ALL_INDEX, KEY_INDEX
from .windows import StepCounts

MAIL, DNS = "mail", "dns"
class PendingDelivery(Struct, gc=False):
    """An OTP delivery waiting for the watermark to pass its time plus the join window.

    ``seq`` numbers deliveries in arrival order: the pending list is kept sorted by ``(ts,
    seq)``, the order they are joined in. A msgspec Struct: built in C (about a fifth of the
    time of a NamedTuple's constructor, measured), never tracked by the garbage collector.
    """

    ts: float
    seq: int
    failed: bool
    message_id: str
    sender_domain: str | None
    tenant: str | None
    server: str | None
    status_code: str | None
    lookups: list[tuple[str, str | None]] | None     # (qname, qtype); None: not logged
    dns_outcome: str | None
    prefer: int                                      # join.PREFER_*


_delivery_ts = _record_ts = attrgetter("ts")


class Carry(NamedTuple):
    """The tail of a batch that ``JoinTask.feed`` left for the source's next batch to settle:
    its last ``lines`` lines, and the time after which they are ``future_ts`` if none comes."""

    lines: int
    limit: float




@dataclass
class Closed:
    """What a task hands to the judge after a batch: the steps it closed (``{index: counts}``),
    the newest step index it has passed (every step up to ``through`` is closed here; ``None``
    before the watermark has moved), and the earliest event time it has seen."""

    steps: dict[int, StepCounts] = field(default_factory=dict)
    through: int | None = None
    first_ts: float | None = None

    def to_plain(self) -> dict:
        """As JSON-able data: what a join worker publishes for the judge."""
        return {"through": self.through, "first_ts": self.first_ts,
                "steps": {str(i): counts.to_plain() for i, counts in self.steps.items()}}

    @classmethod
    def from_plain(cls, data: dict) -> "Closed":
        """From ``to_plain``'s data (input from another process: checked by its use)."""
        through, first_ts = data["through"], data["first_ts"]
        return cls({int(i): StepCounts.from_plain(row) for i, row in data["steps"].items()},
                   None if through is None else int(through),
                   None if first_ts is None else float(first_ts))


class JoinTask:
    """The per-record half of the detector over some inputs (see the module docstring).

    Parameters
    ----------
    config
        The detector's parameters; a task reads the clock, join, OTP and model step settings.
    state
        A ``snapshot()`` to resume from (JSON data).
    """

    def __init__(self, config: DetectorConfig | None = None, state: dict | None = None) -> None:
        self.config = config = config or DetectorConfig()
        self.step_s = config.model.step_s
        self.rules = OtpRules(config.otp.sender_allowlist, config.otp.sender_patterns,
                              config.otp.subject_patterns)
        self.clock = EventClock(config.clock.allowed_lateness_s)
        self.dedup = Deduplicator(config.clock.dedup_horizon_s, config.clock.dedup_max_entries)
        self.join = DnsJoin(config.join.window_before_s, config.join.window_after_s,
                            config.join.max_buffered_dns, config.join.match_client)
        #: Sorted by (ts, seq): a stable sort by ``ts`` keeps arrival order among equal times.
        self.pending: list[PendingDelivery] = []
        self.seq = 0
        self.open_steps: dict[int, StepCounts] = {}
        #: The newest step index handed over (closed); None before the first.
        self.through: int | None = None
        self.first_ts: float | None = None
        self.counters: Counter[str] = Counter()
        if state is not None:
            self._restore(state)

    # ------------------------------------------------------------------ input

    def feed(self, stream: str, lines: list, source: str | None = None,
             now: float | None = None, *, carry: list[Carry] | None = None,
             limit: float | None = None) -> list[tuple[int, str]]:
        """Decode, validate and queue one batch of raw lines of ``stream`` (``"mail"`` or
        ``"dns"``) from ``source``; the rejected lines as ``(index, reason)``, sorted.

        ``now`` (epoch seconds), when the shell knows the wall clock, also rejects records more
        than ``max_future_skew_s`` ahead of it; ``limit`` rejects records after it. Call
        ``advance()`` after to join what became due.

        With ``carry`` (a list), the batch may end in lines this call leaves alone: when its
        last records jump far ahead of the rest (``_drop_future``), nothing in the batch tells a
        quiet gap in the traffic from a host with a wrong clock, but the next batch of the same
        source does. Those lines, from the first such record to the end, are not decoded into
        the state nor counted, and a ``Carry`` saying how many and the bound they broke is
        appended to ``carry``: the shell offers them again at the start of the source's next
        batch, or alone with ``limit=carry.limit`` (so judged as without ``carry``) when the
        source has no more.
        """
        if stream not in (MAIL, DNS):
            raise ValueError(f"unknown stream {stream!r}: expected 'mail' or 'dns'")
        rejected: list[tuple[int, str]] = []
        counters = self.counters
        decode = rec.decode_mail if stream == MAIL else rec.decode_dns
        # The accepted records, and their indexes in ``lines`` (None: every line, in order).
        # (Mail records or DNS answers: both have a float ``ts`` once decoded.)
        decoded: tuple[list[Any], list[int] | None] = decode(lines, rejected)
        records, kept = decoded
        # The batch's times, gathered once (in C) for the future check, the first and the newest.
        stamps = np.fromiter(map(_record_ts, records), dtype=float, count=len(records))
        judged = len(lines)
        if records:
            records, kept, stamps, judged, carried = self._drop_future(
                records, kept, stamps, rejected, now, limit, carry is not None, judged)
            if carried is not None and carry is not None:
                carry.append(carried)
                rejected = [item for item in rejected if item[0] < judged]
        counters[f"{stream}_records"] += judged
        watermark = self.clock.watermark
        first = float(stamps.min()) if records else math.inf
        if records and first >= watermark:            # the usual batch: nothing late
            if stream == MAIL:
                self._accept_mail(records)
            else:
                self.join.add_many(records)
        elif records:
            on_time = []
            for index, record in zip(range(len(records)) if kept is None else kept, records):
                if record.ts < watermark:
                    rejected.append((index, "late"))
                else:
                    on_time.append(record)
            if stream == MAIL:
                self._accept_mail(on_time)
            else:
                self.join.add_many(on_time)
        for _, reason in rejected:
            counters[f"rejected:{reason}"] += 1
        if records:
            newest = float(stamps.max())
            if self.first_ts is None or first < self.first_ts:
                self.first_ts = first
            self.clock.observe(source or stream, newest)
        rejected.sort()
        return rejected

    def add_source(self, source: str) -> None:
        """Declare an input before its first batch, so it holds the watermark back until then."""
        self.clock.add(source)

    def finish_source(self, source: str) -> None:
        """An input ended (or is idle): it stops holding the watermark back."""
        self.clock.finish(source)

    def idle(self) -> bool:
        """Every input of the task has ended or is idle (and there was one): the task no longer
        holds the judge back."""
        return bool(self.clock.high) and self.clock.inactive >= self.clock.high.keys()

    def advance(self) -> Closed:
        """Move the watermark to what the inputs allow; join what became due and hand over the
        steps it closed."""
        watermark = self.clock.advance()
        if watermark != -math.inf:
            self._advance_to(watermark)
        return Closed(self._take_closed(), self.through, self.first_ts)

    def close(self) -> Closed:
        """End of input: join everything seen and hand over every step, through the one that
        holds the newest record; a record for those steps arriving later is late."""
        if self.pending or self.open_steps:
            newest = max([p.ts for p in self.pending] + [i * self.step_s for i in self.open_steps])
            end = (math.floor(newest / self.step_s) + 1) * self.step_s
            watermark = end + self.config.join.window_after_s
            self._advance_to(watermark)
            self.clock.watermark = max(self.clock.watermark, watermark)
        return Closed(self._take_closed(), self.through, self.first_ts)

    def _advance_to(self, watermark: float) -> None:
        """Join what ``watermark`` made due (deliveries up to it less the join's wait), close
        the steps that ended by then, and expire the DNS answers and message ids no later record
        can need."""
        limit = watermark - self.config.join.window_after_s
        self._join_until(limit)
        self._hand_over(math.floor(limit / self.step_s) - 1)
        self.join.expire(limit - self.config.join.window_before_s)
        self.dedup.expire(watermark)

    def _hand_over(self, last: int) -> None:
        """Every step up to ``last`` is closed here."""
        if self.through is None or last > self.through:
            self.through = last

    def _take_closed(self) -> dict[int, StepCounts]:
        through = self.through
        if through is None or not self.open_steps:
            return {}
        done = [i for i in self.open_steps if i <= through]
        if not done:
            return {}
        done.sort()
        return {i: self.open_steps.pop(i) for i in done}

    def _drop_future(self, records: list, kept: list[int] | None, stamps: np.ndarray,
                     rejected: list, now: float | None, bound: float | None, carry: bool,
                     lines: int) -> tuple[list, list[int] | None, np.ndarray, int,
                                          Carry | None]:
        """Reject timestamps far ahead of the rest of their batch (and of ``now`` when known,
        and after ``bound`` when given); the records left, how many of the batch's ``lines``
        were judged, and the ``Carry`` of the tail left unjudged, if any (see ``feed``).

        One host with a wrong clock must not move the watermark. In the batch's sorted times, a
        jump of more than ``max_future_skew_s`` followed by only a few records (at most 1 % of the
        batch) marks those few as a bad clock; a real gap in the traffic is followed by the rest
        of the traffic. A live shell also gives the wall clock, which settles single records.
        Those of the few that come last in the batch (after every record from before the jump,
        in arrival order) may as well be the first records after a quiet gap, cut off by the
        end of the batch: with ``carry``, they are left for the next batch to settle
        (``feed``); those among the rest are a wrong clock either way.
        ``records`` are at the indexes ``kept`` of the batch (``None``: every line, in order).
        """
        skew = self.config.clock.max_future_skew_s
        limit = math.inf if now is None else now + skew
        if bound is not None:
            limit = min(limit, bound)
        jump = math.inf
        carried = None
        if len(stamps) > 1:
            ordered = np.sort(stamps)
            tail_allowed = max(1, len(stamps) // 100)
            for gap in np.flatnonzero(np.diff(ordered) > skew):
                if len(stamps) - (gap + 1) <= tail_allowed:
                    jump = float(ordered[gap]) + skew
                    break
        if carry and jump < limit:
            # Of the few, those after every record from before the jump (in arrival order) are
            # left with every line after them; any other is a wrong clock, rejected below.
            at = np.arange(len(stamps)) if kept is None else np.asarray(kept)
            last = at[(stamps > jump) & (stamps <= limit) & (at > at[stamps <= jump].max())]
            if len(last):
                cut = int(last.min())
                inside = at < cut
                records = [record for record, keep in zip(records, inside.tolist()) if keep]
                if kept is not None:
                    kept = [index for index in kept if index < cut]
                stamps = stamps[inside]
                carried = Carry(lines - cut, jump)
                lines = cut
        limit = min(limit, jump)
        if stamps.max() <= limit:
            return records, kept, stamps, lines, carried
        still: list = []
        still_kept: list[int] = []
        for index, record in zip(range(len(records)) if kept is None else kept, records):
            if record.ts > limit:
                rejected.append((index, "future_ts"))
            else:
                still.append(record)
                still_kept.append(index)
        return still, still_kept, stamps[stamps <= limit], lines, carried

    def _accept_mail(self, mails: list) -> None:
        """Queue the OTP deliveries among a batch's on-time mail records for their join.

        Each step over the batch is one loop in C or one tight Python loop: de-duplication,
        then the final statuses, then the OTP rules; the deliveries left are appended to
        ``pending`` and the list sorted again (a stable sort by time, over a sorted list and a
        nearly sorted batch: a few comparisons a record, where a heap took two dozen). A
        counter a batch adds to for the first time is created at the first record that counts
        in it, as record by record, so a saved state lists its counters in the same order.
        """
        counters = self.counters
        fresh = self.dedup.first_seen(mails)
        duplicates = len(mails) - len(fresh)
        not_final = rec.NOT_FINAL
        final = [mail for mail in fresh if mail.status not in not_final]
        otp = self.rules.otp_mails(final)
        if not ("duplicates" in counters and "not_final" in counters and "not_otp" in counters):
            _create_counters_in_record_order(counters, mails, fresh, final, otp)
        if duplicates:
            counters["duplicates"] += duplicates
        if len(fresh) > len(final):
            counters["not_final"] += len(fresh) - len(final)
        if len(final) > len(otp):
            counters["not_otp"] += len(final) - len(otp)
        if not otp:
            return
        failure = rec.FINAL_FAILURE
        seq = self.seq
        deliveries: list[PendingDelivery] = []
        append = deliveries.append
        for mail in otp:
            seq += 1
            status = mail.status
            # prefer_of(mail), without a call for the usual delivered mail.
            append(PendingDelivery(
                mail.ts, seq, status in failure, mail.message_id, mail.sender_domain,
                mail.tenant, mail.server, mail.status_code, mail.lookups, mail.dns_outcome,
                PREFER_HEALTHY if status == "delivered" else prefer_of(mail)))
        self.seq = seq
        pending = self.pending
        pending += deliveries
        pending.sort(key=_delivery_ts)

    # ------------------------------------------------------------ event time

    def _join_until(self, limit: float) -> None:
        """Join and count every pending delivery at or before ``limit``, in ``(ts, seq)`` order.

        The counters are tallied locally and added once; a tally keeps the order in which a
        record-by-record count would have created them (a saved state lists them so)."""
        pending = self.pending
        if not pending or pending[0].ts > limit:
            return
        cut = bisect_right(pending, limit, key=_delivery_ts)
        due = pending[:cut]
        del pending[:cut]
        step_s = self.step_s
        resolve = self.join.resolve_fields
        steps = self.open_steps
        key_index = KEY_INDEX
        tally: dict[str | None, int] = {}          # outcome -> deliveries; None -> failures
        index = -1
        step: Any = None                  # (a StepCounts from the first delivery on)
        for p in due:
            ts, sender_domain = p.ts, p.sender_domain
            outcome, resolver = resolve(ts, p.server, sender_domain, p.lookups, p.dns_outcome,
                                        p.prefer)
            if ts // step_s != index:
                index = int(ts // step_s)
                step = steps.get(index)
                if step is None:
                    step = steps[index] = StepCounts()
                senders, resolvers = step.slice_attempts
                pairs = step.pairs
            step.attempts += 1
            tally[outcome] = tally.get(outcome, 0) + 1
            if sender_domain:
                senders[sender_domain] = senders.get(sender_domain, 0) + 1
            if resolver:
                resolvers[resolver] = resolvers.get(resolver, 0) + 1
                if sender_domain:
                    # Which resolvers each sender went through: the judge reads the pairs of
                    # senders that usually fail, to expect their failures of those resolvers.
                    pair = (resolver, sender_domain)
                    pairs[pair] = pairs.get(pair, 0) + 1
            if p.failed:
                tally[None] = tally.get(None, 0) + 1
                k = key_index[outcome]
                failure = (sender_domain, resolver, p.tenant, p.status_code, p.message_id, ts)
                step.add_failure(k, failure)
                step.add_failure(ALL_INDEX, failure)
                sender_failures, resolver_failures = step.slice_failures
                if sender_domain:
                    slot = (sender_domain, k)
                    sender_failures[slot] = sender_failures.get(slot, 0) + 1
                if resolver:
                    slot = (resolver, k)
                    resolver_failures[slot] = resolver_failures.get(slot, 0) + 1
        counters = self.counters
        counters["otp_attempts"] += len(due)
        for tallied, n in tally.items():
            counters["otp_failures" if tallied is None else f"otp_outcome:{tallied}"] += n
        if self.join.client_mismatched:
            counters["client_mismatched_lookups"] += self.join.client_mismatched
            self.join.client_mismatched = 0

    # ----------------------------------------------------------------- state

    @property
    def watermark(self) -> float:
        return self.clock.watermark

    def stats(self) -> dict:
        """Counters plus gauges (buffer sizes)."""
        out = dict(self.counters)
        out["pending_deliveries"] = len(self.pending)
        out["dns_buffered"] = self.join.size
        out["dns_evicted"] = self.join.evicted
        out["dedup_entries"] = len(self.dedup)
        out["dedup_evicted"] = self.dedup.evicted
        out["ambiguous_joins"] = self.join.ambiguous
        return out

    def snapshot(self) -> dict:
        """The task's state as JSON-able data (no pickle: a checkpoint is input, too)."""
        return {
            "clock": self.clock.snapshot(),
            "dedup": self.dedup.snapshot(),
            "join": self.join.snapshot(),
            "pending": [[p.ts, p.seq, p.failed, p.message_id, p.sender_domain, p.tenant,
                         p.server, p.status_code,
                         None if p.lookups is None else [list(lk) for lk in p.lookups],
                         p.dns_outcome, p.prefer]
                        for p in self.pending],
            "seq": self.seq,
            "open_steps": {str(i): s.to_plain() for i, s in sorted(self.open_steps.items())},
            "through": self.through,
            "first_ts": self.first_ts,
            "counters": dict(self.counters),
            "evicted": {"dns": self.join.evicted, "dedup": self.dedup.evicted},
            "ambiguous_joins": self.join.ambiguous,
        }

    def _restore(self, state: dict) -> None:
        self.clock.restore(state["clock"])
        self.dedup.restore(state["dedup"])
        self.join.restore(state["join"])
        self.pending = sorted(
            (PendingDelivery(p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7],
                             None if p[8] is None else [tuple(lk) for lk in p[8]], p[9], p[10])
             for p in state["pending"]), key=attrgetter("ts", "seq"))
        self.seq = int(state["seq"])
        self.open_steps = {int(i): StepCounts.from_plain(row)
                           for i, row in state["open_steps"].items()}
        through = state["through"]
        self.through = None if through is None else int(through)
        self.first_ts = state["first_ts"]
        self.counters = Counter(state["counters"])
        self.join.ambiguous = int(state["ambiguous_joins"])
        self.join.evicted = int(state["evicted"]["dns"])
        self.dedup.evicted = int(state["evicted"]["dedup"])


def _create_counters_in_record_order(counters: Counter, mails: list, fresh: list, final: list,
                                     otp: list) -> None:
    """Create the mail counters a batch adds to for the first time in the order of the first
    record that counts in each (as a record-by-record loop would): a saved state lists its
    counters in the order they were created."""
    fresh_ids, final_ids, otp_ids = ({id(m) for m in group} for group in (fresh, final, otp))
    for mail in mails:
        mail_id = id(mail)
        key = ("duplicates" if mail_id not in fresh_ids else "not_final"
               if mail_id not in final_ids else "not_otp" if mail_id not in otp_ids else None)
        if key is not None and key not in counters:
            counters[key] += 0

