"""The online model of OTP failure rates: a forgetting beta-binomial baseline and its tail test.

For each key *k* (a resolution outcome, or ``ALL``) the model keeps the failure rate of OTP mail
as ``failures with outcome k / all OTP attempts``: normalising by every OTP attempt, not by the
attempts of outcome *k*, means an OTP volume surge with unchanged failure rates moves nothing.

**Baseline.** A conjugate Beta posterior over the rate, with exponential forgetting (a
"power prior" / discounted beta-binomial, West & Harrison 1997, *Bayesian Forecasting and Dynamic
Models*, ch. 10; Smith 1979): at each completed bucket the pseudo-counts decay by
``lambda = 2 ** (-bucket_s / half_life_s)`` and add the bucket's failures and successes. A fixed
weak prior ``Beta(prior_failures, prior_successes)`` is added on top so a key that never failed
still has a small, non-zero expected rate. A key's baseline is frozen while it is anomalous (for
at most ``max_freeze_s``) and skips any bucket that scored ``learn_max_score`` or more, so an
incident's onset does not raise the baseline that judges it.

**Test.** Given a window with ``n`` attempts and ``x`` failures, the score is
``-log10 P(X >= x)`` under the beta-binomial posterior predictive ``BetaBin(n, a, b)``: exact at
low volume (no normal approximation: 3 failures of 40 at night are judged as the discrete event
they are) and honest about the baseline's own uncertainty. The tail is summed from ``x`` upward
with the pmf's ratio recurrence in log space (Johnson, Kemp & Kotz 2005, *Univariate Discrete
Distributions*, 3rd ed., §6.7.2). Cheap guards run first, for every key: a minimum number of
failures, a minimum lift over the baseline and a minimum excess rate, so the exact tail is
computed only for the rare windows that could be incidents.
"""

from __future__ import annotations

import math

import numpy as np

#: Scores are capped here (a tail below 1e-300 is "certain"); keeps JSON finite.
MAX_SCORE = 300.0


def beta_binomial_sf(x: int, n: int, a: float, b: float) -> float:
    """``P(X >= x)`` for ``X ~ BetaBinomial(n, a, b)``, summed exactly from ``x`` upward.

    >>> round(beta_binomial_sf(0, 10, 1.0, 1.0), 12)
    1.0
    >>> round(beta_binomial_sf(10, 10, 1.0, 1.0), 6)   # uniform on 0..10
    0.090909
    >>> beta_binomial_sf(5, 100, 1.0, 10_000.0) < 1e-9
    True
    """
    if x <= 0:
        return 1.0
    if x > n:
        return 0.0
    # log pmf(x) = log C(n, x) + log B(x + a, n - x + b) - log B(a, b)
    lg = math.lgamma
    log_pmf = (lg(n + 1) - lg(x + 1) - lg(n - x + 1)
               + lg(x + a) + lg(n - x + b) - lg(n + a + b)
               - lg(a) - lg(b) + lg(a + b))
    term, total, k = 1.0, 1.0, x
    # Sum pmf(k)/pmf(x) for k = x..n; terms fall geometrically once past the mode.
    while k < n:
        term *= (n - k) / (k + 1) * (k + a) / (n - k - 1 + b)
        total += term
        k += 1
        if term < total * 1e-15:
            break
    return min(1.0, math.exp(log_pmf) * total)


def score_of(x: int, n: int, a: float, b: float) -> float:
    """``-log10`` of the beta-binomial upper tail, capped at ``MAX_SCORE``."""
    tail = beta_binomial_sf(x, n, a, b)
    if tail <= 0.0:
        return MAX_SCORE
    return min(MAX_SCORE, max(0.0, -math.log10(tail)))


class Baseline:
    """Forgetting beta-binomial baselines for several keys at once.

    ``failures`` and ``successes`` are the decayed pseudo-counts per key; the prior is added when
    they are read, so it never decays away.

    >>> base = Baseline(n_keys=2, half_life_s=3600, bucket_s=60, prior=(0.5, 500.0))
    >>> for _ in range(120):
    ...     base.learn(attempts=100, failures=np.array([1, 0]), learn_mask=np.array([True, True]))
    >>> [round(float(r), 4) for r in base.rate()]    # 1 % observed, pulled a little to the prior
    [0.0094, 0.0001]
    """

    def __init__(self, n_keys: int, half_life_s: float, bucket_s: float,
                 prior: tuple[float, float]) -> None:
        self.decay = 0.5 ** (bucket_s / half_life_s)
        self.prior_failures, self.prior_successes = prior
        self.failures = np.zeros(n_keys)
        self.successes = np.zeros(n_keys)

    def params(self) -> tuple[np.ndarray, np.ndarray]:
        """Beta parameters ``(a, b)`` per key."""
        return self.failures + self.prior_failures, self.successes + self.prior_successes

    def rate(self) -> np.ndarray:
        a, b = self.params()
        return a / (a + b)

    def learn(self, attempts: int, failures: np.ndarray, learn_mask: np.ndarray) -> None:
        """Fold one bucket into the keys where ``learn_mask`` is true; others are untouched."""
        decay = self.decay
        self.failures = np.where(learn_mask, self.failures * decay + failures, self.failures)
        self.successes = np.where(
            learn_mask, self.successes * decay + (attempts - failures), self.successes)

    def fade(self, buckets: int) -> None:
        """Forget ``buckets`` empty buckets at once (a gap in the data)."""
        factor = self.decay ** buckets
        self.failures *= factor
        self.successes *= factor

    def snapshot(self) -> dict:
        return {"failures": self.failures.tolist(), "successes": self.successes.tolist()}

    def restore(self, state: dict) -> None:
        self.failures = np.asarray(state["failures"], dtype=float)
        self.successes = np.asarray(state["successes"], dtype=float)
