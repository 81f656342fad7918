"""Guards only where cohorts can answer them: the hydrators' cohorts record the statebag's own
settings only, so a plan on any other flag with guard rules is refused when it is defined
(service and admin form alike), where it would otherwise wait forever. And a guard list given
as text is refused in the operator's words, not a Python type's name."""

from __future__ import annotations

import html
import json
from typing import Any

import pytest
from django.urls import reverse

from analemma_sdk.statebag import StateHydrator
from analemma_sdk.statebag.stores import MemoryStore
from rollout import services
from rollout.guard_rules import COHORT_FLAGS, GuardRuleError, clean_rules
from rollout.models import Environment, Flag, RolloutPlan
from rollout.services import plans

from .admin_forms import plan_data

pytestmark = pytest.mark.django_db
GUARD = {"metric": "error_rate", "tolerance": 0.5, "min_sample": 300}
REFUSED = "only a plan on a flag the statebag cohorts record"


@pytest.fixture
def checkout() -> Flag:
    return services.flag_create(key="checkout_v2", kind="boolean", default_value=False, actor="ops")


def steps(guards: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    prod = Environment.objects.get(key="prod")
    return [
        {"environment": prod, "percentage": 10, "guards": guards},
        {"environment": prod, "percentage": 50},
    ]


def test_cohort_flags__are_what_a_hydrators_cohort_records():
    cohort = StateHydrator(store=MemoryStore(), use_zstd=True).cohort
    assert set(COHORT_FLAGS) == set(cohort) and {"use_zstd", "use_batching", "use_2pc"} <= set(COHORT_FLAGS)


def test_create__guards_on_a_flag_no_cohort_records__refused_nothing_saved(checkout):
    with pytest.raises(plans.InvalidPlanError, match=f"step 0: guard: {REFUSED}") as raised:
        services.plan_create(name="checkout", flag=checkout, value=True, steps=steps([GUARD]), actor="ops")
    assert "'checkout_v2'" in str(raised.value) and "use_zstd" in str(raised.value)
    assert not RolloutPlan.objects.exists()


def test_create__no_guards_on_such_a_flag__fine_and_guards_on_a_cohort_flag__fine(checkout):
    services.plan_create(name="checkout", flag=checkout, value=True, steps=steps(None), actor="ops")
    zstd = Flag.objects.get(key="use_zstd")
    services.plan_create(name="zstd", flag=zstd, value=True, steps=steps([GUARD]), actor="ops")
    assert RolloutPlan.objects.count() == 2


def test_update__flag_changed_under_guarded_steps__refused(checkout):
    zstd = Flag.objects.get(key="use_zstd")
    plan = services.plan_create(name="zstd", flag=zstd, value=True, steps=steps([GUARD]), actor="ops")
    with pytest.raises(plans.InvalidPlanError, match=REFUSED):
        services.plan_update(plan=plan, actor="ops", flag=checkout, value=True)
    with pytest.raises(plans.InvalidPlanError, match=REFUSED):
        services.plan_update(plan=plan, actor="ops", flag=checkout, value=True, steps=steps([GUARD]))
    assert RolloutPlan.objects.get().flag == zstd


def test_admin__guards_on_a_flag_no_cohort_records__form_error(admin_client, checkout):
    prod = Environment.objects.get(key="prod")
    url = reverse("admin:rollout_rolloutplan_add")
    data = plan_data(
        "checkout", checkout, "true", [(prod.pk, "10")], **{"steps-0-guards": json.dumps([GUARD])}
    )
    response = admin_client.post(url, data)
    assert response.status_code == 200
    shown = html.unescape(response.content.decode())
    assert f"step 0: guard: {REFUSED}" in shown and not RolloutPlan.objects.exists()
    data["steps-0-guards"] = ""
    assert admin_client.post(url, data).status_code == 302
    assert RolloutPlan.objects.get().flag == checkout


@pytest.mark.parametrize(
    ("rules", "said"),
    [
        ('[{"metric": "error_rate"}]', "not text"),
        ({"metric": "error_rate"}, "not an object"),
        (3, "not a number"),
    ],
)
def test_rules__not_a_list__said_plainly(rules, said):
    with pytest.raises(GuardRuleError) as raised:
        clean_rules(rules)
    assert said in str(raised.value) and "str" not in str(raised.value).split("not ")[-1]


def test_admin__guards_a_json_string__no_type_name(admin_client):
    prod, zstd = Environment.objects.get(key="prod"), Flag.objects.get(key="use_zstd")
    url = reverse("admin:rollout_rolloutplan_add")
    data = plan_data("zstd", zstd, "true", [(prod.pk, "10")], **{"steps-0-guards": '"error_rate"'})
    shown = html.unescape(admin_client.post(url, data).content.decode())
    assert "guards must be a list of guard objects, not text" in shown
    assert "JSONString" not in shown and not RolloutPlan.objects.exists()
