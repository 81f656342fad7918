"""Treatment against control, decided by a test that stays valid when it is looked at every
minute: the mixture sequential probability ratio test (mSPRT) for a difference of two means,
with a normal mixing distribution, and the always-valid confidence interval it inverts to
(Johari, Koomen, Pekelis, Walsh: "Always valid inference", Operations Research 2022; the test
Optimizely runs). Standard library only.

Why this test: a plan's guard is asked every minute while a step soaks, and stops the step the
first time it sees harm. A fixed-horizon test (a z-test at 95 %) checked every minute would
cross its line by chance far more often than 5 % of the time; the mSPRT's likelihood ratio is
a martingale under the null, so by Ville's inequality the chance that it EVER exceeds 1/α is
at most α, however often it is checked. Its interval is wider than a one-look interval (about
3.7 standard errors at the sample it is tuned for, instead of 1.96) and narrows like
sqrt(log n / n) after.

For an estimated difference ``d`` with variance ``V`` (σ²_T/n_T + σ²_C/n_C) and a normal
mixture of variance τ² over the true difference, the ratio against "the difference is δ" is

    Λ = sqrt(V / (V + τ²)) · exp(τ² (d − δ)² / (2 V (V + τ²)))

and the interval, every δ whose Λ stays under 1/α, is

    d ± sqrt(V (V + τ²) / τ² · (2 ln(1/α) + ln((V + τ²) / V))).

τ² is set to the V the two cohorts would have at the guard's minimum sample each, so the
interval is tightest around when a decision first becomes possible. The per-execution
variances are plugged in from the data (normal approximation: valid as samples grow, which
the minimum sample is there to ensure).

What the SDK reports are sums per cohort and minute, not sums of squares, so the variance of
a per-execution rate is ASSUMED from its kind:

* a proportion (errors or degraded-to-legacy events per execution; the share of hydrations
  slower than a bound): binomial, p(1 − p), with p shrunk to (x + ½) / (n + 1) so that a
  cohort with no event yet still has a variance;
* a count per execution (store requests, any other counter): Poisson, variance = mean. Store
  requests per execution are if anything less dispersed than Poisson (an execution makes a
  near-fixed number), so the test is conservative for them; byte counters are far MORE
  dispersed (a mean of 10 kB has a variance of far more than 10 kB²) and a Poisson variance
  understates their noise. A true variance needs the sum of squares per cohort, which the SDK
  does not send: that is missing, not assumed away — guard byte counters with a generous
  tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

ALPHA = 0.05  # the chance, over the whole life of a step, that a guard fails a harmless step
Kind = Literal["proportion", "count"]


@dataclass(frozen=True)
class Sample:
    """One cohort's side of one metric: ``events`` over ``n`` units (executions, or hydrations
    for a latency share)."""

    n: int
    events: float
    kind: Kind

    @property
    def estimate(self) -> float | None:
        return self.events / self.n if self.n else None

    @property
    def variance(self) -> float:
        """The assumed variance of one unit's value (see the module's docstring)."""
        shrunk = (self.events + 0.5) / (self.n + 1)
        if self.kind == "proportion" and shrunk < 1:
            return shrunk * (1 - shrunk)
        return shrunk  # Poisson (and a "proportion" above 1: several events per unit)


@dataclass(frozen=True)
class Interval:
    """The difference treatment − control and its always-valid confidence interval, with the
    test of it against a threshold: ``statistic`` is ln Λ against "the difference is the
    threshold"; reaching ``boundary`` = ln(1/α) rejects that, on the side ``difference`` is
    on (the same decision as the interval leaving the threshold behind)."""

    difference: float
    low: float
    high: float
    standard_error: float
    statistic: float
    boundary: float


def mixture_variance(treatment: Sample, control: Sample, min_sample: int) -> float:
    """τ²: the difference's variance with ``min_sample`` units on each side."""
    m = max(1, min_sample)
    return (treatment.variance + control.variance) / m


def compare(
    treatment: Sample, control: Sample, *, threshold: float, min_sample: int, alpha: float = ALPHA
) -> Interval | None:
    """The always-valid interval for treatment − control, and the mSPRT statistic against
    "the difference is ``threshold``". None when a side has no unit yet."""
    if treatment.estimate is None or control.estimate is None:
        return None
    difference = treatment.estimate - control.estimate
    v = treatment.variance / treatment.n + control.variance / control.n
    tau2 = mixture_variance(treatment, control, min_sample)
    radius = math.sqrt(v * (v + tau2) / tau2 * (2 * math.log(1 / alpha) + math.log((v + tau2) / v)))
    gap = difference - threshold
    log_ratio = 0.5 * math.log(v / (v + tau2)) + tau2 * gap * gap / (2 * v * (v + tau2))
    return Interval(
        difference=difference,
        low=difference - radius,
        high=difference + radius,
        standard_error=math.sqrt(v),
        statistic=log_ratio,
        boundary=math.log(1 / alpha),
    )
