"""An abort restores only the plan's flag; a started plan's flag, value and steps are frozen;
plan definitions are audited with what they were and became."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEntry
from rollout import services
from rollout.models import Environment, Flag, FlagState, RolloutPlan, RolloutStep

from ..factories import UserFactory
from .admin_forms import plan_change_data, plan_data

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(client):
    user = UserFactory(username="alice", is_staff=True, is_superuser=True)
    client.force_login(user)
    return user


def state(flag_key, environment="prod"):
    return FlagState.objects.get(flag__key=flag_key, environment__key=environment)


def act(client, plan, action):
    return client.post(
        reverse("admin:rollout_rolloutplan_changelist"), {"action": action, "_selected_action": [plan.pk]}
    )


@pytest.fixture
def batching():
    plan = RolloutPlan.objects.create(name="batching", flag=Flag.objects.get(key="use_batching"), value=True)
    RolloutStep.objects.create(
        plan=plan, position=0, environment=Environment.objects.get(key="prod"), percentage=5
    )
    RolloutStep.objects.create(
        plan=plan, position=1, environment=Environment.objects.get(key="prod"), percentage=25
    )
    return plan


def test_plan_abort__another_operator_changed_another_flag_meanwhile__that_change_stays(
    client, operator, batching
):
    prod = Environment.objects.get(key="prod")
    act(client, batching, "start")
    assert state("use_batching").enabled
    services.flag_state_update(
        flag=Flag.objects.get(key="use_2pc"), environment=prod, actor="bob", enabled=True, value=True
    )
    act(client, batching, "abort")
    batching.refresh_from_db()
    assert batching.status == RolloutPlan.Status.ABORTED
    assert not state("use_batching").enabled
    assert state("use_2pc").enabled  # bob's change stays
    latest = prod.revisions.order_by("-number").first()
    assert {change["flag"] for change in latest.diff} == {"use_batching"}
    entry = AuditEntry.objects.get(action="plan.abort")
    assert entry.detail["restored"] == {"prod": latest.number}


def test_plan_abort__same_flag_changed_before_the_plan_reached_an_environment__that_change_stays(operator):
    dev, prod = Environment.objects.get(key="dev"), Environment.objects.get(key="prod")
    plan = RolloutPlan.objects.create(name="zstd", flag=Flag.objects.get(key="use_zstd"), value=True)
    RolloutStep.objects.create(plan=plan, position=0, environment=dev, percentage=100, min_soak_seconds=60)
    RolloutStep.objects.create(plan=plan, position=1, environment=prod, percentage=5)
    started = services.plan_start(plan=plan, user=operator)  # dev now; prod after the soak
    # Meanwhile bob targets his own units in prod: before the plan ever touched prod.
    services.flag_state_update(
        flag=plan.flag, environment=prod, actor="bob", targets=[{"units": ["exec-bob"], "value": True}]
    )
    assert services.plans_advance(now=timezone.now() + timedelta(seconds=61)) == 1
    assert state("use_zstd").enabled
    services.plan_abort(plan=started, user=operator)
    assert not state("use_zstd").enabled and not state("use_zstd", "dev").enabled
    assert state("use_zstd").targets == [{"units": ["exec-bob"], "value": True}]  # bob's stays


def test_plan_abort__flag_already_back__no_empty_revision(operator, batching):
    prod = Environment.objects.get(key="prod")
    started = services.plan_start(plan=batching, user=operator)
    services.flag_rollback(
        environment=prod, flag_key="use_batching", number=started.baseline["prod"], actor="bob"
    )
    revisions = prod.revisions.count()
    aborted = services.plan_abort(plan=batching, user=operator)
    assert aborted.status == RolloutPlan.Status.ABORTED and prod.revisions.count() == revisions
    assert AuditEntry.objects.get(action="plan.abort").detail["restored"] == {}


def test_admin_plan_change__running_plan__value_and_steps_not_editable(client, operator, batching):
    act(client, batching, "start")
    batching.refresh_from_db()
    page = client.get(reverse("admin:rollout_rolloutplan_change", args=[batching.pk])).content.decode()
    assert 'name="value"' not in page and 'name="steps-0-percentage"' not in page
    data = plan_change_data(batching, name="batching v2")
    data.update({"value": "false", "steps-0-percentage": "100", "steps-1-percentage": "100"})
    response = client.post(reverse("admin:rollout_rolloutplan_change", args=[batching.pk]), data)
    assert response.status_code == 302
    batching.refresh_from_db()
    assert (batching.name, batching.value) == ("batching v2", True)
    assert [float(s.percentage) for s in batching.steps.order_by("position")] == [5.0, 25.0]


def test_plan_update__started_plan__value_and_steps_refused(operator, batching):
    services.plan_start(plan=batching, user=operator)
    with pytest.raises(services.PlanStateError, match="cannot change once started"):
        services.plan_update(plan=batching, actor="alice", value=False)
    with pytest.raises(services.PlanStateError, match="cannot change once started"):
        services.plan_update(
            plan=batching,
            actor="alice",
            steps=[{"environment": Environment.objects.get(key="prod"), "percentage": 100}],
        )
    batching.refresh_from_db()
    assert batching.value is True and batching.steps.count() == 2


def test_admin_plan__create_and_edit_draft__audited_with_before_and_after(client, operator):
    flag = Flag.objects.get(key="use_zstd")
    dev, prod = Environment.objects.get(key="dev"), Environment.objects.get(key="prod")
    response = client.post(
        reverse("admin:rollout_rolloutplan_add"),
        plan_data("zstd", flag, "true", [(dev.pk, "100"), (prod.pk, "5")]),
    )
    assert response.status_code == 302
    plan = RolloutPlan.objects.get(name="zstd")
    assert plan.created_by == "alice" and plan.steps.count() == 2
    created = AuditEntry.objects.get(action="plan.create")
    assert created.actor == "alice" and created.detail["after"]["steps"][1]["percentage"] == 5.0

    data = plan_change_data(plan)
    data["steps-1-percentage"] = "10"
    response = client.post(reverse("admin:rollout_rolloutplan_change", args=[plan.pk]), data)
    assert response.status_code == 302
    assert [float(s.percentage) for s in plan.steps.order_by("position")] == [100.0, 10.0]
    updated = AuditEntry.objects.get(action="plan.update")
    assert updated.detail["before"]["steps"][1]["percentage"] == 5.0
    assert updated.detail["after"]["steps"][1]["percentage"] == 10.0


def test_admin_plan_delete__draft__audited(client, operator, batching):
    response = client.post(reverse("admin:rollout_rolloutplan_delete", args=[batching.pk]), {"post": "yes"})
    assert response.status_code == 302 and not RolloutPlan.objects.exists()
    assert AuditEntry.objects.get(action="plan.delete").target == "batching"


def test_plan__advanced_steps_act_for_the_operator(operator, batching):
    services.plan_start(plan=batching, user=operator)
    services.plans_advance(now=timezone.now() + timedelta(seconds=1))
    prod = Environment.objects.get(key="prod")
    assert prod.revisions.order_by("-number").first().created_by == "rollout plan for alice"
