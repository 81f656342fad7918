from datetime import timedelta

import pytest
from django.utils import timezone

from rollout.models import Environment, Flag, FlagState, RolloutPlan, RolloutStep
from rollout.services import plans

from ..factories import UserFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("rollout_defaults")]


@pytest.fixture
def alice():
    return UserFactory(username="alice", is_staff=True, permissions=["rollout.change_flagstate"])


@pytest.fixture
def oncall():
    return UserFactory(username="oncall", is_staff=True, permissions=["rollout.change_flagstate"])


@pytest.fixture
def plan():
    flag = Flag.objects.get(key="use_batching")
    dev, prod = Environment.objects.get(key="dev"), Environment.objects.get(key="prod")
    plan = RolloutPlan.objects.create(name="batching", flag=flag, value=True)
    for position, (environment, percentage, soak) in enumerate(
        [(dev, 100, 600), (prod, 5, 3600), (prod, 25, 3600), (prod, 100, 0)]
    ):
        RolloutStep.objects.create(
            plan=plan,
            position=position,
            environment=environment,
            percentage=percentage,
            min_soak_seconds=soak,
        )
    return plan


def prod_state():
    return FlagState.objects.get(flag__key="use_batching", environment__key="prod")


def test_plan__advanced_over_time__each_step_after_its_soak_then_completed(plan, alice):
    start = timezone.now()
    plans.plan_start(plan=plan, user=alice)
    assert FlagState.objects.get(flag__key="use_batching", environment__key="dev").enabled is True
    assert plans.plans_advance(now=start + timedelta(seconds=60)) == 0  # dev still soaking
    assert plans.plans_advance(now=start + timedelta(minutes=11)) == 1
    assert (prod_state().enabled, float(prod_state().percentage)) == (True, 5.0)
    plans.plans_advance(now=start + timedelta(minutes=12))
    assert float(prod_state().percentage) == 5.0  # prod 5 % soaks an hour
    plans.plans_advance(now=start + timedelta(hours=1, minutes=12))
    assert float(prod_state().percentage) == 25.0
    plans.plans_advance(now=start + timedelta(hours=2, minutes=13))
    plans.plans_advance(now=start + timedelta(hours=2, minutes=14))
    plan.refresh_from_db()
    assert plan.status == "completed" and float(prod_state().percentage) == 100.0


def test_plan__paused__does_not_advance_until_resumed(plan, alice):
    start = timezone.now()
    plans.plan_start(plan=plan, user=alice)
    plans.plan_pause(plan=plan, user=alice)
    assert plans.plans_advance(now=start + timedelta(hours=5)) == 0
    plans.plan_resume(plan=plan, user=alice)
    assert plans.plans_advance(now=start + timedelta(hours=5)) == 1


def test_plan__abort__restores_revisions_from_before(plan, alice, oncall):
    prod = Environment.objects.get(key="prod")
    before = prod.revisions.order_by("-number").first()
    start = timezone.now()
    plans.plan_start(plan=plan, user=alice)
    plans.plans_advance(now=start + timedelta(minutes=11))
    assert prod_state().enabled
    plans.plan_abort(plan=plan, user=oncall, reason="error rate")
    latest = prod.revisions.order_by("-number").first()
    assert latest.rolled_back_to == before.number and latest.document["flags"] == before.document["flags"]
    assert not prod_state().enabled
    with pytest.raises(plans.PlanStateError):
        plans.plan_resume(plan=plan, user=oncall)


def refuse_prod(plan, step):
    return plans.GuardVerdict(step.environment.key != "prod", "cohort error rate 4% > 1%")


def test_plan__guard_refuses__plan_aborted_with_its_reason(plan, settings, alice):
    settings.ROLLOUT_GUARDS = ["tests.rollout.test_plans.refuse_prod"]
    start = timezone.now()
    plans.plan_start(plan=plan, user=alice)  # dev passes the guard
    plans.plans_advance(now=start + timedelta(minutes=11))  # prod 5 % is refused
    plan.refresh_from_db()
    assert plan.status == "aborted" and "error rate" in plan.reason
    assert not prod_state().enabled
