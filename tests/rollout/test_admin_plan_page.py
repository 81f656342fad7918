"""A plan's page: its timeline (current step, when the next is due), what its guards say, and
Start / Pause / Resume / Abort buttons that call the plan services with the rights the list's
actions need. Lists and pages answer in a bounded number of queries."""

from __future__ import annotations

import html
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEntry
from rollout import services
from rollout.models import Environment, Flag, FlagState, RolloutPlan
from rollout.services.plans import GuardVerdict

from ..factories import UserFactory

pytestmark = pytest.mark.django_db


def refuse_everything(plan: RolloutPlan, step: Any) -> GuardVerdict:
    return GuardVerdict(ok=False, reason="error rate 4 % > 1 %")


def allow_everything(plan: RolloutPlan, step: Any) -> GuardVerdict:
    return GuardVerdict(ok=True)


def broken_guard(plan: RolloutPlan, step: Any) -> GuardVerdict:
    raise RuntimeError("metrics store unreachable")


def make_plan(name: str = "2pc", steps: int = 2, soak: int = 600) -> RolloutPlan:
    staging, prod = Environment.objects.get(key="staging"), Environment.objects.get(key="prod")
    return services.plan_create(
        name=name,
        flag=Flag.objects.get(key="use_2pc"),
        value=True,
        steps=[
            {
                "environment": staging if index == 0 else prod,
                "percentage": min(100, 5 * (index + 1)),
                "min_soak_seconds": soak,
            }
            for index in range(steps)
        ],
        actor="ops",
    )


def page(client: Any, plan: RolloutPlan) -> str:
    response = client.get(reverse("admin:rollout_rolloutplan_change", args=[plan.pk]))
    assert response.status_code == 200
    return html.unescape(response.content.decode())


def operate(client: Any, plan: RolloutPlan, operation: str, **extra: str) -> Any:
    return client.post(
        reverse("admin:rollout_rolloutplan_operate", args=[plan.pk]), {"operation": operation, **extra}
    )


def status(plan: RolloutPlan) -> str:
    return RolloutPlan.objects.get(pk=plan.pk).status


def test_plan_page__buttons_follow_the_status(admin_client: Any) -> None:
    plan = make_plan()

    def buttons() -> list[str]:
        shown = page(admin_client, plan)
        return [op for op in ("start", "pause", "resume", "abort") if f'id="plan-{op}"' in shown]

    assert buttons() == ["start"]
    assert operate(admin_client, plan, "start").status_code == 302 and status(plan) == "running"
    assert buttons() == ["pause", "abort"]
    operate(admin_client, plan, "pause")
    assert status(plan) == "paused" and buttons() == ["resume", "abort"]
    operate(admin_client, plan, "resume")
    assert status(plan) == "running"
    operate(admin_client, plan, "abort", reason="latency")
    assert status(plan) == "aborted" and buttons() == []
    assert RolloutPlan.objects.get(pk=plan.pk).reason == "latency"
    assert not FlagState.objects.get(flag__key="use_2pc", environment__key="staging").enabled
    actions = list(
        AuditEntry.objects.filter(action__startswith="plan.").order_by("pk").values_list("action", "actor")
    )
    assert actions == [
        (a, "ops" if a == "plan.create" else "admin")
        for a in ("plan.create", "plan.start", "plan.pause", "plan.resume", "plan.abort")
    ]


def test_plan_page__timeline_current_step_and_next_due(admin_client: Any) -> None:
    plan = make_plan(steps=3, soak=600)
    shown = page(admin_client, plan)
    assert "not moving: the plan is draft" in shown
    operate(admin_client, plan, "start")
    applied = RolloutPlan.objects.get(pk=plan.pk).steps.get(position=0).applied_at
    shown = page(admin_client, plan)
    timeline = shown.split('id="plan-timeline"')[1].split("</ol>")[0]
    assert [part.split('"')[0] for part in timeline.split("timeline-step step-")[1:]] == [
        "current",
        "next",
        "pending",
    ]
    due = timezone.localtime(applied + timedelta(seconds=600))
    assert f"Next: step 1: prod at 10 %, due {due:%Y-%m-%d %H:%M:%S}" in html.unescape(shown).replace(
        "<b>", ""
    ).replace("</b>", "")
    assert "No guard configured" in shown


def test_plan_page__guard_verdicts_shown(admin_client: Any, settings: Any) -> None:
    plan = make_plan()
    operate(admin_client, plan, "start")
    settings.ROLLOUT_GUARDS = [
        "tests.rollout.test_admin_plan_page.allow_everything",
        "tests.rollout.test_admin_plan_page.refuse_everything",
        "tests.rollout.test_admin_plan_page.broken_guard",
    ]
    guards = page(admin_client, plan).split('id="plan-guards"')[1].split("</div>")[0]
    assert "allow_everything</code>: lets the next step go" in guards
    assert "refuse_everything</code>: would abort the plan: error rate 4 % > 1 %" in guards
    assert "broken_guard</code>: RuntimeError: metrics store unreachable" in guards
    assert status(plan) == "running"  # looking asks the guards; it changes nothing


def test_plan_page__started_plan_value_shown_typed_not_editable(admin_client: Any) -> None:
    plan = make_plan()
    operate(admin_client, plan, "start")
    shown = page(admin_client, plan)
    assert '<code class="flag-value">true</code>' in shown and 'name="value"' not in shown
    assert "True" not in shown


def test_plan_page__unknown_operation_or_wrong_state__message_and_nothing_changes(admin_client: Any) -> None:
    plan = make_plan()
    response = operate(admin_client, plan, "explode")
    assert response.status_code == 302 and status(plan) == "draft"
    response = admin_client.post(
        reverse("admin:rollout_rolloutplan_operate", args=[plan.pk]), {"operation": "pause"}, follow=True
    )
    assert "cannot pause" in html.unescape(response.content.decode()) and status(plan) == "draft"
    assert admin_client.get(reverse("admin:rollout_rolloutplan_operate", args=[plan.pk])).status_code == 405


def test_plan_page__rights_as_the_list_actions(client: Any) -> None:
    plan = make_plan()
    # May change plans but not flags: may pause, not start, resume or abort.
    planner = UserFactory(
        is_staff=True, permissions=["rollout.view_rolloutplan", "rollout.change_rolloutplan"]
    )
    client.force_login(planner)
    shown = html.unescape(
        client.get(reverse("admin:rollout_rolloutplan_change", args=[plan.pk])).content.decode()
    )
    assert 'id="plan-start"' not in shown
    assert operate(client, plan, "start").status_code == 403 and status(plan) == "draft"
    services.plan_start(plan=plan, user=UserFactory(is_superuser=True, is_staff=True), actor="ops")
    assert operate(client, plan, "abort").status_code == 403 and status(plan) == "running"
    assert operate(client, plan, "pause").status_code == 302 and status(plan) == "paused"
    assert operate(client, plan, "resume").status_code == 403 and status(plan) == "paused"
    # Only allowed to look: no buttons, every operation refused.
    viewer = UserFactory(is_staff=True, permissions=["rollout.view_rolloutplan"])
    client.force_login(viewer)
    shown = html.unescape(
        client.get(reverse("admin:rollout_rolloutplan_change", args=[plan.pk])).content.decode()
    )
    assert "plan-operation" not in shown
    for operation in ("resume", "abort", "pause"):
        assert operate(client, plan, operation).status_code == 403
    assert status(plan) == "paused"


def _queries(client: Any, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured.captured_queries)


def test_plans_list_and_page__query_count_does_not_grow(
    admin_client: Any, django_assert_max_num_queries: Any
) -> None:
    first = make_plan(steps=2)
    services.plan_start(plan=first, user=UserFactory(is_superuser=True, is_staff=True), actor="ops")
    changelist = reverse("admin:rollout_rolloutplan_changelist")
    small_list = _queries(admin_client, changelist)
    small_page = _queries(admin_client, reverse("admin:rollout_rolloutplan_change", args=[first.pk]))
    for index in range(15):
        make_plan(name=f"plan {index}", steps=8)
    long_plan = make_plan(name="long", steps=12)
    with django_assert_max_num_queries(12):
        response = admin_client.get(changelist)
    assert len(response.context["cl"].result_list) == 17
    assert _queries(admin_client, changelist) == small_list
    with django_assert_max_num_queries(25):
        admin_client.get(reverse("admin:rollout_rolloutplan_change", args=[long_plan.pk]))
    # A draft's steps are an editable formset: its queries are the environment choices', once.
    assert _queries(admin_client, reverse("admin:rollout_rolloutplan_change", args=[first.pk])) == small_page
