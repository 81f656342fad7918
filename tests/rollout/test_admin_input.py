"""Bad input in the rollout admin's real forms: every refusal is a form error on the page, with a
clear message and the operator's input kept, and it changes nothing (no half-saved page)."""

import html

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from audit.models import AuditEntry
from rollout import services
from rollout.models import Environment, Flag, FlagState, Revision, RolloutPlan, RolloutStep
from statebag.models import WriteKey

from .admin_forms import flag_add_data, flag_change_data, plan_data

pytestmark = pytest.mark.django_db


def snapshot():
    """Everything a refused form must leave as it was."""
    return (
        list(Revision.objects.order_by("pk").values_list("pk", flat=True)),
        list(AuditEntry.objects.order_by("pk").values_list("pk", flat=True)),
        list(FlagState.objects.order_by("pk").values()),
        list(Flag.objects.order_by("pk").values()),
        list(RolloutPlan.objects.order_by("pk").values()),
        list(RolloutStep.objects.order_by("pk").values()),
    )


def errors(response):
    """The page's error lists, as text."""
    page = response.content.decode()
    return html.unescape(" ".join(part.split("</ul>")[0] for part in page.split('class="errorlist')[1:]))


def change_flag(client, flag, **kwargs):
    return client.post(reverse("admin:rollout_flag_change", args=[flag.pk]), flag_change_data(flag, **kwargs))


@pytest.fixture
def settings_flag():
    return services.flag_create(key="settings", kind="json", default_value={"limit": 1}, actor="ops")


@pytest.mark.parametrize(
    ("flag_key", "field", "typed", "problem"),
    [
        ("zstd_level", "value", "NaN", "NaN is not a JSON number"),
        ("zstd_level", "value", "Infinity", "Infinity is not a JSON number"),
        ("zstd_level", "value", "-Infinity", "-Infinity is not a JSON number"),
        ("zstd_level", "value", "1e400", "1e400 is too large for a number"),
        ("settings", "value", '{"limit": NaN}', "NaN is not a JSON number"),
        ("settings", "value", '{"limit": 1e400}', "1e400 is too large"),
        ("use_2pc", "variants", '[{"value": true, "weight": NaN}]', "NaN is not a JSON number"),
        ("use_2pc", "targets", '[{"units": [Infinity], "value": true}]', "Infinity is not a JSON number"),
        (
            "use_2pc",
            "rules",
            '[{"attribute": "tier", "op": "in", "values": [NaN], "value": true}]',
            "NaN is not a JSON number",
        ),
    ],
)
def test_admin_flag_state__number_json_has_no_form__form_error_and_nothing_changes(
    admin_client, settings_flag, flag_key, field, typed, problem
):
    flag = Flag.objects.get(key=flag_key)
    before = snapshot()
    response = change_flag(admin_client, flag, states={"prod": {"enabled": "on", field: typed}})
    assert response.status_code == 200
    assert problem in errors(response)
    assert typed in response.content.decode().replace("&quot;", '"')  # the input stays on the page
    assert snapshot() == before


@pytest.mark.parametrize("typed", ["NaN", "Infinity", "1e400", "-1e400"])
def test_admin_flag_state__percentage_not_finite__form_error_and_nothing_changes(admin_client, typed):
    flag = Flag.objects.get(key="use_zstd")
    before = snapshot()
    response = change_flag(admin_client, flag, states={"prod": {"percentage": typed}})
    assert response.status_code == 200 and errors(response)
    assert snapshot() == before


def test_admin_flag__one_state_refused__nothing_on_the_page_saved_and_input_kept(admin_client):
    flag = Flag.objects.get(key="zstd_level")
    before = snapshot()
    response = change_flag(
        admin_client,
        flag,
        reason="ramp",
        description="new words",
        states={
            "prod": {"enabled": "on", "value": "5", "percentage": "5"},  # valid
            "staging": {"enabled": "on", "value": "30"},  # the SDK runs zstd at levels 1-22 only
        },
    )
    assert response.status_code == 200
    assert "staging" in errors(response) and "must be from 1 to 22, not 30" in errors(response)
    page = response.content.decode()
    assert "changed successfully" not in page and "is now at revision" not in page
    assert "new words" in page and 'value="30"' in page  # what the operator typed is still there
    assert snapshot() == before
    assert Flag.objects.get(key="zstd_level").description == flag.description


def test_admin_flag__boolean_value_not_true_or_false__form_error_and_nothing_changes(admin_client):
    before = snapshot()
    response = change_flag(
        admin_client,
        Flag.objects.get(key="use_zstd"),
        states={"staging": {"enabled": "on", "value": '"yes"'}},
    )
    assert response.status_code == 200
    assert "Choose true or false" in errors(response)
    assert snapshot() == before


def test_admin_flag__every_change_valid__all_saved_with_revisions(admin_client):
    flag = Flag.objects.get(key="use_zstd")
    response = change_flag(
        admin_client,
        flag,
        reason="ramp",
        description="zstd frames",
        states={"prod": {"enabled": "on", "value": "true", "percentage": "5"}, "staging": {"enabled": "on"}},
    )
    assert response.status_code == 302
    prod = FlagState.objects.get(flag=flag, environment__key="prod")
    assert (prod.enabled, float(prod.percentage), prod.value) == (True, 5.0, True)
    assert FlagState.objects.get(flag=flag, environment__key="staging").enabled
    assert Flag.objects.get(key="use_zstd").description == "zstd frames"
    assert AuditEntry.objects.filter(action="flag.describe", target="use_zstd").count() == 1


@pytest.mark.parametrize(
    ("kind", "default", "problem"),
    [
        ("boolean", '"yes"', "cannot be 'yes'"),
        ("number", '"3"', "cannot be '3'"),
        ("number", "NaN", "NaN is not a JSON number"),
        ("number", "1e400", "1e400 is too large"),
        ("json", '{"a": [Infinity]}', "Infinity is not a JSON number"),
        ("string", "{not json", "Expecting property name"),
    ],
)
def test_admin_flag_add__default_the_kind_cannot_serve__form_error_and_nothing_created(
    admin_client, kind, default, problem
):
    before = snapshot()
    response = admin_client.post(reverse("admin:rollout_flag_add"), flag_add_data("checkout", kind, default))
    assert response.status_code == 200
    assert problem in errors(response)
    assert snapshot() == before


def test_admin_flag_add__valid__created_in_every_environment(admin_client):
    response = admin_client.post(
        reverse("admin:rollout_flag_add"), flag_add_data("checkout", "string", '"a"')
    )
    assert response.status_code == 302
    assert FlagState.objects.filter(flag__key="checkout").count() == Environment.objects.count()


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ('"yes"', "cannot be 'yes'"),
        ("1", "cannot be 1"),
        ("null", "This field is required"),
        ("", "This field is required"),
        ("NaN", "NaN is not a JSON number"),
    ],
)
def test_admin_plan_add__value_the_flag_cannot_serve__form_error_and_nothing_created(
    admin_client, value, problem
):
    flag = Flag.objects.get(key="use_2pc")
    prod = Environment.objects.get(key="prod")
    before = snapshot()
    response = admin_client.post(
        reverse("admin:rollout_rolloutplan_add"), plan_data("2pc", flag, value, [(prod.pk, "100")])
    )
    assert response.status_code == 200
    assert problem in errors(response)
    assert snapshot() == before


@pytest.mark.parametrize("percentage", ["NaN", "Infinity", "1e400", "101", "5.001"])
def test_admin_plan_add__step_percentage_refused__form_error_and_nothing_created(admin_client, percentage):
    flag = Flag.objects.get(key="use_2pc")
    prod = Environment.objects.get(key="prod")
    before = snapshot()
    response = admin_client.post(
        reverse("admin:rollout_rolloutplan_add"), plan_data("2pc", flag, "true", [(prod.pk, percentage)])
    )
    assert response.status_code == 200 and errors(response)
    assert snapshot() == before


def test_admin_plan_start__stored_value_the_flag_cannot_serve__refused_and_nothing_changes(admin_client):
    """A plan saved before plans were checked: Start says why and changes nothing."""
    flag = Flag.objects.get(key="use_2pc")
    plan = RolloutPlan.objects.create(name="2pc", flag=flag, value="yes")
    RolloutStep.objects.create(
        plan=plan, position=0, environment=Environment.objects.get(key="prod"), percentage=100
    )
    before = snapshot()
    response = admin_client.post(
        reverse("admin:rollout_rolloutplan_changelist"),
        {"action": "start", "_selected_action": [plan.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "cannot be 'yes'" in html.unescape(response.content.decode())
    assert snapshot() == before


@pytest.mark.parametrize("owner", ["..", ".", "../acme", "a/b", ""])
def test_admin_write_key__owner_not_an_id__form_error_and_no_key(admin_client, owner):
    response = admin_client.post(reverse("admin:statebag_writekey_add"), {"owner_id": owner, "name": "x"})
    assert response.status_code == 200 and errors(response)
    assert not WriteKey.objects.exists()


def test_environment__key_change__refused_by_the_service_and_nothing_changes():
    prod = Environment.objects.get(key="prod")
    prod.key = "live"
    before = snapshot()
    with pytest.raises(ValidationError, match="cannot change"):
        services.environment_rename(environment=prod, name="Live", actor="ops")
    assert snapshot() == before
    assert Environment.objects.get(pk=prod.pk).key == "prod"


@pytest.mark.parametrize("soak", ["9223372036854775807", str(400 * 24 * 3600)])
def test_admin_plan_add__soak_beyond_a_year__form_error_and_nothing_created(admin_client, soak):
    flag = Flag.objects.get(key="use_2pc")
    prod = Environment.objects.get(key="prod")
    before = snapshot()
    data = plan_data("2pc", flag, "true", [(prod.pk, "5")], **{"steps-0-min_soak_seconds": soak})
    response = admin_client.post(reverse("admin:rollout_rolloutplan_add"), data)
    assert response.status_code == 200 and errors(response)
    assert snapshot() == before


def test_admin_plan_bulk_delete__a_started_plan_among_them__refused_and_nothing_deleted(admin_client):
    flag = Flag.objects.get(key="use_2pc")
    draft = RolloutPlan.objects.create(name="draft", flag=flag, value=True)
    started = RolloutPlan.objects.create(
        name="started", flag=flag, value=True, status=RolloutPlan.Status.RUNNING
    )
    response = admin_client.post(
        reverse("admin:rollout_rolloutplan_changelist"),
        {"action": "delete_selected", "_selected_action": [draft.pk, started.pk], "post": "yes"},
    )
    assert response.status_code == 403
    assert sorted(RolloutPlan.objects.values_list("name", flat=True)) == ["draft", "started"]
    assert not AuditEntry.objects.filter(action="plan.delete").exists()
