"""The rollout admin's forms go through the services: what they create is complete, and
what they refuse comes back as a form error, never a 500."""

import pytest
from django.urls import reverse

from rollout.models import Environment, Flag

pytestmark = pytest.mark.django_db


def test_admin__add_environment__flags_and_first_revision_with_it(admin_client):
    response = admin_client.post(reverse("admin:rollout_environment_add"), {"key": "qa", "name": "QA"})
    assert response.status_code == 302
    qa = Environment.objects.get(key="qa")
    assert qa.flag_states.count() == Flag.objects.count() and qa.revisions.count() == 1


def test_admin__environment_key__not_editable_once_created(admin_client):
    prod = Environment.objects.get(key="prod")
    admin_client.post(
        reverse("admin:rollout_environment_change", args=[prod.pk]), {"key": "live", "name": "Live"}
    )
    prod.refresh_from_db()
    assert (prod.key, prod.name) == ("prod", "Live")


def test_admin__sdk_key_refused_by_the_model__form_error_not_500(admin_client, monkeypatch):
    from django.core.exceptions import ValidationError

    from rollout.models import SdkKey

    def refuse(self, *args, **kwargs):
        raise ValidationError("no keys today")

    monkeypatch.setattr(SdkKey, "full_clean", refuse)
    prod = Environment.objects.get(key="prod")
    response = admin_client.post(reverse("admin:rollout_sdkkey_add"), {"environment": prod.pk, "name": "x"})
    assert response.status_code == 200 and "no keys today" in response.content.decode()
    assert not SdkKey.objects.exists()
