"""Sliding event-time windows of OTP attempts and failures per key, with their evidence.

Joined deliveries are counted into *steps* (``step_s`` of event time, aligned to the epoch so a
replay and a live run cut the same steps). When the watermark has passed a step, the step is
*closed*: its counts move into a ring of the last ``long_window_s / step_s`` steps, and the sums of
the short window (``bucket_s``) and of the long window slide by one step. Sums are kept
incrementally, so closing a step costs a few vector operations whatever the traffic. Failures keep
a small tuple each (sender domain, resolver, tenant, status code, message id, time) for evidence,
capped per step and key so an incident's evidence costs bounded memory.

A step's evidence is defined without regard to arrival order or to how the traffic was split:
the ``EVIDENCE_CAP`` earliest failures by ``(time, message id)``, in that order. So counts of one
step made by several join tasks and merged (``StepCounts.merge``, ``canonical``) give the same
evidence as one task counting everything.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from .outcomes import N_KEYS
from .events import ValueCount

#: At most this many failure tuples are kept per step and key for evidence.
EVIDENCE_CAP = 500

# A failure's evidence: (sender_domain, resolver, tenant, status_code, message_id, ts).
Failure = tuple[str | None, str | None, str | None, str | None, str, float]
#: The evidence fields of a failure people read (the time only orders them).
FAILURE_FIELDS = 5


def _order(failure: Failure) -> tuple[float, str]:
    """Evidence order: time, then message id."""
    return failure[5], failure[4]


class StepCounts:
    """Counts of one open step: attempts, failures per key, and failure evidence per key.

    ``slice_attempts[d]`` and ``slice_failures[d]`` hold the same per value of slice dimension
    ``d`` (0: sender domain, 1: resolver): ``{value: attempts}`` and ``{(value, outcome index):
    failures}``; ``pairs`` the attempts per ``(resolver, sender domain)``, which say what each
    resolver's traffic mix should fail.
    """

    __slots__ = ("attempts", "failures", "evidence", "slice_attempts", "slice_failures", "pairs")

    def __init__(self) -> None:
        self.attempts = 0
        self.failures = [0] * N_KEYS
        self.evidence: dict[int, list[Failure]] = {}
        # One per slice dimension (two today).
        self.slice_attempts: tuple[dict[str, int], ...] = ({}, {})
        self.slice_failures: tuple[dict[tuple[str, int], int], ...] = ({}, {})
        self.pairs: dict[tuple[str, str], int] = {}

    def add_failure(self, key: int, failure: Failure) -> None:
        """Count a failure of ``key``; keep it as evidence while it is among the earliest
        ``EVIDENCE_CAP`` by ``(time, message id)``. A task adds failures in time order, so once
        the cap is reached only one at the newest kept time can displace another (a scan, rare).
        """
        self.failures[key] += 1
        kept = self.evidence.get(key)
        if kept is None:
            self.evidence[key] = [failure]
        elif len(kept) < EVIDENCE_CAP:
            kept.append(failure)
        elif failure[5] <= kept[-1][5]:
            worst = max(range(len(kept)), key=lambda i: _order(kept[i]))
            if _order(failure) < _order(kept[worst]):
                kept[worst] = failure

    def merge(self, other: "StepCounts") -> None:
        """Add the counts of the same step made by another task (evidence: ``canonical`` after
        the last merge)."""
        self.attempts += other.attempts
        self.failures = [a + b for a, b in zip(self.failures, other.failures)]
        for key, found in other.evidence.items():
            self.evidence.setdefault(key, []).extend(found)
        for mine, theirs in zip(self.slice_attempts, other.slice_attempts):
            for value, n in theirs.items():
                mine[value] = mine.get(value, 0) + n
        for mine_f, theirs_f in zip(self.slice_failures, other.slice_failures):
            for slot, n in theirs_f.items():
                mine_f[slot] = mine_f.get(slot, 0) + n
        pairs = self.pairs
        for pair, n in other.pairs.items():
            pairs[pair] = pairs.get(pair, 0) + n

    def canonical(self) -> None:
        """Put each key's evidence in ``(time, message id)`` order, the earliest
        ``EVIDENCE_CAP`` kept: the same whatever the tasks and their order."""
        for key, found in self.evidence.items():
            found.sort(key=_order)
            del found[EVIDENCE_CAP:]

    def to_plain(self) -> list:
        return [self.attempts, list(self.failures),
                {str(k): [list(f) for f in v] for k, v in self.evidence.items()},
                [sorted(d.items()) for d in self.slice_attempts],
                [sorted([value, k, n] for (value, k), n in d.items())
                 for d in self.slice_failures],
                sorted([resolver, sender, n] for (resolver, sender), n in self.pairs.items())]

    @classmethod
    def from_plain(cls, row: list) -> "StepCounts":
        counts = cls()
        counts.attempts = int(row[0])
        counts.failures = [int(v) for v in row[1]]
        counts.evidence = {int(k): [tuple(f) for f in v] for k, v in row[2].items()}
        counts.slice_attempts = tuple({value: int(n) for value, n in d} for d in row[3])
        counts.slice_failures = tuple({(value, int(k)): int(n) for value, k, n in d}
                                      for d in row[4])
        counts.pairs = {(resolver, sender): int(n) for resolver, sender, n in row[5]}
        return counts


class SlidingCounts:
    """A ring of closed steps with incremental short- and long-window sums.

    >>> win = SlidingCounts(short_steps=2, long_steps=4)
    >>> for attempts in (10, 20, 30):
    ...     step = StepCounts(); step.attempts = attempts; step.failures[0] = 1
    ...     win.push(step)
    >>> win.short_attempts, win.long_attempts, int(win.short_failures[0])
    (50, 60, 2)
    """

    def __init__(self, short_steps: int, long_steps: int) -> None:
        self.short_steps = short_steps
        self.long_steps = long_steps
        self.ring_attempts = np.zeros(long_steps, dtype=np.int64)
        self.ring_failures = np.zeros((long_steps, N_KEYS), dtype=np.int64)
        # Failures per key each step's traffic mix made expected beyond the outcome-wide
        # baselines (senders whose zones always fail): zero in the usual step.
        self.ring_expected = np.zeros((long_steps, N_KEYS))
        self.ring_evidence: list[dict[int, list[Failure]]] = [{} for _ in range(long_steps)]
        # Which slots may hold failures and expected failures: a step with neither (the usual
        # one) entering or leaving a window leaves its sums as they are, so it costs no vector
        # operation.
        self.ring_failed = [False] * long_steps
        self.ring_mixed = [False] * long_steps
        self.pushed = 0          # steps pushed so far; the newest is at (pushed - 1) % long_steps
        self._recompute()

    def push(self, step: StepCounts, expected: np.ndarray | None = None) -> None:
        """Slide both windows by one closed step; ``expected`` are the failures per key its
        traffic mix made expected beyond the baselines (zero when not given)."""
        pos = self.pushed % self.long_steps
        failed, mixed = any(step.failures), expected is not None
        # The slot about to be overwritten leaves the long window ...
        self.long_attempts += step.attempts - int(self.ring_attempts[pos])
        self.ring_attempts[pos] = step.attempts
        if failed or self.ring_failed[pos]:
            failures = np.asarray(step.failures, dtype=np.int64)
            self.long_failures += failures - self.ring_failures[pos]
            self.ring_failures[pos] = failures
        if mixed or self.ring_mixed[pos]:
            expected = np.zeros(N_KEYS) if expected is None else expected
            self.long_expected += expected - self.ring_expected[pos]
            self.ring_expected[pos] = expected
        self.ring_failed[pos], self.ring_mixed[pos] = failed, mixed
        self.ring_evidence[pos] = step.evidence
        self.pushed += 1
        # ... and the step short_steps back leaves the short window.
        self.short_attempts += step.attempts
        if failed:
            self.short_failures += failures
        if mixed and expected is not None:      # (mixed says it was given)
            self.short_expected += expected
        if self.pushed > self.short_steps:
            gone = (self.pushed - 1 - self.short_steps) % self.long_steps
            self.short_attempts -= int(self.ring_attempts[gone])
            if self.ring_failed[gone]:
                self.short_failures -= self.ring_failures[gone]
            if self.ring_mixed[gone]:
                self.short_expected -= self.ring_expected[gone]

    def is_empty(self) -> bool:
        return self.long_attempts == 0

    def clear(self) -> None:
        """Forget everything (after a gap longer than the long window)."""
        self.ring_attempts[:] = 0
        self.ring_failures[:] = 0
        self.ring_expected[:] = 0.0
        self.ring_evidence = [{} for _ in range(self.long_steps)]
        self.ring_failed = [False] * self.long_steps
        self.ring_mixed = [False] * self.long_steps
        self._recompute()

    def evidence(self, key: int, steps: int) -> list[Failure]:
        """Failure tuples of ``key`` over the newest ``steps`` steps."""
        found: list[Failure] = []
        for back in range(min(steps, self.pushed, self.long_steps)):
            pos = (self.pushed - 1 - back) % self.long_steps
            found.extend(self.ring_evidence[pos].get(key, ()))
        return found

    def _recompute(self) -> None:
        self.long_attempts = int(self.ring_attempts.sum())
        self.long_failures = self.ring_failures.sum(axis=0)
        self.long_expected = self.ring_expected.sum(axis=0)
        newest = [(self.pushed - 1 - back) % self.long_steps
                  for back in range(min(self.short_steps, self.pushed))]
        self.short_attempts = int(self.ring_attempts[newest].sum()) if newest else 0
        self.short_failures = (self.ring_failures[newest].sum(axis=0) if newest
                               else np.zeros(N_KEYS, dtype=np.int64))
        self.short_expected = (self.ring_expected[newest].sum(axis=0) if newest
                               else np.zeros(N_KEYS))

    def snapshot(self) -> dict:
        return {"pushed": self.pushed, "attempts": self.ring_attempts.tolist(),
                "failures": self.ring_failures.tolist(),
                "expected": self.ring_expected.tolist(),
                "evidence": [{str(k): [list(f) for f in v] for k, v in slot.items()}
                             for slot in self.ring_evidence]}

    def restore(self, state: dict) -> None:
        self.pushed = int(state["pushed"])
        self.ring_attempts = np.asarray(state["attempts"], dtype=np.int64)
        self.ring_failures = np.asarray(state["failures"], dtype=np.int64).reshape(
            self.long_steps, N_KEYS)
        self.ring_expected = np.asarray(state["expected"], dtype=float).reshape(
            self.long_steps, N_KEYS)
        self.ring_evidence = [{int(k): [tuple(f) for f in v] for k, v in slot.items()}
                              for slot in state["evidence"]]
        self.ring_failed = [bool(row.any()) for row in self.ring_failures]
        self.ring_mixed = [bool(row.any()) for row in self.ring_expected]
        self._recompute()


def top_values(failures: list[Failure], field: int, top: int) -> list[ValueCount]:
    """The ``top`` most common non-empty values of one evidence field, ties by value."""
    return top_counted(Counter(f[field] for f in failures if f[field]), top)


def top_counted(counts: dict, top: int) -> list[ValueCount]:
    """The ``top`` largest counts, ties broken by value."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [ValueCount(value, count) for value, count in ranked[:top]]
