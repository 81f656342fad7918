"""Plans are checked when they are made and when they start; a plan that fails anyway is marked
failed with its reason, audited, and never stops the other plans."""

from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEntry
from rollout import services
from rollout.models import Environment, Flag, FlagState, Revision, RolloutPlan, RolloutStep

from ..factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator():
    return UserFactory(username="alice", permissions=["rollout.change_flagstate"])


def running(name, flag_key, value, *, operator=None):
    """A running plan as an older version stored it, unchecked: prod 100 %, nothing applied."""
    plan = RolloutPlan.objects.create(
        name=name,
        flag=Flag.objects.get(key=flag_key),
        value=value,
        status=RolloutPlan.Status.RUNNING,
        started_by=operator,
    )
    RolloutStep.objects.create(
        plan=plan, position=0, environment=Environment.objects.get(key="prod"), percentage=100
    )
    return plan


def test_plans_advance__one_plan_with_a_bad_value__failed_audited_and_the_others_advance(operator):
    bad = running("bad", "use_2pc", "yes", operator=operator)
    good = running("good", "use_zstd", True, operator=operator)
    assert services.plans_advance() == 1
    bad.refresh_from_db()
    good.refresh_from_db()
    assert bad.status == RolloutPlan.Status.FAILED and "cannot be 'yes'" in bad.reason
    assert FlagState.objects.get(flag__key="use_zstd", environment__key="prod").enabled
    assert not FlagState.objects.get(flag__key="use_2pc", environment__key="prod").enabled
    entry = AuditEntry.objects.get(action="plan.fail")
    assert (entry.target, entry.detail["reason"]) == ("bad", bad.reason)
    assert services.plans_advance() == 0  # a failed plan is not tried again


def test_plans_advance__zstd_level_out_of_the_sdk_bounds__failed_not_raised(operator):
    plan = running("level", "zstd_level", 40, operator=operator)
    services.plans_advance()
    plan.refresh_from_db()
    assert plan.status == RolloutPlan.Status.FAILED and "from 1 to 22" in plan.reason


@pytest.mark.parametrize(
    ("flag_key", "value", "problem"),
    [
        ("use_2pc", "yes", "cannot be 'yes'"),
        ("use_2pc", None, "must serve a value"),
        ("zstd_level", 3.5, "whole number"),
        ("zstd_level", 40, "from 1 to 22"),
        ("zstd_level", float("nan"), "cannot be nan"),
    ],
)
def test_plan_create__value_the_flag_cannot_serve__refused_and_nothing_saved(flag_key, value, problem):
    prod = Environment.objects.get(key="prod")
    with pytest.raises(services.InvalidPlanError, match=problem):
        services.plan_create(
            name="p",
            flag=Flag.objects.get(key=flag_key),
            value=value,
            steps=[{"environment": prod, "percentage": 5}],
            actor="ops",
        )
    assert not RolloutPlan.objects.exists() and not AuditEntry.objects.filter(action="plan.create").exists()


@pytest.mark.parametrize("percentage", ["NaN", "Infinity", "1e400", 101, -1, "5.001", "abc", None])
def test_plan_create__bad_step__refused_and_nothing_saved(percentage):
    with pytest.raises(services.InvalidPlanError, match="step 0"):
        services.plan_create(
            name="p",
            flag=Flag.objects.get(key="use_2pc"),
            value=True,
            steps=[{"environment": Environment.objects.get(key="prod"), "percentage": percentage}],
            actor="ops",
        )
    assert not RolloutPlan.objects.exists() and not RolloutStep.objects.exists()


def test_plan_create__steps_in_position_order_and_audited():
    dev, prod = Environment.objects.get(key="dev"), Environment.objects.get(key="prod")
    plan = services.plan_create(
        name="zstd",
        flag=Flag.objects.get(key="use_zstd"),
        value=True,
        steps=[
            {"position": 20, "environment": prod, "percentage": "25"},
            {"position": 10, "environment": prod, "percentage": 5, "min_soak_seconds": 3600},
            {"position": 0, "environment": dev, "percentage": 100},
        ],
        actor="alice",
    )
    assert [
        (s.position, s.environment.key, float(s.percentage)) for s in plan.steps.order_by("position")
    ] == [
        (0, "dev", 100.0),
        (1, "prod", 5.0),
        (2, "prod", 25.0),
    ]
    entry = AuditEntry.objects.get(action="plan.create")
    assert (entry.actor, entry.target, entry.detail["after"]["value"]) == ("alice", "zstd", True)
    assert [s["percentage"] for s in entry.detail["after"]["steps"]] == [100.0, 5.0, 25.0]


def test_plan_start__stored_value_the_flag_cannot_serve__refused_and_nothing_changes(operator):
    plan = RolloutPlan.objects.create(name="bad", flag=Flag.objects.get(key="use_2pc"), value="yes")
    RolloutStep.objects.create(
        plan=plan, position=0, environment=Environment.objects.get(key="prod"), percentage=5
    )
    revisions = Revision.objects.count()
    with pytest.raises(services.InvalidPlanError, match="cannot be 'yes'"):
        services.plan_start(plan=plan, user=operator)
    plan.refresh_from_db()
    assert plan.status == RolloutPlan.Status.DRAFT and Revision.objects.count() == revisions


def test_plan_start__first_step_fails__plan_failed_with_its_reason(operator, monkeypatch):
    plan = services.plan_create(
        name="p",
        flag=Flag.objects.get(key="use_2pc"),
        value=True,
        steps=[{"environment": Environment.objects.get(key="prod"), "percentage": 5}],
        actor="ops",
    )

    def refuse(**kwargs):
        raise services.InvalidDocumentError("the flag set would be 5,000,000 bytes")

    monkeypatch.setattr(services.plans, "flag_state_update", refuse)
    started = services.plan_start(plan=plan, user=operator)
    assert started.status == RolloutPlan.Status.FAILED and "5,000,000 bytes" in started.reason
    assert AuditEntry.objects.filter(action="plan.fail", target="p").exists()


def test_plans_advance__database_away__plan_left_running_for_the_next_run(operator, monkeypatch):
    from django.db import OperationalError

    plan = running("p", "use_zstd", True, operator=operator)

    def away(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(services.plans, "flag_state_update", away)
    assert services.plans_advance(now=timezone.now() + timedelta(seconds=1)) == 0
    plan.refresh_from_db()
    assert plan.status == RolloutPlan.Status.RUNNING
