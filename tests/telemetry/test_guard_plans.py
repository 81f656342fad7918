"""The built-in guard in a plan's life: per-step rules checked and edited like the rest of a
plan; a step waits for its minimum sample, even past its soak; harm aborts the plan at the
next minute's check, soak or not, with the numbers in the audit entry; no harm lets it
advance; tolerances, directions and metrics as the rules say. Cohort rollups are written as
the per-minute aggregation writes them; the advance runs on an injected clock."""

from __future__ import annotations

import html
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEntry
from rollout import services
from rollout.models import Environment, Flag, FlagState, RolloutPlan
from rollout.services import plans
from rollout.webhooks import webhook_post
from telemetry.guards import cohort_comparison, judge, plan_comparison
from telemetry.models import CohortRollup
from telemetry.selectors import CohortMetrics

from ..factories import UserFactory
from ..rollout.admin_forms import plan_data

pytestmark = pytest.mark.django_db
SOAK = 3600
ERRORS = {"metric": "error_rate", "tolerance": 0.5, "min_sample": 300}


@pytest.fixture(autouse=True)
def _built_in_guard(settings: Any) -> None:
    settings.ROLLOUT_GUARDS = ["telemetry.guards.step_guard"]


@pytest.fixture
def operator() -> Any:
    return UserFactory(username="release", is_staff=True, permissions=["rollout.change_flagstate"])


def make_plan(guards: list[dict[str, Any]], percentage: int = 10) -> RolloutPlan:
    prod = Environment.objects.get(key="prod")
    return services.plan_create(
        name="zstd",
        flag=Flag.objects.get(key="use_zstd"),
        value=True,
        steps=[
            {"environment": prod, "percentage": percentage, "min_soak_seconds": SOAK, "guards": guards},
            {"environment": prod, "percentage": 50},
        ],
        actor="ops",
    )


def rollup(
    minute: datetime, on: bool, executions: int, errors: int = 0, requests: int = 0, **latency: Any
) -> None:
    """One cohort's minute as the aggregation writes it."""
    cohort = {"use_2pc": False, "use_batching": False, "use_zstd": on, "zstd_level": 3}
    CohortRollup.objects.create(
        environment="prod",
        minute=minute.replace(second=0, microsecond=0),
        cohort=json.dumps(cohort, sort_keys=True, separators=(",", ":")),
        series=f"{on}-{minute:%H%M%S%f}",
        reports=1,
        counters={"executions": executions, "errors": errors, "requests_get": requests},
        latency={
            name: {str(bound): count for bound, count in histogram.items()}
            for name, histogram in latency.items()
        },
    )


def started(plan: RolloutPlan, operator: Any) -> datetime:
    plan = services.plan_start(plan=plan, user=operator)
    applied_at = plan.steps.get(position=0).applied_at
    assert applied_at is not None
    return applied_at


def status(plan: RolloutPlan) -> str:
    return RolloutPlan.objects.get(pk=plan.pk).status


def test_step__too_little_data__waits_past_its_soak_then_harm_aborts_mid_soak(
    operator, settings, django_capture_on_commit_callbacks, caplog
):
    settings.ROLLOUT_WEBHOOK_URL = "http://127.0.0.1:9/hook"  # nobody listens: the abort stands
    plan = make_plan([ERRORS])
    applied_at = started(plan, operator)
    rollup(applied_at, True, 100, errors=30)
    rollup(applied_at, False, 900, errors=9)
    # Under its minimum sample (100 < 300 treatment executions), the step waits, soak or not.
    assert plans.plans_advance(now=applied_at + timedelta(seconds=SOAK + 60)) == 0
    assert (
        status(plan) == "running"
        and FlagState.objects.get(flag__key="use_zstd", environment__key="prod").percentage == 10
    )
    # A later minute brings the treatment to 400 executions at 15 % errors against 1 %.
    rollup(applied_at + timedelta(minutes=1), True, 300, errors=30)
    rollup(applied_at + timedelta(minutes=1), False, 2700, errors=27)
    with django_capture_on_commit_callbacks(execute=True):  # the abort follows the advance's commit
        plans.plans_advance(now=applied_at + timedelta(minutes=2))  # mid-soak: still checked
    assert "rollout webhook at 127.0.0.1:9 unreachable" in caplog.text  # tried, after the abort
    plan.refresh_from_db()
    assert plan.status == "aborted" and plan.reason.startswith(
        "error_rate worse in treatment: treatment 0.15 (n=400)"
    )
    assert not FlagState.objects.get(flag__key="use_zstd", environment__key="prod").enabled
    entry = AuditEntry.objects.get(action="plan.abort")
    assert entry.actor == "rollout guard"
    (numbers,) = entry.detail["guard"]["metrics"]
    assert numbers["treatment"] == {"n": 400, "estimate": 0.15} and numbers["control"] == {
        "n": 3600,
        "estimate": 0.01,
    }
    assert numbers["threshold"] == pytest.approx(0.005)  # relative: half the control's 1 %
    assert numbers["interval"]["difference"] == pytest.approx(0.14)
    assert numbers["threshold"] < numbers["interval"]["low"] < 0.14 < numbers["interval"]["high"]


def test_step__no_harm__advances_after_its_soak_not_before(operator):
    plan = make_plan([ERRORS, {"metric": "requests_per_execution", "tolerance": 0.1, "min_sample": 300}])
    applied_at = started(plan, operator)
    rollup(applied_at, True, 500, errors=5, requests=1500)
    rollup(applied_at, False, 4500, errors=45, requests=13500)
    assert plans.plans_advance(now=applied_at + timedelta(seconds=SOAK - 60)) == 0  # soaking
    comparison = plan_comparison(RolloutPlan.objects.get(pk=plan.pk))
    assert comparison is not None and comparison.state == "pass"
    assert [m.state for m in comparison.metrics] == ["pass", "pass"]
    assert plans.plans_advance(now=applied_at + timedelta(seconds=SOAK + 60)) == 1
    assert FlagState.objects.get(flag__key="use_zstd", environment__key="prod").percentage == 50


def test_step__only_the_live_steps_minutes__older_cohorts_do_not_count(operator):
    plan = make_plan([ERRORS])
    applied_at = started(plan, operator)
    rollup(applied_at - timedelta(minutes=5), True, 5000, errors=2500)  # before the step: not its data
    rollup(applied_at, True, 400, errors=4)
    rollup(applied_at, False, 3600, errors=36)
    comparison = plan_comparison(RolloutPlan.objects.get(pk=plan.pk))
    assert comparison is not None and comparison.metrics[0].treatment.n == 400
    assert comparison.state == "pass"


def test_waiting_hook_guard__holds_the_plan(operator, settings):
    settings.ROLLOUT_GUARDS = ["tests.telemetry.test_guard_plans.always_waits"]
    plan = make_plan([])
    applied_at = started(plan, operator)
    assert plans.plans_advance(now=applied_at + timedelta(seconds=SOAK + 60)) == 0
    assert status(plan) == "running"


def always_waits(plan: RolloutPlan, step: Any) -> plans.GuardVerdict:
    if not plan.steps.filter(applied_at__isnull=False).exists():
        return plans.GuardVerdict(ok=True)
    return plans.GuardVerdict(ok=False, reason="no data", wait=True)


def metrics(executions: int, **counters: int) -> CohortMetrics:
    return CohortMetrics(counters={"executions": executions, **counters})


def rule(**fields: Any) -> dict[str, Any]:
    from rollout.guard_rules import clean_rule

    return clean_rule(fields)


@pytest.mark.parametrize(
    ("fields", "state"),
    [
        ({"tolerance": 0.2}, "pass"),  # 3.3 against 3.0: 10 % more, within 20 %
        ({"tolerance": 0.02}, "fail"),  # not within 2 %
        ({"tolerance": 0.5, "tolerance_kind": "absolute"}, "pass"),  # within half a request
        ({"tolerance": 0.05, "tolerance_kind": "absolute"}, "fail"),
        ({"tolerance": 0.02, "worse": "lower"}, "pass"),  # more requests is not harm here
        ({"tolerance": 0.02, "min_sample": 20_000}, "wait"),
    ],
)
def test_judge__tolerance_and_direction(fields, state):
    treatment, control = metrics(10_000, requests_get=33_000), metrics(90_000, requests_get=270_000)
    verdict = judge(rule(metric="requests_per_execution", **fields), treatment, control)
    assert verdict.state == state
    assert verdict.treatment.estimate == pytest.approx(3.3) and verdict.control.estimate == pytest.approx(3.0)


def test_judge__lower_is_worse__fewer_fails():
    treatment, control = metrics(5_000, commits_2pc=4_000), metrics(45_000, commits_2pc=45_000)
    assert judge(rule(metric="counter:commits_2pc", worse="lower"), treatment, control).state == "fail"
    assert judge(rule(metric="counter:commits_2pc"), treatment, control).state == "pass"
    nothing = judge(rule(metric="counter:never_reported"), treatment, control)
    assert (nothing.treatment.estimate, nothing.state) == (0, "pass")


def test_judge__p95_hydrate__share_above_the_controls_p95():
    control = CohortMetrics(counters={"executions": 10_000}, latency={"hydrate": {4: 9_000, 8: 800, 16: 200}})
    same = CohortMetrics(counters={"executions": 1_000}, latency={"hydrate": {4: 900, 8: 80, 16: 20}})
    slower = CohortMetrics(counters={"executions": 1_000}, latency={"hydrate": {4: 600, 8: 200, 16: 200}})
    fine = judge(rule(metric="p95_hydrate_ms", min_sample=500), same, control)
    bad = judge(rule(metric="p95_hydrate_ms", min_sample=500), slower, control)
    assert fine.detail["control_p95_ms"] == 8 and fine.state == "pass"
    assert (bad.treatment.estimate, bad.control.estimate, bad.state) == (0.2, 0.02, "fail")
    assert bad.detail["treatment_p95_ms"] == 16


def test_cohort_comparison__without_rules__every_metric_shown_none_guarded():
    now = timezone.now()
    rollup(now, True, 50, errors=1, requests=150, hydrate={2: 50})
    rollup(now, False, 450, errors=4, requests=1350, hydrate={2: 450})
    found = cohort_comparison(
        environment="prod", flag="use_zstd", treatment=True, since=now - timedelta(minutes=5)
    )
    assert [m.metric for m in found.metrics] == [
        "error_rate",
        "degraded_rate",
        "requests_per_execution",
        "p95_hydrate_ms",
        "p95_dehydrate_ms",
    ]
    assert not any(m.guarded for m in found.metrics) and found.state == "pass"
    errors = found.metrics[0]
    assert (errors.treatment.n, errors.control.n, errors.control.estimate) == (
        50,
        450,
        pytest.approx(4 / 450),
    )
    assert (
        errors.interval is not None
        and errors.interval.low < errors.interval.difference < errors.interval.high
    )
    assert json.loads(json.dumps(found.as_dict()))["metrics"][0]["interval"]["difference"] == pytest.approx(
        0.02 - 4 / 450
    )


@pytest.mark.parametrize(
    ("guards", "message"),
    [
        ([{"metric": "cpu"}], "unknown metric 'cpu'"),
        ([{"metric": "counter:Bad Name"}], "unknown metric"),
        ([{"metric": "error_rate", "tolerance": -1}], "tolerance must be 0 or more"),
        ([{"metric": "error_rate", "tolerance": "10%"}], "tolerance must be a number"),
        ([{"metric": "error_rate", "min_sample": 0}], "min_sample must be a whole number"),
        ([{"metric": "error_rate", "min_sample": True}], "min_sample must be a whole number"),
        ([{"metric": "error_rate", "worse": "up"}], "worse must be higher or lower"),
        (
            [{"metric": "error_rate", "tolerance_kind": "percent"}],
            "tolerance_kind must be relative or absolute",
        ),
        ([{"metric": "error_rate", "window": 5}], "unknown guard fields: window"),
        ([{"metric": "error_rate"}, {"metric": "error_rate"}], "error_rate is repeated"),
        ({"metric": "error_rate"}, "guards must be a list"),
        (["error_rate"], "a guard is an object"),
    ],
)
def test_rules__wrong__typed_error_nothing_saved(guards, message):
    with pytest.raises(plans.InvalidPlanError, match="step 0: guard: ") as raised:
        make_plan(guards)
    assert message in str(raised.value)
    assert not RolloutPlan.objects.exists()


def test_rules__on_a_full_step__refused_no_control_to_compare():
    with pytest.raises(plans.InvalidPlanError, match="a step at 100 % has no control"):
        make_plan([ERRORS], percentage=100)


def test_rules__defaults_filled_and_audited():
    plan = make_plan([{"metric": "degraded_rate"}])
    assert plan.steps.get(position=0).guards == [
        {
            "metric": "degraded_rate",
            "worse": "higher",
            "tolerance": 0.1,
            "tolerance_kind": "relative",
            "min_sample": 500,
        }
    ]
    entry = AuditEntry.objects.get(action="plan.create")
    assert entry.detail["after"]["steps"][0]["guards"][0]["metric"] == "degraded_rate"


def test_admin__step_guards_edited_and_checked__webhook_shown_by_host(admin_client, settings):
    flag, prod = Flag.objects.get(key="use_zstd"), Environment.objects.get(key="prod")
    url = reverse("admin:rollout_rolloutplan_add")
    bad = plan_data("zstd", flag, "true", [(prod.pk, "10")], **{"steps-0-guards": '[{"metric": "cpu"}]'})
    shown = html.unescape(admin_client.post(url, bad).content.decode())
    assert "step 0: guard: unknown metric 'cpu'" in shown and not RolloutPlan.objects.exists()
    good = plan_data("zstd", flag, "true", [(prod.pk, "10")], **{"steps-0-guards": json.dumps([ERRORS])})
    assert admin_client.post(url, good).status_code == 302
    plan = RolloutPlan.objects.get()
    assert plan.steps.get().guards[0] == {**ERRORS, "worse": "higher", "tolerance_kind": "relative"}
    page = reverse("admin:rollout_rolloutplan_change", args=[plan.pk])
    shown = html.unescape(admin_client.get(page).content.decode())
    assert 'name="steps-0-guards"' in shown and "No webhook configured (ROLLOUT_WEBHOOK_URL)" in shown
    settings.ROLLOUT_WEBHOOK_URL = "https://hooks.example.com/services/T0/B0/secret-token"
    shown = html.unescape(admin_client.get(page).content.decode())
    assert "posted to the webhook at hooks.example.com" in shown and "secret-token" not in shown


def test_webhook__unreachable__no_error():
    assert webhook_post({"event": "test"}, url="http://127.0.0.1:9/hook") is None
    assert webhook_post({"event": "test"}, url="not a url") is None
