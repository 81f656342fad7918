"""Each cohort's own figure of a guard metric, with a normal-approximation 95 % interval, for
the admin's charts: a rate per execution as a binomial proportion, a count per execution as a
Poisson mean (the variances ``telemetry.stats`` assumes too, for the same reason: the SDK sends
sums, not sums of squares), a p95 latency as the histogram's bound without an interval.

Fixed-horizon intervals, drawn for reading one cohort: looked at every minute they cover less
than 95 % of the time. The difference between cohorts, which guards decide on, comes with the
guards' always-valid interval (``telemetry.guards``), not from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rollout.guard_rules import COUNTER_PREFIX

from .selectors import CohortMetrics

Z95 = 1.959963984540054
DEFAULT_METRIC = "error_rate"
LABELS = {
    "error_rate": "errors per execution",
    "degraded_rate": "degraded to legacy per execution",
    "requests_per_execution": "S3 requests per execution",
    "p95_hydrate_ms": "p95 hydrate latency (ms)",
    "p95_dehydrate_ms": "p95 dehydrate latency (ms)",
}


# What a latency guard itself compares (``telemetry.guards``): not each side's p95 in ms but the
# share of each side's operations slower than the control's p95.
GUARD_LABELS = {
    "p95_hydrate_ms": "share of hydrations slower than the control's p95",
    "p95_dehydrate_ms": "share of dehydrations slower than the control's p95",
}


def metric_label(metric: str) -> str:
    """What ``figure`` gives of ``metric``, per cohort."""
    if metric.startswith(COUNTER_PREFIX):
        return f"{metric.removeprefix(COUNTER_PREFIX)} per execution"
    return LABELS.get(metric, metric)


def guard_label(metric: str) -> str:
    """What the guard's own numbers of ``metric`` are (a verdict's treatment and control)."""
    return GUARD_LABELS.get(metric) or metric_label(metric)


@dataclass(frozen=True)
class Figure:
    """One cohort's estimate of a metric over ``n`` units, with its 95 % interval (None where
    there is none: no unit yet, or a latency quantile)."""

    n: int
    estimate: float | None
    low: float | None = None
    high: float | None = None


def figure(metric: str, cohort: CohortMetrics) -> Figure:
    """``metric`` (``rollout.guard_rules`` names) of one cohort."""
    if metric.startswith("p95_"):
        name = metric.removeprefix("p95_").removesuffix("_ms")
        histogram = cohort.latency.get(name, {})
        quantile = cohort.quantile(name, 0.95)
        return Figure(sum(histogram.values()), float(quantile) if quantile is not None else None)
    n = cohort.executions
    if n <= 0:
        return Figure(0, None)
    if metric == "error_rate":
        events, binomial = cohort.counters.get("errors", 0), True
    elif metric == "degraded_rate":
        events, binomial = cohort.counters.get("degraded_to_legacy", 0), True
    elif metric == "requests_per_execution":
        events, binomial = cohort.requests, False
    else:
        events, binomial = cohort.counters.get(metric.removeprefix(COUNTER_PREFIX), 0), False
    estimate = events / n
    if binomial and estimate <= 1:
        stderr = math.sqrt(estimate * (1 - estimate) / n)
        return Figure(n, estimate, max(0.0, estimate - Z95 * stderr), min(1.0, estimate + Z95 * stderr))
    stderr = math.sqrt(estimate / n)
    return Figure(n, estimate, max(0.0, estimate - Z95 * stderr), estimate + Z95 * stderr)
