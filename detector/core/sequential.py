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

#: Excess failure rates (absolute) of the charts' alternatives: from the smallest rise worth a
#: page (one code in 200) to an outage of a third of the traffic.
EXCESSES = (0.005, 0.02, 0.08, 0.3)
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


def coefficients(baseline: float, min_lift: float) -> tuple[tuple[float, float], ...]:
    """Per chart, the LLR of one failure and of one success against ``baseline``. A baseline
    changes once a bucket, so callers keep these for the bucket.

    A step of 100 attempts with 30 failures against a baseline of 0.1 %, per chart:

    >>> [round(30 * f + 70 * s, 1) for f, s in coefficients(0.001, min_lift=2.0)]
    [53.4, 89.9, 126.0, 146.2]
    """
    # min() and max() spelt as comparisons, which pick the same values: this runs once a bucket
    # for every live slice, and the builtins' calls were about half its cost.
    p0 = _P_MIN if _P_MIN > baseline else baseline
    p0 = _P_MAX if _P_MAX < p0 else p0
    log, log1p = math.log, math.log1p
    log_p0, log_q0 = log(p0), log1p(-p0)
    lifted = p0 * min_lift
    ratios = []
    for excess in EXCESSES:
        p1 = p0 + excess
        p1 = lifted if lifted > p1 else p1
        p1 = _P_MAX if _P_MAX < p1 else p1
        ratios.append((log(p1) - log_p0, log1p(-p1) - log_q0))
    return tuple(ratios)


class Cusum:
    """Multi-chart CUSUM statistics and runs of many keys, kept only while above zero.

    A key's entry holds, per chart, ``[statistic, run start, run attempts, run failures]``: each
    chart's run starts at the step its statistic left zero (its own estimate of the change
    point), so the evidence an alarm reports and its guards check is that of the chart that
    reached the threshold, not diluted by a smaller chart's older, longer run. A key whose every
    chart is at zero has no entry, so a million quiet keys cost nothing, and a step with no
    failure cannot raise a statistic (its LLR is negative), so it skips quiet keys.

    >>> cusum, ratios = Cusum(), coefficients(0.001, min_lift=2.0)
    >>> for step in range(3):
    ...     _ = cusum.update(1, 60, 6, ratios, step_start=step * 10.0)
    ...     _ = cusum.update(0, 60, 0, ratios, step_start=step * 10.0)
    >>> round(cusum.statistic(1), 1), cusum.statistic(0), cusum.run(1)
    (65.6, 0.0, (0.0, 180, 18))
    """

    def __init__(self) -> None:
        self.runs: dict[int, list[list[float]]] = {}

    def update(self, key: int, attempts: float, failures: float,
               ratios: tuple[tuple[float, float], ...], step_start: float) -> float:
        """Fold one step into ``key``, with the ``coefficients`` of its baseline; its largest
        chart statistic (nats) afterwards."""
        charts = self.runs.get(key)
        if charts is None:
            if not failures:
                return 0.0
            charts = [[0.0, step_start, 0.0, 0.0] for _ in range(CHARTS)]
        best = 0.0
        if not failures:
            # Most steps of a live run have no failure: only the successes' term, and a chart
            # above zero only adds the attempts (adding 0.0 leaves a statistic as it is).
            for chart, (_, per_success) in zip(charts, ratios):
                value = chart[0] + attempts * per_success
                if value > 0.0:
                    chart[0] = value
                    chart[2] += attempts
                    if value > best:
                        best = value
                else:
                    chart[0] = 0.0
            if best <= 0.0:
                del self.runs[key]
            return best
        successes = attempts - failures
        for chart, (per_failure, per_success) in zip(charts, ratios):
            before = chart[0]
            value = before + failures * per_failure + successes * per_success
            if value > 0.0:
                if before > 0.0:
                    chart[2] += attempts
                    chart[3] += failures
                else:
                    chart[1:] = [step_start, attempts, failures]
                chart[0] = value
                if value > best:
                    best = value
            else:
                chart[0] = 0.0
        if best > 0.0:
            self.runs[key] = charts
        else:
            self.runs.pop(key, None)
        return best

    def statistic(self, key: int) -> float:
        """The largest chart statistic of ``key`` (nats)."""
        charts = self.runs.get(key)
        return max(chart[0] for chart in charts) if charts is not None else 0.0

    def run(self, key: int) -> tuple[float, float, float]:
        """``(start, attempts, failures)`` of the run of the key's largest chart (zeros when
        it has none)."""
        charts = self.runs.get(key)
        if charts is None:
            return 0.0, 0.0, 0.0
        _, start, attempts, failures = max(charts, key=lambda chart: chart[0])
        return start, attempts, failures

    def reset(self, keys) -> None:
        for key in keys:
            self.runs.pop(key, None)

    def reset_all(self) -> None:
        self.runs.clear()

    def snapshot(self) -> list:
        return [[key, charts] for key, charts in sorted(self.runs.items())]

    def restore(self, rows: list) -> None:
        self.runs = {int(key): [[float(v) for v in chart] for chart in charts]
                     for key, charts in rows}
