"""What the rollout admin shows of telemetry, read through settings so that rollout never
imports telemetry: ``ROLLOUT_FLAG_INSIGHTS`` (``flag_insights``: per environment, when the
flag was last evaluated, its exposures over time per variant/value, and the cohort comparison
for the state bag's flags) and ``ROLLOUT_PLAN_INSIGHTS`` (``plan_insights``: the guarded
metric per cohort over time in the plan's current environment, and each step's guard state).

Every read is bounded by the chosen window (``insights_charts.WINDOWS``) on the rollups'
(environment, flag, minute) index; a flag page costs two queries per environment plus one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rollout.guard_rules import clean_rules
from rollout.models import Flag, RolloutPlan, RolloutStep

from .activity import flag_activity
from .insights_charts import WINDOWS, LineChart, SeriesData, Window, line_chart, window_of
from .insights_guards import Comparison, StepGuard, compare_split, flag_comparisons, step_guards
from .insights_stats import DEFAULT_METRIC, figure, metric_label
from .models import CohortRollup, EvaluationRollup
from .selectors import CohortMetrics
from .sketch import histogram_merge, sketch_estimate, sketch_merge
from .wire import canonical


@dataclass(frozen=True)
class ExposureTotal:
    label: str
    css: str
    evaluations: int
    units: float | None

    @property
    def evaluations_text(self) -> str:
        return f"{self.evaluations:,}"

    @property
    def units_text(self) -> str:
        return f"≈ {self.units:,.0f}" if self.units is not None else "not tracked"


@dataclass
class EnvironmentInsights:
    environment: str
    last_evaluated: datetime | None
    reporting_since: datetime | None
    chart: LineChart
    totals: list[ExposureTotal]
    comparisons: list[Comparison] = field(default_factory=list)


@dataclass
class FlagInsights:
    window: Window
    windows: list[Window]
    by_environment: dict[str, EnvironmentInsights]


def _series_label(variant: str | None, value_text: str) -> str:
    return f"{variant}: {value_text}" if variant else value_text


def exposure_charts(
    *, environments: list[str], flag: str, window: Window, now: datetime
) -> dict[str, tuple[LineChart, list[ExposureTotal]]]:
    """Per environment (one query for all), evaluations per (variant, value) and bucket, and
    distinct units (dashed) where SDKs tracked them, merged per bucket from the minutes'
    sketches; with totals over the window."""
    start = window.start(now)
    rows = EvaluationRollup.objects.filter(environment__in=environments, flag=flag, minute__gte=start)
    evaluations: dict[str, dict[tuple[Any, str], list[int]]] = {e: {} for e in environments}
    sketches: dict[str, dict[tuple[Any, str], list[list[bytes]]]] = {e: {} for e in environments}
    for environment, minute, variant, value, count, units in rows.values_list(
        "environment", "minute", "variant", "value", "evaluations", "units"
    ):
        index = window.index(start, minute)
        if index is None:
            continue
        key = (variant, value)
        evaluations[environment].setdefault(key, [0] * window.buckets)[index] += count
        if units:
            per_bucket = sketches[environment].setdefault(key, [[] for _ in range(window.buckets)])
            per_bucket[index].append(bytes(units))
    return {
        environment: _exposure_chart(evaluations[environment], sketches[environment], window, start)
        for environment in environments
    }


def _exposure_chart(
    evaluations: dict[tuple[Any, str], list[int]],
    sketches: dict[tuple[Any, str], list[list[bytes]]],
    window: Window,
    start: datetime,
) -> tuple[LineChart, list[ExposureTotal]]:
    keys = sorted(evaluations, key=lambda k: (-sum(evaluations[k]), str(k[0]), k[1]))
    series, totals = [], []
    for number, key in enumerate(keys):
        css = f"series-{number % 6}"
        label = _series_label(key[0], json.dumps(json.loads(key[1]), ensure_ascii=False))
        counts = evaluations[key]
        series.append(SeriesData(label, [float(c) if c else None for c in counts], css=css))
        units: float | None = None
        if key in sketches:
            merged = [sketch_merge(parts) if parts else None for parts in sketches[key]]
            estimates = [sketch_estimate(m) if m else None for m in merged]
            series.append(SeriesData(f"{label} (units)", estimates, dashed=True, css=css))
            units = sketch_estimate(sketch_merge(m for m in merged if m))
        totals.append(ExposureTotal(label, css, sum(counts), units))
    return line_chart(series, window=window, start=start), totals


def flag_insights(flag: Flag, environments: list[str], *, window: str | None, now: datetime) -> FlagInsights:
    """The flag page's telemetry, per environment key, in three queries whatever the number of
    environments: the activity, the flag's rollups, the cohorts that recorded it."""
    chosen = window_of(window)
    since = chosen.start(now)
    activity = flag_activity([flag.key])
    charts = exposure_charts(environments=environments, flag=flag.key, window=chosen, now=now)
    splits = cohort_splits(environments=environments, flag=flag.key, since=since)
    found = {}
    for environment in environments:
        chart, totals = charts[environment]
        found[environment] = EnvironmentInsights(
            environment=environment,
            last_evaluated=activity.last(flag.key, environment),
            reporting_since=activity.reporting_since.get(environment),
            chart=chart,
            totals=totals,
            comparisons=flag_comparisons(
                flag=flag.key, default=flag.default_value, split=splits.get(environment, {})
            ),
        )
    return FlagInsights(chosen, list(WINDOWS.values()), found)


def _add(metrics: CohortMetrics, reports: int, counters: dict[str, int], latency: dict[str, Any]) -> None:
    metrics.reports += reports
    for name, count in counters.items():
        metrics.counters[name] = metrics.counters.get(name, 0) + count
    for name, histogram in latency.items():
        parsed = {int(bound): count for bound, count in histogram.items()}
        metrics.latency[name] = histogram_merge([metrics.latency.get(name, {}), parsed])


def cohort_splits(
    *, environments: list[str], flag: str, since: datetime
) -> dict[str, dict[str, CohortMetrics]]:
    """``selectors.cohort_split`` for several environments in one query, reading only the
    cohorts that recorded ``flag`` (no other is in a comparison of it)."""
    splits: dict[str, dict[str, CohortMetrics]] = {}
    rows = CohortRollup.objects.filter(
        environment__in=environments, minute__gte=since, cohort__contains=json.dumps(flag)
    )
    for environment, cohort_text, reports, counters, latency in rows.values_list(
        "environment", "cohort", "reports", "counters", "latency"
    ):
        cohort = json.loads(cohort_text)
        if flag in cohort:
            side = splits.setdefault(environment, {}).setdefault(canonical(cohort[flag]), CohortMetrics())
            _add(side, reports, counters, latency)
    return splits


# Plans ---------------------------------------------------------------------------------------
@dataclass
class PlanInsights:
    environment: str | None
    metric: str
    metric_label: str
    window: Window
    windows: list[Window]
    chart: LineChart | None
    comparisons: list[Comparison]
    steps: list[StepGuard]
    why_empty: str = ""


def plan_step_in_view(steps: list[RolloutStep]) -> RolloutStep | None:
    """The step whose environment the plan is about now: the last applied, else the first."""
    applied = [s for s in steps if s.applied_at is not None]
    return applied[-1] if applied else (steps[0] if steps else None)


def cohort_metric_chart(
    *, environment: str, flag: str, treatment: Any, metric: str, window: Window, now: datetime
) -> LineChart:
    """``metric`` per bucket for the cohorts that had ``flag`` = ``treatment`` and for those
    with any other value of it (control, as the guard splits them), each with its 95 %
    interval as a band (none for a latency quantile)."""
    start = window.start(now)
    wanted = canonical(treatment)
    buckets: dict[str, list[CohortMetrics]] = {
        side: [CohortMetrics() for _ in range(window.buckets)] for side in ("treatment", "control")
    }
    rows = CohortRollup.objects.filter(
        environment=environment, minute__gte=start, cohort__contains=json.dumps(flag)
    )
    for minute, cohort_text, reports, counters, latency in rows.values_list(
        "minute", "cohort", "reports", "counters", "latency"
    ):
        index = window.index(start, minute)
        cohort = json.loads(cohort_text)
        if index is None or flag not in cohort:
            continue
        side = "treatment" if canonical(cohort[flag]) == wanted else "control"
        _add(buckets[side][index], reports, counters, latency)
    series = []
    for side, css in (("treatment", "series-1"), ("control", "series-0")):
        figures = [figure(metric, bucket) for bucket in buckets[side]]
        label = f"treatment ({flag} = {wanted})" if side == "treatment" else f"control ({flag} ≠ {wanted})"
        titles = []
        for f in figures:
            interval = f" [{f.low:.4g}, {f.high:.4g}]" if f.low is not None and f.high is not None else ""
            titles.append(f"{f.estimate:.4g}{interval}, n = {f.n:,}" if f.estimate is not None else "")
        series.append(
            SeriesData(
                label,
                [f.estimate for f in figures],
                low=[f.low for f in figures],
                high=[f.high for f in figures],
                css=css,
                titles=titles,
            )
        )
    return line_chart(series, window=window, start=start)


def plan_insights(
    plan: RolloutPlan, steps: list[RolloutStep], *, window: str | None, now: datetime
) -> PlanInsights:
    """A plan page's telemetry: each step's guard state, and in the environment of the step in
    view (the live one, else the first) the step's first guarded metric (errors per execution
    when it guards none) per cohort over the window, and every metric compared over it."""
    chosen = window_of(window)
    windows = list(WINDOWS.values())
    guards = step_guards(plan, steps, now=now)
    step = plan_step_in_view(steps)
    rules = clean_rules(list(getattr(step, "guards", None) or [])) if step is not None else []
    metric = rules[0]["metric"] if rules else DEFAULT_METRIC
    label = metric_label(metric)
    if step is None:
        return PlanInsights(None, metric, label, chosen, windows, None, [], guards, "No step yet.")
    environment = step.environment.key
    chart = cohort_metric_chart(
        environment=environment,
        flag=plan.flag.key,
        treatment=plan.value,
        metric=metric,
        window=chosen,
        now=now,
    )
    split = cohort_splits(environments=[environment], flag=plan.flag.key, since=chosen.start(now))
    found = compare_split(flag=plan.flag.key, treatment=plan.value, split=split.get(environment, {}))
    return PlanInsights(environment, metric, label, chosen, windows, chart, found, guards)
