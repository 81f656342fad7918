"""Write keys from the admin and from the command line: shown once, stored hashed, revocable."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from statebag.models import WriteKey

from ..factories import UserFactory, write_key_owner

pytestmark = pytest.mark.django_db


def test_command__create_prints_the_key_once_and_it_authenticates_for_its_owner(
    django_capture_on_commit_callbacks,
):
    out, err = io.StringIO(), io.StringIO()
    call_command("write_key", "create", "--owner", "acme", "--name", "lambda", stdout=out, stderr=err)
    raw = out.getvalue().strip()
    assert raw.startswith("awk_") and raw not in err.getvalue()
    assert write_key_owner(raw) == "acme"
    with django_capture_on_commit_callbacks(execute=True):
        call_command("write_key", "revoke", WriteKey.objects.get().prefix, stdout=io.StringIO())
    assert write_key_owner(raw) is None


def test_command__create_for_a_bad_owner__refused_with_the_reason():
    with pytest.raises(CommandError, match="invalid owner id"):
        call_command("write_key", "create", "--owner", "..", stdout=io.StringIO(), stderr=io.StringIO())
    assert not WriteKey.objects.exists()


def test_admin__create_page_shows_the_key_once_never_cached(admin_client):
    response = admin_client.post(reverse("admin:statebag_writekey_add"), {"owner_id": "acme", "name": "etl"})
    raw = response.content.decode().split('<code id="write-key">')[1].split("</code>")[0]
    assert "no-store" in response["Cache-Control"]
    key = WriteKey.objects.get()
    assert key.key_hash != raw and raw.startswith(key.prefix) and write_key_owner(raw) == "acme"
    listing = admin_client.get(reverse("admin:statebag_writekey_changelist")).content.decode()
    assert key.prefix in listing and raw not in listing and key.key_hash not in listing


def test_admin__revoke_action(admin_client):
    admin_client.post(reverse("admin:statebag_writekey_add"), {"owner_id": "acme"})
    key = WriteKey.objects.get()
    admin_client.post(
        reverse("admin:statebag_writekey_changelist"), {"action": "revoke", "_selected_action": [key.pk]}
    )
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_admin__staff_without_permission_cannot_create(client):
    user = UserFactory(username="viewer", is_staff=True)
    client.force_login(user)
    assert client.get(reverse("admin:statebag_writekey_add")).status_code == 403
    assert not WriteKey.objects.exists()


def test_admin__non_staff_redirected_to_login(client):
    user = UserFactory(username="someone")
    client.force_login(user)
    response = client.get(reverse("admin:statebag_writekey_add"))
    assert response.status_code == 302 and "/login/" in response["Location"]
