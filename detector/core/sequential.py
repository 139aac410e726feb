"""Sequential evidence: a multi-chart CUSUM of the binomial log-likelihood ratio, per key.

Fixed windows trade speed for sensitivity: a minute is fast but blind to a small rise, fifteen
minutes sees a small rise but only after a quarter of an hour. Page's CUSUM (Page 1954) has no
window: at every step it adds the step's log-likelihood ratio of "the failure rate rose to p1"
against "it is the baseline p0" and floors the sum at zero,

    S_t = max(0, S_{t-1} + x_t log(p1/p0) + (n_t - x_t) log((1-p1)/(1-p0))),

for a step with ``n_t`` attempts and ``x_t`` failures. A sharp spike crosses the threshold ``h``
in the first step that carries enough evidence, a slow ramp as soon as its cumulative excess does.
Among all tests with the same false-alarm rate it minimises the worst-case detection delay
(Lorden 1971; Moustakides 1986). Its false-alarm rate can be stated: the mean number of steps to
a false alarm when nothing changed is at least ``e^h`` (Lorden 1971, Thm. 2; Siegmund 1985,
*Sequential Analysis*, ch. II), so a key judged every ``step_s`` raises at most
``86400 / step_s * e^-h`` false alarms a day.

The size of a change is not known in advance, so several charts run side by side, one per
alternative ``p1 = max(p0 + delta, min_lift * p0)`` for excesses ``delta`` of 0.5, 2, 8 and 30
percentage points (a multi-chart CUSUM, Tartakovsky et al. 2006, *Statistical Methodology* 3:
252-293): the key alarms when any chart reaches ``h``, and ``h`` pays for the charts with
``log(charts)`` (a union bound). The smallest excess is the smallest rise worth a page, so rises
below it drift the charts down, not up. ``threshold`` turns a target number of false alarms per
day over ``keys`` keys into ``h``: the multiplicity control of many keys is the same union bound.

Each key also keeps its *run*: the step at which its statistic last left zero (the CUSUM's own
estimate of the change point) and the attempts and failures since, which are the evidence an
event reports and what the guards (minimum failures, lift, excess) are checked on.
"""

from __future__ import annotations

import math

import numpy as np

#: Excess failure rates (absolute) of the charts' alternatives: from the smallest rise worth a
#: page (one code in 200) to an outage of a third of the traffic.
EXCESSES = np.array([0.005, 0.02, 0.08, 0.3])
CHARTS = len(EXCESSES)
#: Rates are kept inside (0, 1) so that every logarithm is finite.
_P_MIN, _P_MAX = 1e-9, 1.0 - 1e-6


def threshold(false_alarms_per_day: float, keys: int, step_s: float) -> float:
    """The CUSUM threshold ``h`` (nats) for at most ``false_alarms_per_day`` over ``keys`` keys.

    >>> round(threshold(0.05, 12, 10), 1)      # the outcome-wide keys, one false alarm in 20 days
    15.9
    """
    steps_per_day = 86400.0 / step_s
    return math.log(CHARTS * max(1, keys) * steps_per_day / false_alarms_per_day)


def log_likelihood_ratios(attempts: np.ndarray, failures: np.ndarray, baseline: np.ndarray,
                          min_lift: float) -> np.ndarray:
    """Per key (rows) and chart (columns): the step's LLR of each alternative against ``baseline``.

    >>> llr = log_likelihood_ratios(np.array([100.0]), np.array([30.0]), np.array([0.001]), 2.0)
    >>> [round(float(v), 1) for v in llr[0]]
    [53.4, 89.9, 126.0, 146.2]
    """
    p0 = np.clip(baseline, _P_MIN, _P_MAX)[:, None]
    p1 = np.clip(np.maximum(p0 + EXCESSES, p0 * min_lift), _P_MIN, _P_MAX)
    x = failures[:, None]
    return x * np.log(p1 / p0) + (attempts[:, None] - x) * (np.log1p(-p1) - np.log1p(-p0))


class Cusum:
    """Multi-chart CUSUM statistics and runs for ``n_keys`` keys, updated a few keys at a time.

    >>> cusum = Cusum(n_keys=2)
    >>> for step in range(3):
    ...     _ = cusum.update(np.array([0, 1]), np.array([60.0, 60.0]), np.array([0.0, 6.0]),
    ...                  np.array([0.001, 0.001]), min_lift=2.0, step_start=step * 10.0)
    >>> [round(float(s), 1) for s in cusum.statistic()], cusum.run_failures.tolist()
    ([0.0, 65.6], [0.0, 18.0])
    >>> float(cusum.run_start[1])
    0.0
    """

    def __init__(self, n_keys: int) -> None:
        self.stat = np.zeros((n_keys, CHARTS))
        self.run_start = np.zeros(n_keys)
        self.run_attempts = np.zeros(n_keys)
        self.run_failures = np.zeros(n_keys)

    def update(self, keys: np.ndarray, attempts: np.ndarray, failures: np.ndarray,
               baseline: np.ndarray, min_lift: float, step_start: float) -> np.ndarray:
        """Fold one step into ``keys``; returns their largest chart statistic afterwards."""
        before = self.stat[keys]
        after = np.maximum(0.0, before + log_likelihood_ratios(attempts, failures, baseline,
                                                               min_lift))
        self.stat[keys] = after
        was_zero = ~before.any(axis=1)
        live = after.any(axis=1)
        new_run = live & was_zero
        # A run starts at the step its statistic left zero and ends when every chart is back.
        self.run_start[keys[new_run]] = step_start
        self.run_attempts[keys] = np.where(live, np.where(new_run, 0.0, self.run_attempts[keys])
                                           + attempts, 0.0)
        self.run_failures[keys] = np.where(live, np.where(new_run, 0.0, self.run_failures[keys])
                                           + failures, 0.0)
        return after.max(axis=1)

    def statistic(self) -> np.ndarray:
        """The largest chart statistic of every key (nats)."""
        return self.stat.max(axis=1)

    def reset(self, keys) -> None:
        self.stat[keys] = 0.0
        self.run_attempts[keys] = 0.0
        self.run_failures[keys] = 0.0

    def snapshot(self, keys=None) -> list:
        """``[key, [stats...], run_start, run_attempts, run_failures]`` of every live key."""
        live = np.flatnonzero(self.stat.any(axis=1)) if keys is None else keys
        return [[int(k), self.stat[k].tolist(), float(self.run_start[k]),
                 float(self.run_attempts[k]), float(self.run_failures[k])] for k in live]

    def restore(self, rows: list) -> None:
        self.stat[:] = 0.0
        self.run_attempts[:] = 0.0
        self.run_failures[:] = 0.0
        for key, stats, start, attempts, failures in rows:
            self.stat[key] = stats
            self.run_start[key] = start
            self.run_attempts[key] = attempts
            self.run_failures[key] = failures
