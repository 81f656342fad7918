"""Telemetry on the rollout admin's pages: last evaluated and exposures over time per variant on
each environment tab of a flag's page, the cohort comparison of the state bag's flags, each
plan step's guard state with its numbers and the guarded metric per cohort over time; with the
settings empty, the pages work and say telemetry is not installed."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from rollout import services
from rollout.models import Environment, Flag, RolloutPlan
from telemetry.insights import cohort_metric_chart, flag_insights
from telemetry.insights_charts import WINDOWS, SeriesData, line_chart, window_of
from telemetry.models import CohortRollup, EvaluationRollup, FlagActivity
from telemetry.services import series_of
from telemetry.sketch import sketch_add, sketch_empty
from telemetry.wire import canonical

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 27, 12, 30, 20, tzinfo=UTC)


def sketch(names: list[str]) -> bytes:
    registers = sketch_empty()
    for name in names:
        sketch_add(registers, name)
    return bytes(registers)


def evaluations(
    minute: datetime,
    count: int,
    *,
    value: Any = True,
    variant: str | None = None,
    units: list[str] | None = None,
    environment: str = "prod",
    flag: str = "use_zstd",
) -> None:
    EvaluationRollup.objects.create(
        environment=environment,
        minute=minute.replace(second=0, microsecond=0),
        flag=flag,
        variant=variant,
        value=canonical(value),
        reason="rollout",
        series=series_of(flag, variant, canonical(value), "rollout"),
        evaluations=count,
        units=sketch(units) if units is not None else None,
    )


def cohort(minute: datetime, *, zstd: bool, executions: int, errors: int, environment: str = "prod") -> None:
    text = canonical({"use_zstd": zstd, "use_2pc": True})
    CohortRollup.objects.create(
        environment=environment,
        minute=minute.replace(second=0, microsecond=0),
        cohort=text,
        series=series_of(text),
        reports=1,
        counters={"executions": executions, "errors": errors, "requests_get": 2 * executions},
        latency={"hydrate": {"4": executions}},
    )


def text_of(response: Any) -> str:
    assert response.status_code == 200
    return html.unescape(response.content.decode())


# Charts ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("key", "points", "bucket"), [("1h", 60, 1), ("24h", 96, 15), ("7d", 84, 120)])
def test_windows__at_most_120_points_of_whole_minutes_ending_in_the_current_bucket(
    key: str, points: int, bucket: int
) -> None:
    window = WINDOWS[key]
    start = window.start(NOW)
    assert window.buckets == points <= 120
    assert window.bucket == timedelta(minutes=bucket)
    last = start + window.bucket * (window.buckets - 1)
    assert last <= NOW < last + window.bucket  # the current bucket is the last point
    assert window.index(start, NOW) == points - 1
    assert window.index(start, start - timedelta(minutes=1)) is None
    assert window_of(key) is window


def test_windows__unknown_choice__the_default_24_hours() -> None:
    assert window_of("2y") is WINDOWS["24h"] and window_of(None) is WINDOWS["24h"]


def test_line_chart__scaled_into_the_viewbox_with_a_band_and_titles() -> None:
    window = WINDOWS["1h"]
    start = window.start(NOW)
    values: list[float | None] = [None] * 60
    values[0], values[59] = 10.0, 40.0
    low = [v - 5 if v is not None else None for v in values]
    high = [v + 10 if v is not None else None for v in values]
    chart = line_chart([SeriesData("on", values, low=low, high=high)], window=window, start=start)
    (line,) = chart.lines
    assert [p.x for p in line.points] == [2.5, 297.5]  # the middle of the first and last slots
    assert line.band.split()[1] == "297.5,2.0" and chart.peak_label == "50"  # the band's top is the top
    assert line.points[0].y > line.points[1].y  # 10 drawn below 40
    assert len(line.band.split()) == 4 and "40" in line.points[1].title
    assert not chart.empty and line_chart([], window=window, start=start).empty


# The flag page --------------------------------------------------------------------------------
def test_flag_insights__exposures_per_value_bucketed_with_units_and_last_evaluated() -> None:
    # Given evaluations in prod over the last hour, units tracked for "true" only
    base = NOW - timedelta(minutes=30)
    evaluations(base, 100, value=True, units=[f"u{i}" for i in range(50)])
    evaluations(base + timedelta(minutes=1), 60, value=True, units=[f"u{i}" for i in range(25, 75)])
    evaluations(base, 900, value=False)
    evaluations(NOW - timedelta(hours=3), 5000, value=False)  # outside the 1 h window
    evaluations(base, 7, environment="dev")
    FlagActivity.objects.create(
        environment="prod", flag="use_zstd", first_evaluated_at=base, last_evaluated_at=base
    )
    flag = Flag.objects.get(key="use_zstd")
    # When the page's insights are read for 1 h
    with CaptureQueriesContext(connection) as queries:
        found = flag_insights(flag, ["dev", "staging", "prod"], window="1h", now=NOW)
    assert len(queries.captured_queries) == 3  # activity, evaluations, cohorts: any number of environments
    prod = found.by_environment["prod"]
    assert prod.last_evaluated == base and found.by_environment["dev"].last_evaluated is None
    assert [(t.label, t.evaluations) for t in prod.totals] == [("false", 900), ("true", 160)]
    assert prod.totals[0].units is None and 70 <= prod.totals[1].units <= 80  # 75 distinct, ± sketch error
    lines = {line.label: line for line in prod.chart.lines}
    assert set(lines) == {"false", "true", "true (units)"} and lines["true (units)"].dashed
    assert len(lines["true"].points) == 2 and "100" in lines["true"].points[0].title
    assert [t.evaluations for t in found.by_environment["dev"].totals] == [7]
    assert found.by_environment["staging"].chart.empty


def test_flag_page__each_tab_shows_last_evaluated_chart_and_window_choices(admin_client: Any) -> None:
    now = timezone.now()
    evaluations(now - timedelta(minutes=5), 1234, value=True, units=["a", "b"])
    FlagActivity.objects.create(
        environment="prod",
        flag="use_zstd",
        first_evaluated_at=now - timedelta(days=2),
        last_evaluated_at=now - timedelta(minutes=5),
    )
    FlagActivity.objects.create(
        environment="dev", flag="", first_evaluated_at=now - timedelta(days=1), last_evaluated_at=now
    )
    flag = Flag.objects.get(key="use_zstd")
    page = text_of(admin_client.get(reverse("admin:rollout_flag_change", args=[flag.pk]), {"window": "1h"}))
    prod = page.split('id="insights-prod"')[1].split('class="flag-history"')[0]
    assert re.search(r"Last evaluated:\s*<b><time", prod)
    assert 'id="exposures-prod"' in prod and "<polyline" in prod and "1,234" in prod
    assert '<b class="insight-window current" aria-current="true">1 h</b>' in prod
    assert 'href="?window=7d#env-prod"' in prod
    dev = page.split('id="insights-dev"')[1].split('class="flag-history"')[0]
    assert "<b>never</b> (SDKs of dev report evaluations since" in dev
    staging = page.split('id="insights-staging"')[1].split('class="flag-history"')[0]
    assert "<b>unknown</b>: no SDK of staging reports telemetry" in staging
    assert "nothing reported in this window" in staging


def test_flag_page__cohort_comparison_of_a_state_bag_flag(admin_client: Any) -> None:
    now = timezone.now()
    for minutes in range(1, 4):
        cohort(now - timedelta(minutes=minutes), zstd=True, executions=400, errors=40)
        cohort(now - timedelta(minutes=minutes), zstd=False, executions=4000, errors=40)
    flag = Flag.objects.get(key="use_zstd")
    page = text_of(admin_client.get(reverse("admin:rollout_flag_change", args=[flag.pk])))
    prod = page.split('id="insights-prod"')[1].split('class="flag-history"')[0]
    row = prod.split('data-metric="error_rate"')[1].split("</tr>")[0]
    assert "use_zstd = true" in row and "use_zstd ≠ true" in row
    assert "<b>0.1</b>" in row and "n = 1200" in row  # treatment: 120 errors in 1,200 executions
    assert "<b>0.01</b>" in row and "n = 12000" in row
    difference = re.search(r'class="difference">([-\d.]+) \[([-\d.]+), ([-\d.]+)\]', row)
    assert difference is not None
    estimate, low, high = map(float, difference.groups())
    assert estimate == pytest.approx(0.09) and 0 < low < estimate < high  # clearly worse
    assert (
        'data-metric="error_rate"' not in page.split('id="insights-dev"')[1].split('class="flag-history"')[0]
    )


def test_flag_page__without_telemetry_settings__works_and_says_so(admin_client: Any, settings: Any) -> None:
    settings.ROLLOUT_FLAG_INSIGHTS = ""
    settings.ROLLOUT_FLAG_ACTIVITY = ""
    flag = Flag.objects.get(key="use_zstd")
    page = text_of(admin_client.get(reverse("admin:rollout_flag_change", args=[flag.pk])))
    assert page.count("Telemetry is not installed (settings.ROLLOUT_FLAG_INSIGHTS is empty)") == 3
    assert "<polyline" not in page
    assert text_of(admin_client.get(reverse("admin:rollout_flag_changelist"))).count("stale-mark") == 0


# The plan page --------------------------------------------------------------------------------
def _running_plan(guards: list[dict[str, Any]], applied_at: datetime) -> RolloutPlan:
    prod = Environment.objects.get(key="prod")
    plan = services.plan_create(
        name="zstd",
        flag=Flag.objects.get(key="use_zstd"),
        value=True,
        steps=[
            {"environment": prod, "percentage": 10, "guards": guards},
            {"environment": prod, "percentage": 100},
        ],
        actor="ops",
    )
    # As the advance leaves it after applying the first step (the page only reads these).
    first = plan.steps.order_by("position")[0]
    plan.steps.filter(pk=first.pk).update(applied_at=applied_at, revision_number=2)
    RolloutPlan.objects.filter(pk=plan.pk).update(status=RolloutPlan.Status.RUNNING)
    return plan


def test_plan_page__failing_guard__state_and_numbers_per_step_and_the_metric_chart(admin_client: Any) -> None:
    now = timezone.now()
    plan = _running_plan([{"metric": "error_rate", "min_sample": 1000}], now - timedelta(minutes=10))
    for minutes in range(1, 6):
        cohort(now - timedelta(minutes=minutes), zstd=True, executions=400, errors=60)
        cohort(now - timedelta(minutes=minutes), zstd=False, executions=4000, errors=40)
    page = text_of(
        admin_client.get(reverse("admin:rollout_rolloutplan_change", args=[plan.pk]), {"window": "1h"})
    )
    table = page.split('id="plan-guard-states"')[1].split('id="plan-metric-chart"')[0]
    first_step, second_step = plan.steps.order_by("position")
    first = table.split(f'data-position="{first_step.position}"')[1].split("</tr>")[0]
    assert '<span class="guard-state guard-fail">fail</span>' in first
    assert "error_rate worse in treatment: treatment 0.15 (n=2,000) vs control 0.01 (n=20,000)" in first
    second = table.split(f'data-position="{second_step.position}"')[1].split("</tr>")[0]
    assert "no guard" in second
    chart = page.split('id="plan-metric-chart"')[1].split("</figure>")[0]
    assert chart.count("<polyline") == 2 and chart.count("<polygon") == 2  # each cohort and its interval
    assert "treatment (use_zstd = true)" in chart and "control (use_zstd ≠ true)" in chart
    assert "Errors per execution per cohort in prod" in page


def test_plan_page__guard_under_its_minimum_sample__waiting(admin_client: Any) -> None:
    now = timezone.now()
    plan = _running_plan([{"metric": "error_rate", "min_sample": 5000}], now - timedelta(minutes=10))
    cohort(now - timedelta(minutes=2), zstd=True, executions=400, errors=0)
    cohort(now - timedelta(minutes=2), zstd=False, executions=4000, errors=40)
    page = text_of(admin_client.get(reverse("admin:rollout_rolloutplan_change", args=[plan.pk])))
    position = plan.steps.order_by("position")[0].position
    first = page.split('id="plan-guard-states"')[1].split(f'data-position="{position}"')[1].split("</tr>")[0]
    assert '<span class="guard-state guard-waiting">waiting for sample</span>' in first
    assert "waiting for 5,000 a cohort (treatment 400, control 4,000)" in first


def test_cohort_metric_chart__per_bucket_estimates_split_by_the_plans_value() -> None:
    cohort(NOW - timedelta(minutes=3), zstd=True, executions=100, errors=10)
    cohort(NOW - timedelta(minutes=3), zstd=False, executions=1000, errors=10)
    chart = cohort_metric_chart(
        environment="prod",
        flag="use_zstd",
        treatment=True,
        metric="error_rate",
        window=WINDOWS["1h"],
        now=NOW,
    )
    treatment, control = chart.lines
    assert "0.1 [" in treatment.points[0].title and "n = 100" in treatment.points[0].title
    assert "0.01 [" in control.points[0].title and treatment.band and control.band


def test_plan_page__without_telemetry_settings__works_and_says_so(admin_client: Any, settings: Any) -> None:
    settings.ROLLOUT_PLAN_INSIGHTS = ""
    plan = _running_plan([], timezone.now())
    page = text_of(admin_client.get(reverse("admin:rollout_rolloutplan_change", args=[plan.pk])))
    assert "Telemetry is not installed (settings.ROLLOUT_PLAN_INSIGHTS is empty)" in page
