"""Environments: each one a flag set of its own, served from its first revision on."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from audit.services import audit_record

from ..models import Environment, Flag, FlagState
from .revisions import revision_create


def environment_create(*, key: str, name: str, actor: str) -> Environment:
    """A new environment with every flag off in it and a first revision, so its SDK keys
    are served a flag set at once."""
    with transaction.atomic():
        environment = Environment(key=key, name=name)
        environment.full_clean()
        environment.save()
        FlagState.objects.bulk_create(
            FlagState(flag=flag, environment=environment, enabled=False, value=flag.default_value)
            for flag in Flag.objects.all()
        )
        revision_create(environment=environment, actor=actor, reason=f"created environment {key}")
        audit_record(action="environment.create", actor=actor, target=key, environment=key, name=name)
    return environment


def environment_rename(*, environment: Environment, name: str, actor: str) -> Environment:
    """A new display name. The key stays: SDK keys and documents carry it."""
    with transaction.atomic():
        locked = Environment.objects.select_for_update().get(pk=environment.pk)
        if environment.key != locked.key:
            raise ValidationError(
                {"key": f"an environment's key cannot change (SDK keys carry it): it stays {locked.key!r}"}
            )
        before, locked.name = locked.name, name
        locked.full_clean()
        locked.save(update_fields=["name"])
        if before != name:
            audit_record(
                action="environment.rename",
                actor=actor,
                target=locked.key,
                environment=locked.key,
                before=before,
            )
    return locked
