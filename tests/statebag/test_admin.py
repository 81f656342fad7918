import pytest
from django.urls import reverse

from statebag.models import Manifest, Pack

from ..factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    user = UserFactory(username="ops", is_staff=True, is_superuser=True)
    client.force_login(user)
    return client


def test_admin__manifest_page__shows_verified_chain(staff_client, recorded_execution):
    response = staff_client.get(reverse("admin:statebag_manifest_change", args=[recorded_execution.head.pk]))
    body = response.content.decode()
    assert response.status_code == 200
    assert body.count("hash verified") == 3
    assert recorded_execution.head.hash[:16] in body


@pytest.mark.parametrize("name", ["statebag_execution", "statebag_manifest", "statebag_pack"])
def test_admin__changelists__render_and_are_read_only(staff_client, recorded_execution, name):
    assert staff_client.get(reverse(f"admin:{name}_changelist")).status_code == 200
    assert staff_client.get(reverse(f"admin:{name}_add")).status_code == 403


def test_admin__post_to_manifest__changes_nothing(staff_client, recorded_execution):
    manifest = recorded_execution.head
    response = staff_client.post(
        reverse("admin:statebag_manifest_change", args=[manifest.pk]), {"version": 99}
    )
    assert response.status_code == 403
    assert Manifest.objects.get(pk=manifest.pk).version == manifest.version
    assert Pack.objects.exists()


def test_admin__non_staff__redirected_to_login(client, recorded_execution):
    user = UserFactory(username="viewer")
    client.force_login(user)
    response = client.get(reverse("admin:statebag_manifest_changelist"))
    assert response.status_code == 302 and "/login/" in response["Location"]
