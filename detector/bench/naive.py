"""The detector a user would write first: one record at a time, a z-score per minute (baseline).

It is the benchmark's point of comparison for speed and for detection quality, built directly on
river's building blocks the way river's own examples are: a ``learn_one`` per record. Each line is
decoded with ``orjson`` and timestamped with the project's ``parse_ts`` (the logs mix three
timestamp forms; any user needs a parser for them); the two files are merged by timestamp with
``heapq.merge``. A DNS answer is remembered as the latest ``(ts, rcode)`` per queried name. An OTP
delivery (the project's ``OtpRules``, so both detectors watch the same mail) takes the rcode of
the first of its lookups (its ``dns_lookups``, else its sender's domain) whose latest answer is
not ``NOERROR`` and at most 30 s old; ``UNMATCHED`` when no lookup has one. Its failure indicator
is counted into the current minute, per rcode and for ``ALL``. When a record of a later minute
arrives, the minute is judged: per key, the failure rate (failures with that rcode over all OTP
attempts) becomes a z-score against a ``river.stats.EWMean`` and ``river.stats.EWVar`` of the
earlier minutes' rates (standard deviation floored at 0.1 percentage point, since a key that never
failed has none). ``open`` when z >= 4 with at least 5 failures after a 30-minute warm-up;
``resolved`` after 5 minutes under z = 2; an open key's baseline does not learn.

What it leaves out, on purpose, because a first version does: no watermark (a late record counts
in whichever minute is current), no de-duplication, no join window after the delivery, no
qtype/client matching, no NODATA (NOERROR without answers), no exact tail probability, no long
window, no checkpoint.

>>> detector = NaiveDetector(warmup_minutes=0)
>>> events = []
>>> for minute in range(40):
...     failing = 30 if minute == 35 else 0
...     for n in range(100):
...         ts = minute * 60.0 + n * 0.5
...         events += detector.learn_one("dns", {"qname": "bank.example", "rcode":
...                                      "SERVFAIL" if n < failing else "NOERROR"}, ts)
...         events += detector.learn_one("mail", {"status": "deferred" if n < failing
...                                      else "delivered", "category": "otp",
...                                      "sender": "otp@bank.example"}, ts + 0.1)
>>> [(e["state"], e["key"]["outcome"], e["detected_at"]) for e in events]
[('open', 'ALL', '1970-01-01T00:36:00Z'), ('open', 'SERVFAIL', '1970-01-01T00:36:00Z')]
"""

from __future__ import annotations

import gzip
import heapq
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
from river import stats

from ..core.otp import OtpRules
from ..core.records import Rejected, format_ts, parse_ts

FAILED = frozenset({"failed", "deferred", "quarantined", "filtered", "dropped"})
NOT_FINAL = frozenset({"pending", "expanded", "getting_status"})


class NaiveDetector:
    """Per-record failure counts, per-minute z-scores (see the module docstring).

    Parameters
    ----------
    z_open, z_resolve
        Open at this z-score or more; resolve after ``resolve_minutes`` under ``z_resolve``.
    min_failures
        Failures a minute needs before it can open anything.
    fading_factor
        Weight of the newest minute in ``EWMean``/``EWVar`` (0.01: a memory of ~100 minutes).
    min_std
        Floor of the standard deviation of a key's per-minute failure rate.
    """

    def __init__(self, z_open: float = 4.0, z_resolve: float = 2.0, min_failures: int = 5,
                 fading_factor: float = 0.01, min_std: float = 0.001, warmup_minutes: int = 30,
                 resolve_minutes: int = 5, join_window_s: float = 30.0,
                 rules: OtpRules | None = None) -> None:
        self.z_open, self.z_resolve = z_open, z_resolve
        self.min_failures = min_failures
        self.fading_factor = fading_factor
        self.min_std = min_std
        self.warmup_minutes = warmup_minutes
        self.resolve_minutes = resolve_minutes
        self.join_window_s = join_window_s
        self.rules = rules or OtpRules()
        self.last_answer: dict[str, tuple[float, str]] = {}
        self.minute: int | None = None
        self.minutes_judged = 0
        self.attempts = 0
        self.failures: Counter[str] = Counter()
        self.means: dict[str, stats.EWMean] = {}
        self.variances: dict[str, stats.EWVar] = {}
        self.open: dict[str, dict] = {}          # key -> {"id", "since", "calm"}

    def learn_one(self, stream: str, record: dict, ts: float) -> list[dict]:
        """Fold one decoded record in; the events of any minute it closed."""
        events: list[dict] = []
        minute = int(ts // 60)
        if self.minute is None:
            self.minute = minute
        elif minute > self.minute:
            self._judge(events)
            self.minute = minute
        if stream == "dns":
            qname = record.get("qname")
            if isinstance(qname, str):
                self.last_answer[qname.lower().rstrip(".")] = (ts, str(record.get("rcode")).upper())
            return events
        status = str(record.get("status", "")).lower()
        if status in NOT_FINAL:
            return events
        category = record.get("category")
        if not self.rules.is_otp(category.lower() if isinstance(category, str) else None,
                                 record.get("sender"), record.get("subject")):
            return events
        self.attempts += 1
        if status in FAILED:
            self.failures[self._outcome(record, ts)] += 1
            self.failures["ALL"] += 1
        return events

    def _outcome(self, record: dict, ts: float) -> str:
        names = [lookup.get("qname", "") for lookup in record.get("dns_lookups") or []
                 if isinstance(lookup, dict)]
        if not names:
            sender = record.get("sender") or ""
            names = [sender.rpartition("@")[2]] if "@" in sender else []
        outcome = "UNMATCHED"
        for name in names:
            answer = self.last_answer.get(str(name).lower().rstrip("."))
            if answer is None or ts - answer[0] > self.join_window_s:
                continue
            if answer[1] != "NOERROR":
                return answer[1]
            outcome = "NOERROR"
        return outcome

    def _judge(self, events: list[dict]) -> None:
        """Score the finished minute per key, open and resolve, then learn it."""
        assert self.minute is not None        # (called for a minute seen)
        end = (self.minute + 1) * 60.0
        attempts = self.attempts
        self.minutes_judged += 1
        for key in sorted(set(self.failures) | set(self.means) | set(self.open)):
            failures = self.failures.get(key, 0)
            rate = failures / attempts if attempts else 0.0
            mean = self.means.setdefault(key, stats.EWMean(self.fading_factor))
            variance = self.variances.setdefault(key, stats.EWVar(self.fading_factor))
            expected = mean.get()
            z = (rate - expected) / max(math.sqrt(max(variance.get(), 0.0)), self.min_std)
            anomaly = self.open.get(key)
            if anomaly is None:
                if (z >= self.z_open and failures >= self.min_failures
                        and self.minutes_judged > self.warmup_minutes):
                    anomaly = self.open[key] = {"id": f"naive-{key.lower()}-{int(end) - 60}",
                                                "since": end - 60, "calm": 0}
                    events.append(self._event("open", key, anomaly, end, attempts, failures,
                                              expected, z))
                else:
                    mean.update(rate)
                    variance.update(rate)
            elif z < self.z_resolve:
                anomaly["calm"] += 1
                if anomaly["calm"] >= self.resolve_minutes:
                    del self.open[key]
                    events.append(self._event("resolved", key, anomaly, end, attempts, failures,
                                              expected, z))
            else:
                anomaly["calm"] = 0
        self.attempts = 0
        self.failures.clear()

    def close(self) -> list[dict]:
        """End of input: judge the last minute."""
        events: list[dict] = []
        if self.minute is not None:
            self._judge(events)
            self.minute = None
        return events

    @staticmethod
    def _event(state: str, key: str, anomaly: dict, end: float, attempts: int, failures: int,
               expected: float, z: float) -> dict:
        rate = failures / attempts if attempts else 0.0
        return {"id": anomaly["id"], "state": state, "key": {"outcome": key},
                "detected_at": format_ts(end), "since": format_ts(anomaly["since"]),
                "window": {"start": format_ts(end - 60), "end": format_ts(end)},
                "observed": {"attempts": attempts, "failures": failures,
                             "failure_rate": round(rate, 6)},
                "expected": {"failure_rate": round(expected, 6)},
                "score": round(z, 2), "rule": "naive-z"}


def records(path: str | Path, stream: str) -> Iterator[tuple[float, str, dict]]:
    """``(ts, stream, object)`` per readable line of a log; unreadable lines are skipped."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as lines:
        for line in lines:
            try:
                record = orjson.loads(line)
                ts = parse_ts(record.get("ts"))
            except (orjson.JSONDecodeError, AttributeError, Rejected):
                continue
            yield ts, stream, record


def run_naive(mail_paths: list[str], dns_paths: list[str],
              detector: NaiveDetector | None = None) -> tuple[list[dict], int]:
    """Run the naive detector over the logs merged by timestamp: its events and records read."""
    detector = detector or NaiveDetector()
    streams = [records(p, "mail") for p in mail_paths] + [records(p, "dns") for p in dns_paths]
    events: list[dict] = []
    count = 0
    learn_one = detector.learn_one
    for ts, stream, record in heapq.merge(*streams, key=lambda item: item[0]):
        count += 1
        found = learn_one(stream, record, ts)
        if found:
            events.extend(found)
    events.extend(detector.close())
    return events, count
