"""The built-in rollout guard: a plan step's treatment cohort against its control cohort, on
the step's own guard rules (``rollout.guard_rules``), by the sequential test of
``telemetry.stats`` (valid when asked every minute), from the per-minute cohort rollups.

Named in ``settings.ROLLOUT_GUARDS`` by default as ``telemetry.guards.step_guard``. The
periodic advance asks it every minute while a plan runs. It judges the plan's LIVE step (the
last one applied), from the minute it was applied: treatment = the cohorts whose configuration
has the plan's flag at the plan's value, control = those with any other value of it, over the
same minutes. Each rule says pass, fail or wait (a cohort under its minimum sample); the step
fails if any rule fails, waits if any waits, else passes. A step without rules passes.

For charts and the CLI (one plan, or one flag in one environment)::

    cohort_comparison(*, environment: str, flag: str, treatment: Any, since: datetime,
                      until: datetime | None = None,
                      rules: Sequence[Mapping[str, Any]] | None = None) -> Comparison
    plan_comparison(plan: RolloutPlan, *, now: datetime | None = None) -> Comparison | None

``rules`` None compares every built-in metric with the default rule (``guarded`` False on each);
``plan_comparison`` is None while no step of the plan is applied. A ``Comparison`` has
``state`` ("pass" | "fail" | "wait"), ``reason`` and ``metrics``: one ``MetricComparison`` per
rule with ``treatment`` and ``control`` (``Side``: ``n``, ``estimate``), ``threshold`` (the
tolerance in the metric's unit), ``interval`` (``stats.Interval``: ``difference``, ``low``,
``high`` — the always-valid confidence interval of treatment − control — ``statistic``,
``boundary``; None while a side is empty), ``state`` and ``reason``. ``as_dict()`` gives it
as JSON (what the audit entry and the webhook carry).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from rollout.guard_rules import COUNTER_PREFIX, METRICS, clean_rule, clean_rules
from rollout.models import RolloutPlan, RolloutStep
from rollout.services.plans import GuardVerdict

from .selectors import CohortMetrics, cohort_split, cohorts_merged
from .stats import ALPHA, Interval, Kind, Sample, compare

State = Literal["pass", "fail", "wait"]
P95 = 0.95


@dataclass(frozen=True)
class Side:
    n: int
    estimate: float | None


@dataclass(frozen=True)
class MetricComparison:
    metric: str
    rule: dict[str, Any]
    treatment: Side
    control: Side
    threshold: float | None  # how much worse (treatment − control) may be, in the metric's unit
    interval: Interval | None
    state: State
    reason: str
    guarded: bool
    detail: dict[str, Any] = field(default_factory=dict)  # e.g. the control's p95 in ms


@dataclass(frozen=True)
class Comparison:
    environment: str
    flag: str
    treatment_value: Any
    since: datetime
    until: datetime | None
    metrics: list[MetricComparison]
    alpha: float = ALPHA

    @property
    def state(self) -> State:
        states = {m.state for m in self.metrics if m.guarded}
        return "fail" if "fail" in states else "wait" if "wait" in states else "pass"

    @property
    def reason(self) -> str:
        state = self.state
        if state == "pass" and not any(m.guarded for m in self.metrics):
            return "no guard on this step"
        return "; ".join(m.reason for m in self.metrics if m.guarded and m.state == state)

    def as_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "flag": self.flag,
            "treatment_value": self.treatment_value,
            "since": self.since.isoformat(),
            "until": self.until.isoformat() if self.until else None,
            "alpha": self.alpha,
            "state": self.state,
            "reason": self.reason,
            "metrics": [asdict(m) for m in self.metrics],
        }


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _samples(
    metric: str, treatment: CohortMetrics, control: CohortMetrics
) -> tuple[Sample, Sample, dict[str, Any]]:
    """Each side's sample of ``metric`` (see rollout.guard_rules for the names)."""
    if metric.startswith("p95_"):
        name = metric.removeprefix("p95_").removesuffix("_ms")
        bound = control.quantile(name, P95)

        def slower(side: CohortMetrics) -> Sample:
            histogram = side.latency.get(name, {})
            above = sum(count for b, count in histogram.items() if bound is not None and b > bound)
            return Sample(n=sum(histogram.values()), events=above, kind="proportion")

        detail = {"control_p95_ms": bound, "treatment_p95_ms": treatment.quantile(name, P95)}
        return slower(treatment), slower(control), detail
    kind: Kind = "count"
    if metric == "error_rate":
        counter, kind = "errors", "proportion"
    elif metric == "degraded_rate":
        counter, kind = "degraded_to_legacy", "proportion"
    elif metric == "requests_per_execution":
        counter = ""
    else:
        counter = metric.removeprefix(COUNTER_PREFIX)

    def per_execution(side: CohortMetrics) -> Sample:
        events = side.requests if not counter else side.counters.get(counter, 0)
        return Sample(n=side.executions, events=events, kind=kind)

    return per_execution(treatment), per_execution(control), {}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def judge(
    metric_rule: Mapping[str, Any], treatment: CohortMetrics, control: CohortMetrics
) -> MetricComparison:
    """One rule's verdict on the two cohorts (the rule already cleaned)."""
    rule = dict(metric_rule)
    metric, minimum = rule["metric"], rule["min_sample"]
    t, c, detail = _samples(metric, treatment, control)
    sides = Side(t.n, t.estimate), Side(c.n, c.estimate)
    if t.n < minimum or c.n < minimum:
        reason = f"{metric}: waiting for {minimum:,} a cohort (treatment {t.n:,}, control {c.n:,})"
        interval = compare(t, c, threshold=0.0, min_sample=minimum) if t.n and c.n else None
        return MetricComparison(metric, rule, *sides, None, interval, "wait", reason, True, detail)
    assert c.estimate is not None and t.estimate is not None  # both sides have units
    tolerance = rule["tolerance"] * (abs(c.estimate) if rule["tolerance_kind"] == "relative" else 1.0)
    higher = rule["worse"] == "higher"
    threshold = tolerance if higher else -tolerance
    interval = compare(t, c, threshold=threshold, min_sample=minimum)
    assert interval is not None
    worse = interval.low > threshold if higher else interval.high < threshold
    numbers = (
        f"treatment {_fmt(t.estimate)} (n={t.n:,}) vs control {_fmt(c.estimate)} (n={c.n:,}), "
        f"difference {_fmt(interval.difference)} in [{_fmt(interval.low)}, {_fmt(interval.high)}]"
    )
    if worse:
        limit = f"{'above' if higher else 'below'} the tolerance {_fmt(threshold)}"
        reason = f"{metric} worse in treatment: {numbers}, {limit}"
        return MetricComparison(metric, rule, *sides, threshold, interval, "fail", reason, True, detail)
    return MetricComparison(
        metric, rule, *sides, threshold, interval, "pass", f"{metric}: {numbers}", True, detail
    )


def cohort_comparison(
    *,
    environment: str,
    flag: str,
    treatment: Any,
    since: datetime,
    until: datetime | None = None,
    rules: Sequence[Mapping[str, Any]] | None = None,
) -> Comparison:
    """Treatment (cohorts with ``flag`` at ``treatment``) against control (``flag`` at any
    other value; cohorts that did not record the flag are left out) over the same minutes."""
    split = cohort_split(environment=environment, flag=flag, since=since, until=until)
    key = _canonical(treatment)
    treated = split.get(key, CohortMetrics())
    control = cohorts_merged([metrics for side, metrics in split.items() if side not in (key, "null")])
    if rules is None:
        judged = [_unguarded(judge(clean_rule({"metric": metric}), treated, control)) for metric in METRICS]
    else:
        judged = [judge(rule, treated, control) for rule in clean_rules(list(rules))]
    return Comparison(environment, flag, treatment, since, until, judged)


def _unguarded(comparison: MetricComparison) -> MetricComparison:
    return replace(comparison, guarded=False)


def live_step(plan: RolloutPlan) -> RolloutStep | None:
    """The step the plan's flag is at now: the last one applied."""
    return (
        plan.steps.select_related("environment").filter(applied_at__isnull=False).order_by("position").last()
    )


def plan_comparison(plan: RolloutPlan, *, now: datetime | None = None) -> Comparison | None:
    """The live step's comparison on its own rules, since it was applied (None before any)."""
    step = live_step(plan)
    if step is None or step.applied_at is None:
        return None
    return cohort_comparison(
        environment=step.environment.key,
        flag=plan.flag.key,
        treatment=plan.value,
        since=step.applied_at,
        until=now,
        rules=step.guards,
    )


def step_guard(plan: RolloutPlan, step: RolloutStep | None = None) -> GuardVerdict:
    """The ROLLOUT_GUARDS entry: the live step's verdict (``step``, the next one, is not what
    is judged: a step is judged by what it did while it was live)."""
    comparison = plan_comparison(plan)
    if comparison is None or not any(m.guarded for m in comparison.metrics):
        return GuardVerdict(ok=True, reason="no guard on the live step")
    state = comparison.state
    return GuardVerdict(
        ok=state == "pass", reason=comparison.reason, wait=state == "wait", evidence=comparison.as_dict()
    )
