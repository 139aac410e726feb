"""Slices: the OTP failure rate per outcome of each busy sender domain and resolver.

A provider-wide rate hides what happens to one sender: one bank's SPF breaking is a rounding error
in the provider's SERVFAIL rate and the whole story for that bank's users. So besides the
outcome-wide keys the detector keeps the same model per *(outcome, sender domain)* and per
*(outcome, resolver)*, where a slice's rate is its failures with that outcome over *its own* OTP
attempts.

**Bounded state.** Each dimension tracks at most ``capacity`` values: the busiest by recent OTP
attempts, found with Space-Saving (Metwally, Agrawal & El Abbadi 2005, "Efficient computation of
frequent and top-k elements in data streams", ICDT): a value not in a full table replaces the one
with the smallest count and inherits that count as its (over-)estimate, so every value sending
more than ``1/capacity`` of the traffic is guaranteed a row. Counts fade with the baseline's
half-life, so the table follows today's senders, not last month's. A replaced row's model starts
again from the prior (``evicted`` counts them); a row with an open anomaly is never replaced.

**Baselines, shrunk toward the parent.** A slice's baseline for outcome *k* is a Beta posterior
like the outcome-wide one, with its prior centred on the parent rate (the outcome-wide rate of
*k*) with the weight of ``prior_attempts`` attempts: a hierarchical (empirical-Bayes) prior
(Gelman et al. 2013, *Bayesian Data Analysis*, 3rd ed., §5.3; Efron & Morris 1975). A new or
quiet slice is judged by what is normal for its outcome; a slice with its own history by that
history, so a sender whose zone is always broken has that as its normal. The baseline is also
floored at half the parent rate: a slice that has not failed in its few hundred attempts is not
taken to be a thousand times healthier than its peers. A slice may alarm only once its baseline
has learned ``warmup_attempts`` attempts of that outcome (a new sender's first failures are not
an incident: they are all we know of it).

**Test.** Each slice runs the multi-chart CUSUM of ``sequential`` on its own steps, with a
threshold that grows with the number of slices being watched (``sequential.threshold``: the
false-alarm budget of the slices is shared by all of them), and the guards of the outcome-wide
keys on its run (minimum failures, lift, excess).

**Cost.** Per step, only the slices that fail in it or whose statistic is above zero are
touched (a handful); admitting values, counting and learning happen once a bucket. Senders whose
baseline for some outcome is well above their outcome's (``deviant``: a zone that is always
broken) are listed at each bucket, so the traffic mix's expectation costs a lookup per such
sender, not per sender.
"""

from __future__ import annotations

import numpy as np

from .model import score_of
from .sequential import Cusum, coefficients

#: Slice dimensions: the event key's field and the failure evidence tuple's index.
SENDER, RESOLVER = "sender_domain", "resolver"


class SliceTable:
    """Space-Saving rows of one dimension, each with a baseline and a CUSUM per outcome.

    >>> table = SliceTable("resolver", capacity=2, n_outcomes=3, decay=0.99,
    ...                    prior_attempts=20.0, warmup_attempts=10.0)
    >>> parent = np.full(3, 0.01)
    >>> table.add_step({"res-a": 5, "res-b": 3}, {("res-b", 0): 3})
    >>> table.close_bucket(parent, frozen=set(), learn_max_score=3.0)
    >>> table.add_step({"res-c": 1}, {})
    >>> table.close_bucket(parent, frozen=set(), learn_max_score=3.0)
    >>> table.names, table.evicted       # res-c replaced res-b, the less busy one
    (['res-a', 'res-c'], 1)
    """

    def __init__(self, dimension: str, capacity: int, n_outcomes: int, decay: float,
                 prior_attempts: float, warmup_attempts: float,
                 lists_deviant: bool = True) -> None:
        self.dimension = dimension
        self.capacity = capacity
        self.n_outcomes = n_outcomes
        self.decay = decay
        self.prior_attempts = prior_attempts
        self.warmup_attempts = warmup_attempts
        self.names: list[str] = []
        self.row_of: dict[str, int] = {}
        self.weight = np.zeros(capacity)          # Space-Saving counts (decayed attempts)
        self.attempts = np.zeros((capacity, n_outcomes))   # learned, decayed, per outcome
        self.failures = np.zeros((capacity, n_outcomes))
        #: CUSUMs keyed ``row * n_outcomes + outcome``: only those above zero are kept.
        self.cusum = Cusum()
        # Baseline rates by CUSUM key, and their CUSUM coefficients: they change only when a
        # bucket is learned.
        self._rates: dict[int, tuple[float, tuple]] = {}
        #: CUSUM keys of the (row, outcome) pairs past their warm-up: the only ones tested.
        self.warm: set[int] = set()
        #: Values whose baseline exceeds their outcome's: value -> excess rate per outcome;
        #: listed at each bucket unless ``lists_deviant`` is false (when nothing reads them).
        self.lists_deviant = lists_deviant
        self.deviant: dict[str, np.ndarray] = {}
        # The bucket being gathered, step by step: attempts per value, failures per (value, k).
        self.bucket_attempts: dict[str, int] = {}
        self.bucket_failures: dict[tuple[str, int], int] = {}
        self.evicted = 0

    # ------------------------------------------------------------- per step

    def add_step(self, attempts: dict[str, int], failures: dict[tuple[str, int], int]) -> None:
        """Gather one closed step's counts into the bucket."""
        counts = self.bucket_attempts
        for value, n in attempts.items():
            counts[value] = counts.get(value, 0) + n
        slots = self.bucket_failures
        for slot, n in failures.items():
            slots[slot] = slots.get(slot, 0) + n

    def hot(self, attempts: dict[str, int], failures: dict[tuple[str, int], int]
            ) -> list[tuple[int, int, int, int]]:
        """The CUSUM keys to update for a step, as ``(flat, outcome, attempts, failures)``:
        warm (row, outcome) pairs that failed in it, or whose statistic is above zero and that
        had attempts (a quiet step with no failure cannot raise a statistic)."""
        row_of, names, n_out, warm = self.row_of, self.names, self.n_outcomes, self.warm
        found: dict[int, tuple[int, int, int, int]] = {}
        for (value, k), x in failures.items():
            row = row_of.get(value)
            if row is not None:
                flat = row * n_out + k
                if flat in warm:
                    found[flat] = (flat, k, attempts[value], x)
        for flat in self.cusum.runs:
            n = attempts.get(names[flat // n_out])
            if n and flat in warm and flat not in found:
                found[flat] = (flat, flat % n_out, n, 0)
        return list(found.values())

    def rate(self, flat: int, parent: float, min_lift: float) -> tuple[float, tuple]:
        """The ``baseline`` of one (row, outcome) (as its CUSUM key ``flat``) with its CUSUM
        coefficients, kept for the bucket (``parent`` too changes only at a bucket's end)."""
        found = self._rates.get(flat)
        if found is None:
            rate = self.baseline(*divmod(flat, self.n_outcomes), parent)
            found = self._rates[flat] = rate, coefficients(rate, min_lift)
        return found

    def baseline(self, row: int, outcome: int, parent: float) -> float:
        """The baseline rate of one (row, outcome): its own history shrunk toward ``parent``,
        floored at half of it."""
        m = self.prior_attempts
        shrunk = ((float(self.failures[row, outcome]) + m * parent)
                  / (float(self.attempts[row, outcome]) + m))
        return max(shrunk, 0.5 * parent)

    def strength(self, row: int, outcome: int) -> float:
        """The weight (in attempts) of a row's baseline for one outcome."""
        return float(self.attempts[row, outcome]) + self.prior_attempts

    def live_slices(self) -> int:
        """Rows in use: the number of slices being watched in this dimension."""
        return len(self.names)

    # ----------------------------------------------------------- per bucket

    def close_bucket(self, parent: np.ndarray, frozen: set[tuple[str, int]],
                     learn_max_score: float) -> None:
        """End of a bucket: admit its values (Space-Saving), learn it where its own evidence
        is calm (failures under ``learn_max_score`` against the baseline: an incident's onset
        must not raise the baseline that judges it, and only the bucket's own evidence counts,
        so the baseline is not biased low; a slice still warming up learns everything), skip
        ``frozen`` (value, outcome) pairs (open anomalies, and statistics halfway to an alarm),
        fade the rest, and list the deviant values."""
        counts, failures = self.bucket_attempts, self.bucket_failures
        pinned = {self.row_of[value] for value, _ in frozen if value in self.row_of}
        rows = self._rows_of(counts, pinned)
        decay = self.decay
        kept = [(self.row_of[value], k) for value, k in frozen if value in self.row_of]
        saved = [(row, k, self.attempts[row, k], self.failures[row, k]) for row, k in kept]
        used = len(self.names)
        self.weight[:used] *= decay
        self.attempts[:used] *= decay
        self.failures[:used] *= decay
        learned, stormy = self._judge_failures(counts, failures, parent, learn_max_score)
        if counts:
            n = np.fromiter(counts.values(), dtype=float, count=len(counts))
            watched = rows >= 0
            rows, n = rows[watched], n[watched]
            self.weight[rows] += n
            self.attempts[rows] += n[:, None]
            for row, k, fails in learned:
                self.failures[row, k] += fails
        # A pair that is not learned keeps what it had: faded when stormy, as it was when frozen
        # (last, so that it wins).
        for row, k, attempts, fails in stormy + saved:
            self.attempts[row, k], self.failures[row, k] = attempts, fails
        self.bucket_attempts, self.bucket_failures = {}, {}
        self._list_deviant(parent, self._relearned())

    def _judge_failures(self, counts: dict[str, int], failures: dict[tuple[str, int], int],
                        parent: np.ndarray, learn_max_score: float) -> tuple[list, list]:
        """The (row, outcome) pairs that failed in the bucket, faded and admitted: those that
        learn it, as ``(row, outcome, failures)`` (calm, or still warming up: what they see is
        their normal), and the others as ``(row, outcome, attempts, failures)``."""
        learned, stormy = [], []
        row_of, attempts, warmup = self.row_of, self.attempts, self.warmup_attempts
        for (value, k), fails in failures.items():
            row = row_of.get(value)
            if row is None or value not in counts:
                continue            # not counted, or replaced by a later value of the bucket
            if attempts[row, k] >= warmup:
                rate = self.baseline(row, k, float(parent[k]))
                weight = self.strength(row, k)
                score = score_of(fails, counts[value], rate * weight, (1.0 - rate) * weight)
                if score >= learn_max_score:
                    stormy.append((row, k, attempts[row, k], self.failures[row, k]))
                    continue
            learned.append((row, k, fails))
        return learned, stormy

    def _rows_of(self, counts: dict[str, int], pinned: set[int]) -> np.ndarray:
        """The row of each value of a bucket's ``{value: attempts}``, admitting new values
        (Space-Saving, a bucket at a time): into free rows first, then in place of the least
        busy rows that are neither ``pinned`` nor in this bucket, the busiest newcomers first;
        a newcomer that finds no such row is not watched (-1)."""
        rows = np.full(len(counts), -1, dtype=np.int64)
        row_of = self.row_of
        newcomers = []
        for i, value in enumerate(counts):
            row = row_of.get(value)
            if row is None:
                newcomers.append(i)
            else:
                rows[i] = row
        if not newcomers:
            return rows
        values = list(counts)
        newcomers.sort(key=lambda i: (-counts[values[i]], values[i]))
        free = min(len(newcomers), self.capacity - len(self.names))
        for i in newcomers[:free]:
            rows[i] = row_of[values[i]] = len(self.names)
            self.names.append(values[i])
        newcomers = newcomers[free:]
        if newcomers:
            weights = self.weight.copy()
            taken = list(pinned) + rows[rows >= 0].tolist()
            weights[taken] = np.inf
            victims = np.argsort(weights, kind="stable")[:len(newcomers)]
            victims = victims[np.isfinite(weights[victims])]
            for i, row in zip(newcomers, victims.tolist()):
                self._replace(row, values[i])
                rows[i] = row
        return rows

    def _replace(self, row: int, value: str) -> None:
        """``value`` takes ``row`` over: it keeps the count it displaced (Space-Saving's
        overestimate) and starts its model from the prior."""
        del self.row_of[self.names[row]]
        self.names[row] = value
        self.row_of[value] = row
        self.evicted += 1
        self.attempts[row] = 0.0
        self.failures[row] = 0.0
        self._rates.clear()
        n = self.n_outcomes
        self.cusum.reset(range(row * n, (row + 1) * n))

    def _list_deviant(self, parent: np.ndarray, warm: np.ndarray) -> None:
        """List the deviant values, from the rows' ``warm`` mask (``_relearned``)."""
        used = len(self.names)
        if not used or not self.lists_deviant:
            self.deviant = {}
            return
        m = self.prior_attempts
        rates = (self.failures[:used] + m * parent) / (self.attempts[:used] + m)
        excess = np.where(warm, np.maximum(rates - parent, 0.0), 0.0)
        # Twice the parent rate and half a point above it: the guards' own idea of "more".
        # (An excess is zero where a row is not warm, so a deviant row is warm.)
        deviant = np.flatnonzero(((rates >= 2.0 * parent) & (excess >= 0.005)).any(axis=1))
        self.deviant = {self.names[row]: excess[row] for row in deviant.tolist()}

    def fade(self, buckets: int) -> None:
        """Forget ``buckets`` empty buckets at once (a gap in the data)."""
        factor = self.decay ** buckets
        self.attempts *= factor
        self.failures *= factor
        self.weight *= factor
        self._relearned()

    def _relearned(self) -> np.ndarray:
        """The learned counts changed: forget the cached rates, list the warm pairs again.
        Returns the rows in use's mask of warm (row, outcome) pairs."""
        self._rates.clear()
        warm = self.attempts[:len(self.names)] >= self.warmup_attempts
        self.warm = set(np.flatnonzero(warm).tolist())
        return warm

    # ----------------------------------------------------------------- state

    def snapshot(self) -> dict:
        used = len(self.names)
        return {
            "names": list(self.names),
            "weight": self.weight[:used].tolist(),
            "attempts": self.attempts[:used].tolist(),
            "failures": self.failures[:used].tolist(),
            "bucket_attempts": sorted(self.bucket_attempts.items()),
            "bucket_failures": sorted([v, k, n] for (v, k), n in self.bucket_failures.items()),
            "cusum": self.cusum.snapshot(),
            "evicted": self.evicted,
        }

    def restore(self, state: dict, parent: np.ndarray) -> None:
        names = state["names"]
        if len(names) > self.capacity:
            raise ValueError(f"{self.dimension}: {len(names)} slices in the state, capacity "
                             f"{self.capacity}")
        used = len(names)
        self.names = list(names)
        self.row_of = {name: row for row, name in enumerate(names)}
        for field in ("weight", "attempts", "failures"):
            array = getattr(self, field)
            array[:] = 0.0
            if used:
                array[:used] = np.asarray(state[field], dtype=float).reshape(
                    (used,) + array.shape[1:])
        self.bucket_attempts = {value: int(n) for value, n in state["bucket_attempts"]}
        self.bucket_failures = {(value, int(k)): int(n) for value, k, n in state["bucket_failures"]}
        self.cusum.restore(state["cusum"])
        self.evicted = int(state["evicted"])
        self._list_deviant(parent, self._relearned())
