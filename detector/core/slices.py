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
"""

from __future__ import annotations

import math

import numpy as np

from .sequential import Cusum

#: Slice dimensions: the event key's field and the failure evidence tuple's index.
SENDER, RESOLVER = "sender_domain", "resolver"


class SliceTable:
    """Space-Saving rows of one dimension, each with a baseline and a CUSUM per outcome.

    >>> table = SliceTable("resolver", capacity=2, n_outcomes=3, decay=0.99,
    ...                    prior_attempts=20.0, warmup_attempts=10.0)
    >>> rows = table.rows_of({"res-a": 5, "res-b": 3, "res-c": 1}, pinned=set())
    >>> table.names, table.evicted       # res-c replaced res-b, the less busy one
    (['res-a', 'res-c'], 1)
    """

    def __init__(self, dimension: str, capacity: int, n_outcomes: int, decay: float,
                 prior_attempts: float, warmup_attempts: float) -> None:
        self.dimension = dimension
        self.capacity = capacity
        self.n_outcomes = n_outcomes
        self.decay = decay
        self.prior_attempts = prior_attempts
        self.warmup_attempts = warmup_attempts
        self.names: list[str | None] = []
        self.row_of: dict[str, int] = {}
        self.weight = np.zeros(capacity)          # Space-Saving counts (decayed attempts)
        self.attempts = np.zeros((capacity, n_outcomes))   # learned, decayed, per outcome
        self.failures = np.zeros((capacity, n_outcomes))
        self.cusum = Cusum(capacity * n_outcomes)
        self.bucket_attempts = np.zeros(capacity)
        self.bucket_failures = np.zeros((capacity, n_outcomes))
        self.evicted = 0

    # ------------------------------------------------------------------ rows

    def rows_of(self, counts: dict[str, int], pinned: set[int]) -> np.ndarray:
        """The row of each value of one step's ``{value: attempts}``, admitting new values."""
        rows = np.empty(len(counts), dtype=np.int64)
        row_of, weight = self.row_of, self.weight
        for i, (value, attempts) in enumerate(counts.items()):
            row = row_of.get(value)
            if row is None:
                row = self._admit(value, pinned)
            weight[row] += attempts
            rows[i] = row
        return rows

    def _admit(self, value: str, pinned: set[int]) -> int:
        if len(self.names) < self.capacity:
            row = len(self.names)
            self.names.append(value)
        else:
            weights = self.weight.copy()
            if pinned:
                weights[list(pinned)] = np.inf
            row = int(np.argmin(weights))
            del self.row_of[self.names[row]]
            self.names[row] = value
            self.evicted += 1
            # The newcomer inherits the count it displaced (Space-Saving's overestimate).
            self.attempts[row] = 0.0
            self.failures[row] = 0.0
            self.bucket_attempts[row] = 0.0
            self.bucket_failures[row] = 0.0
            n = self.n_outcomes
            self.cusum.reset(np.arange(row * n, (row + 1) * n))
        self.row_of[value] = row
        return row

    def live(self) -> int:
        """Rows in use: the number of slices being watched in this dimension."""
        return len(self.names)

    # ------------------------------------------------------------- baselines

    def rates(self, rows: np.ndarray, parent: np.ndarray) -> np.ndarray:
        """Baseline rates ``(len(rows), n_outcomes)``: own history shrunk toward ``parent``."""
        m = self.prior_attempts
        shrunk = (self.failures[rows] + m * parent) / (self.attempts[rows] + m)
        return np.maximum(shrunk, 0.5 * parent)

    def warm(self, rows: np.ndarray) -> np.ndarray:
        return self.attempts[rows] >= self.warmup_attempts

    def count(self, rows: np.ndarray, attempts: np.ndarray, fail_rows: np.ndarray,
              fail_outcomes: np.ndarray, fail_counts: np.ndarray) -> None:
        """Add one step's counts to the bucket being gathered for the baselines."""
        np.add.at(self.bucket_attempts, rows, attempts)
        np.add.at(self.bucket_failures, (fail_rows, fail_outcomes), fail_counts)

    def learn(self, learn_mask: np.ndarray) -> None:
        """Fold the bucket into every (row, outcome) of ``learn_mask``; fade the Space-Saving
        counts. Outcomes left out (elevated or anomalous) keep their baseline as it was."""
        decay = self.decay
        attempts = self.bucket_attempts[:, None]
        self.attempts = np.where(learn_mask, self.attempts * decay + attempts, self.attempts)
        self.failures = np.where(learn_mask, self.failures * decay + self.bucket_failures,
                                 self.failures)
        self.weight *= decay
        self.bucket_attempts[:] = 0.0
        self.bucket_failures[:] = 0.0

    def fade(self, buckets: int) -> None:
        """Forget ``buckets`` empty buckets at once (a gap in the data)."""
        factor = self.decay ** buckets
        self.attempts *= factor
        self.failures *= factor
        self.weight *= factor

    # ----------------------------------------------------------------- state

    def snapshot(self) -> dict:
        used = len(self.names)
        return {
            "names": list(self.names),
            "weight": self.weight[:used].tolist(),
            "attempts": self.attempts[:used].tolist(),
            "failures": self.failures[:used].tolist(),
            "bucket_attempts": self.bucket_attempts[:used].tolist(),
            "bucket_failures": self.bucket_failures[:used].tolist(),
            "cusum": self.cusum.snapshot(),
            "evicted": self.evicted,
        }

    def restore(self, state: dict) -> None:
        names = state["names"]
        if len(names) > self.capacity:
            raise ValueError(f"{self.dimension}: {len(names)} slices in the state, capacity "
                             f"{self.capacity}")
        used = len(names)
        self.names = list(names)
        self.row_of = {name: row for row, name in enumerate(names)}
        for field in ("weight", "attempts", "failures", "bucket_attempts", "bucket_failures"):
            array = getattr(self, field)
            array[:] = 0.0
            if used:
                array[:used] = np.asarray(state[field], dtype=float).reshape(
                    (used,) + array.shape[1:])
        self.cusum.restore(state["cusum"])
        self.evicted = int(state["evicted"])


def learn_score_nats(learn_max_score: float) -> float:
    """The CUSUM statistic (nats) above which a slice's outcome is not learned: the same
    evidence as the outcome-wide ``learn_max_score`` (a -log10 tail probability)."""
    return learn_max_score * math.log(10.0)
