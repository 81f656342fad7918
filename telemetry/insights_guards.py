"""The cohort comparison and guard state the admin shows, from the built-in guard
(``telemetry.guards``): treatment against control per metric, each side's n and estimate (with
its own reading interval, ``insights_stats``), the difference with the guard's always-valid
interval, and each plan step's verdict (pass, fail, waiting for sample) with its numbers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rollout.guard_rules import METRICS, clean_rule, clean_rules
from rollout.models import RolloutPlan, RolloutStep

from .guards import MetricComparison, cohort_comparison, judge
from .insights_stats import Figure, figure, guard_label, metric_label
from .selectors import CohortMetrics, cohorts_merged
from .wire import canonical

STATES = {"pass": "pass", "fail": "fail", "wait": "waiting"}


@dataclass(frozen=True)
class Difference:
    """Treatment − control with the guard's always-valid 95 % interval (None: a side is empty)."""

    estimate: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True)
class Comparison:
    metric: str
    label: str
    treatment_label: str
    control_label: str
    treatment: Figure
    control: Figure
    difference: Difference
    state: str = ""  # pass | fail | waiting; "" where no guard is on it
    detail: str = ""

    @property
    def difference_note(self) -> str:
        """What the difference is of, where it is not the estimates' own difference: a latency
        guard compares the share of each side's units slower than the control's p95."""
        return "share slower than the control's p95" if self.metric.startswith("p95_") else ""


@dataclass(frozen=True)
class StepGuard:
    step: RolloutStep
    metric: str
    state: str  # pass | fail | waiting | pending | none
    detail: str
    rows: tuple[Comparison, ...] = ()


def _row(
    judged: MetricComparison,
    treated: CohortMetrics | None,
    control: CohortMetrics | None,
    labels: tuple[str, str],
    guarded: bool,
) -> Comparison:
    interval = judged.interval
    return Comparison(
        metric=judged.metric,
        # Each cohort's own figure when its metrics are given, else the guard's numbers.
        label=metric_label(judged.metric) if treated and control else guard_label(judged.metric),
        treatment_label=labels[0],
        control_label=labels[1],
        treatment=figure(judged.metric, treated)
        if treated
        else Figure(judged.treatment.n, judged.treatment.estimate),
        control=figure(judged.metric, control)
        if control
        else Figure(judged.control.n, judged.control.estimate),
        difference=Difference(
            interval.difference if interval else None,
            interval.low if interval else None,
            interval.high if interval else None,
        ),
        state=STATES[judged.state] if guarded else "",
        detail=judged.reason if guarded else "",
    )


def compare_split(
    *,
    flag: str,
    treatment: Any,
    split: Mapping[str, CohortMetrics],
    rules: Sequence[Mapping[str, Any]] | None = None,
) -> list[Comparison]:
    """The cohorts with ``flag`` at ``treatment`` against those with any other value of it (the
    guard's own definition), on ``rules`` (every built-in metric with the default rule when
    None, shown without a verdict). Empty when either side has no cohort."""
    key = canonical(treatment)
    others = [metrics for side, metrics in split.items() if side not in (key, "null")]
    if key not in split or not others:
        return []
    treated, control = split[key], cohorts_merged(others)
    labels = (f"{flag} = {key}", f"{flag} ≠ {key}")
    cleaned = clean_rules(list(rules)) if rules else [clean_rule({"metric": metric}) for metric in METRICS]
    return [_row(judge(rule, treated, control), treated, control, labels, bool(rules)) for rule in cleaned]


def flag_comparisons(*, flag: str, default: Any, split: Mapping[str, CohortMetrics]) -> list[Comparison]:
    """A flag page's comparison: each value the flag had in cohorts, other than its default
    (what an off flag serves), against the rest."""
    base = canonical(default)
    found = []
    for side in split:
        if side not in (base, "null"):
            found.extend(compare_split(flag=flag, treatment=json.loads(side), split=split))
    return found


def _rules_text(rules: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    for rule in clean_rules(list(rules)):
        tolerance = (
            f"{rule['tolerance'] * 100:g} %"
            if rule["tolerance_kind"] == "relative"
            else f"{rule['tolerance']:g}"
        )
        parts.append(
            f"{rule['metric']} no more than {tolerance} {rule['worse']} (min {rule['min_sample']:,} a cohort)"
        )
    return "; ".join(parts)


def step_guards(plan: RolloutPlan, steps: list[RolloutStep], *, now: datetime) -> list[StepGuard]:
    """Each step's guard state: an applied step with rules judged over the minutes it was live
    (from when it was applied to when the next one was, or now) as the guard judges it; a
    pending step with its rules; a step without rules says so. One query per judged step."""
    applied = [s for s in steps if s.applied_at is not None]
    found = []
    for step in steps:
        rules = list(getattr(step, "guards", None) or [])
        metric = str(rules[0].get("metric", "")) if rules and isinstance(rules[0], Mapping) else ""
        if not rules:
            found.append(StepGuard(step, "", "none", "no guard on this step"))
            continue
        if step.applied_at is None:
            found.append(
                StepGuard(step, metric, "pending", f"not applied yet; will guard {_rules_text(rules)}")
            )
            continue
        later = [s for s in applied if s.position > step.position]
        until = later[0].applied_at if later else now
        comparison = cohort_comparison(
            environment=step.environment.key,
            flag=plan.flag.key,
            treatment=plan.value,
            since=step.applied_at,
            until=until,
            rules=rules,
        )
        labels = (f"{plan.flag.key} = {canonical(plan.value)}", f"{plan.flag.key} ≠ {canonical(plan.value)}")
        rows = tuple(_row(m, None, None, labels, True) for m in comparison.metrics)
        found.append(StepGuard(step, metric, STATES[comparison.state], comparison.reason, rows))
    return found
