"""Test data built the way the product builds it: users with factory_boy, keys through the
keys app's services (so a test's key is hashed, audited and cached like a real one)."""

from __future__ import annotations

from typing import Any

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from keys.services import key_create, key_scope
from rollout.models import Environment, SdkKey
from statebag.models import WriteKey


class UserFactory(factory.django.DjangoModelFactory):
    """A user; ``permissions=["app.codename", ...]`` grants model permissions."""

    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True  # permissions are rows of their own

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("pw-long-enough-1")
    is_staff = False

    @factory.post_generation
    def permissions(self, create: bool, extracted: list[str] | None, **kwargs: Any) -> None:
        for name in extracted or ():
            app_label, codename = name.split(".")
            self.user_permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )


def sdk_key(
    environment: str | Environment = "prod", *, actor: str = "ops", name: str = ""
) -> tuple[SdkKey, str]:
    """A new SDK key of ``environment`` and its text."""
    if isinstance(environment, str):
        environment = Environment.objects.get(key=environment)
    key = SdkKey(environment=environment, name=name)
    return key, key_create(key=key, actor=actor)


def write_key(owner_id: str = "acme", *, actor: str = "ops", name: str = "") -> tuple[WriteKey, str]:
    """A new write key of ``owner_id`` and its text."""
    key = WriteKey(owner_id=owner_id, name=name)
    return key, key_create(key=key, actor=actor)


def sdk_key_scope(raw: str) -> str | None:
    """The environment the service resolves an SDK key to (None: refused)."""
    return key_scope(model=SdkKey, raw=raw)


def write_key_owner(raw: str) -> str | None:
    return key_scope(model=WriteKey, raw=raw)
