"""Plans change flags, so starting, resuming and aborting one needs the right to change flag
states (rollout.change_flagstate), in the admin as in the services; the periodic advance acts
for the operator who started the plan and pauses it when they lose that right."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEntry
from rollout import services
from rollout.models import Environment, Flag, FlagState, Revision, RolloutPlan, RolloutStep

from ..factories import UserFactory

pytestmark = pytest.mark.django_db

PLAN_RIGHTS = ["rollout.view_rolloutplan", "rollout.add_rolloutplan", "rollout.change_rolloutplan"]
FLAG_RIGHT = "rollout.change_flagstate"


@pytest.fixture
def plan():
    """use_2pc: dev 100 % now, then prod 100 % after a minute."""
    plan = RolloutPlan.objects.create(name="2pc", flag=Flag.objects.get(key="use_2pc"), value=True)
    RolloutStep.objects.create(
        plan=plan,
        position=0,
        environment=Environment.objects.get(key="dev"),
        percentage=100,
        min_soak_seconds=60,
    )
    RolloutStep.objects.create(
        plan=plan, position=1, environment=Environment.objects.get(key="prod"), percentage=100
    )
    return plan


def served(environment):
    return FlagState.objects.get(flag__key="use_2pc", environment__key=environment).enabled


def act(client, plan, action):
    return client.post(
        reverse("admin:rollout_rolloutplan_changelist"), {"action": action, "_selected_action": [plan.pk]}
    )


def test_admin_plan_start__staff_with_plan_rights_only__refused_and_nothing_changes(client, plan):
    user = UserFactory(is_staff=True, permissions=["rollout.view_flag", *PLAN_RIGHTS])
    client.force_login(user)
    revisions = Revision.objects.count()
    act(client, plan, "start")
    plan.refresh_from_db()
    assert plan.status == RolloutPlan.Status.DRAFT
    assert not served("dev") and not served("prod") and Revision.objects.count() == revisions
    actions = client.get(reverse("admin:rollout_rolloutplan_changelist")).context["action_form"]
    assert {"start", "resume", "abort"}.isdisjoint(name for name, _ in actions.fields["action"].choices)


def test_admin_plan_start__operator_with_flag_right__started_for_them(client, plan):
    user = UserFactory(username="alice", is_staff=True, permissions=[*PLAN_RIGHTS, FLAG_RIGHT])
    client.force_login(user)
    act(client, plan, "start")
    plan.refresh_from_db()
    assert (plan.status, plan.started_by) == (RolloutPlan.Status.RUNNING, user)
    assert served("dev")


@pytest.mark.parametrize("operation", [services.plan_start, services.plan_resume, services.plan_abort])
def test_plan_operations_that_change_flags__user_without_the_right__refused(plan, operation):
    user = UserFactory(is_staff=True, permissions=PLAN_RIGHTS)
    if operation is not services.plan_start:
        operator = UserFactory(permissions=[FLAG_RIGHT])
        services.plan_start(plan=plan, user=operator)
        services.plan_pause(plan=plan, user=operator)
    status = RolloutPlan.objects.get(pk=plan.pk).status
    revisions = Revision.objects.count()
    with pytest.raises(services.PlanPermissionDenied, match="needs the right to change flag states"):
        operation(plan=plan, user=user)
    assert RolloutPlan.objects.get(pk=plan.pk).status == status and Revision.objects.count() == revisions


def lose_the_right(user, how):
    if how == "permission":
        user.user_permissions.remove(Permission.objects.get(codename="change_flagstate"))
    elif how == "deactivated":
        user.is_active = False
        user.save()
    else:
        user.delete()


@pytest.mark.parametrize("how", ["permission", "deactivated", "deleted"])
def test_plan_advance__operator_lost_the_right__paused_with_audit_and_nothing_applied(client, plan, how):
    alice = UserFactory(username="alice", is_staff=True, permissions=[*PLAN_RIGHTS, FLAG_RIGHT])
    client.force_login(alice)
    act(client, plan, "start")  # dev now
    lose_the_right(alice, how)
    revisions = Revision.objects.count()
    assert services.plans_advance(now=timezone.now() + timedelta(minutes=2)) == 0
    plan.refresh_from_db()
    assert (plan.status, plan.reason) == (RolloutPlan.Status.PAUSED, "operator lost the right")
    assert not served("prod") and Revision.objects.count() == revisions
    entry = AuditEntry.objects.get(action="plan.pause", target="2pc")
    assert entry.detail["reason"] == "operator lost the right"


def test_plan_resume__by_another_operator__advance_acts_for_them(plan):
    alice = UserFactory(username="alice", permissions=[FLAG_RIGHT])
    bob = UserFactory(username="bob", permissions=[FLAG_RIGHT])
    services.plan_start(plan=plan, user=alice)
    lose_the_right(alice, "permission")
    services.plans_advance(now=timezone.now() + timedelta(minutes=2))
    services.plan_resume(plan=plan, user=bob)
    plan.refresh_from_db()
    assert (plan.status, plan.started_by, plan.reason) == (RolloutPlan.Status.RUNNING, bob, "")
    assert services.plans_advance(now=timezone.now() + timedelta(minutes=3)) == 1
    assert served("prod")
    assert (
        Revision.objects.filter(environment__key="prod").latest("number").created_by == "rollout plan for bob"
    )
