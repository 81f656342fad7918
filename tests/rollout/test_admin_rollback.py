"""The revision page: rolling back one flag (chosen) is the default action, restoring the whole
environment a separate one; each shows exactly what will change before it is confirmed."""

import html

import pytest
from django.urls import reverse

from audit.models import AuditEntry
from rollout import services
from rollout.models import Environment, Flag, FlagState, Revision

from ..factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def prod():
    return Environment.objects.get(key="prod")


@pytest.fixture
def start(prod):
    """The revision before use_zstd was ramped and, by someone else, use_2pc switched on."""
    revision = prod.revisions.order_by("-number").first()
    for key in ("use_zstd", "use_2pc"):
        services.flag_state_update(
            flag=Flag.objects.get(key=key),
            environment=prod,
            actor="ops",
            enabled=True,
            value=True,
            percentage="5",
        )
    return revision


def enabled(key):
    return FlagState.objects.get(flag__key=key, environment__key="prod").enabled


def page(response):
    return html.unescape(response.content.decode())


def latest(prod):
    return prod.revisions.order_by("-number").first()


def test_admin_revision_page__offers_one_flag_rollback_and_whole_restore(admin_client, prod, start):
    shown = page(admin_client.get(reverse("admin:rollout_revision_change", args=[start.pk])))
    assert 'id="rollback-flag"' in shown and '<option value="use_zstd">' in shown
    assert 'id="restore-button"' in shown
    ramp = latest(prod)  # switched use_2pc on: that flag is the one chosen
    shown = page(admin_client.get(reverse("admin:rollout_revision_change", args=[ramp.pk])))
    assert '<option value="use_2pc" selected>' in shown


def test_admin_rollback_one_flag__preview_then_confirm__only_that_flag_goes_back(admin_client, prod, start):
    url = reverse("admin:rollout_revision_rollback", args=[start.pk])
    revisions = Revision.objects.count()
    preview = page(admin_client.get(url, {"flag": "use_zstd"}))
    assert "use_zstd" in preview and "use_2pc" not in preview.split('class="rollback-preview"')[1]
    assert Revision.objects.count() == revisions  # a preview changes nothing
    now = latest(prod).number
    response = admin_client.post(url, {"flag": "use_zstd", "latest": now, "reason": "undo the ramp"})
    assert response.status_code == 302
    assert not enabled("use_zstd") and enabled("use_2pc")
    rolled = latest(prod)
    assert rolled.rolled_back_to == start.number and {c["flag"] for c in rolled.diff} == {"use_zstd"}
    assert AuditEntry.objects.get(action="flag.rollback").detail["reason"] == "undo the ramp"


def test_admin_restore_whole_environment__preview_then_confirm__every_flag_back(admin_client, prod, start):
    url = reverse("admin:rollout_revision_restore", args=[start.pk])
    preview = page(admin_client.get(url))
    table = preview.split('class="rollback-preview"')[1]
    assert "use_zstd" in table and "use_2pc" in table
    response = admin_client.post(url, {"latest": latest(prod).number})
    assert response.status_code == 302
    assert not enabled("use_zstd") and not enabled("use_2pc")
    assert latest(prod).document["flags"] == start.document["flags"]


def test_admin_rollback__environment_changed_since_the_preview__new_preview_and_nothing_changes(
    admin_client, prod, start
):
    url = reverse("admin:rollout_revision_rollback", args=[start.pk])
    seen = latest(prod).number
    services.flag_state_update(
        flag=Flag.objects.get(key="use_zstd"), environment=prod, actor="bob", percentage="25"
    )
    revisions = Revision.objects.count()
    response = admin_client.post(url, {"flag": "use_zstd", "latest": seen})
    assert response.status_code == 200 and "changed since that preview" in page(response)
    assert "25.0" in page(response).split('class="rollback-preview"')[1]  # the preview shows it now
    assert Revision.objects.count() == revisions and enabled("use_zstd")


@pytest.mark.parametrize("flag", ["", "nope"])
def test_admin_rollback__no_such_flag__message_and_nothing_changes(admin_client, start, flag):
    revisions = Revision.objects.count()
    url = reverse("admin:rollout_revision_rollback", args=[start.pk])
    response = admin_client.post(url, {"flag": flag, "latest": 99}, follow=True)
    assert response.status_code == 200 and "Choose a flag" in page(response)
    assert Revision.objects.count() == revisions


def test_admin_rollback__nothing_to_undo__says_so(admin_client, prod, start):
    url = reverse("admin:rollout_revision_rollback", args=[latest(prod).pk])
    revisions = Revision.objects.count()
    response = admin_client.post(url, {"flag": "use_zstd", "latest": latest(prod).number})
    assert response.status_code == 200 and "Nothing to roll back" in page(response)
    assert Revision.objects.count() == revisions


def test_admin_rollback__staff_without_the_flag_right__403(client, start):
    client.force_login(UserFactory(is_staff=True, permissions=["rollout.view_revision"]))
    for name in ("rollout_revision_rollback", "rollout_revision_restore"):
        url = reverse(f"admin:{name}", args=[start.pk])
        assert client.get(url, {"flag": "use_zstd"}).status_code == 403
        assert client.post(url, {"flag": "use_zstd", "latest": 1}).status_code == 403
    assert enabled("use_zstd")
