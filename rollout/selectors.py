"""Reads of the rollout app that span relations: one place for each query shape."""

from __future__ import annotations

from django.db.models import QuerySet

from .models import Environment, FlagState, Revision


def revision_latest(*, environment: Environment) -> Revision | None:
    return environment.revisions.order_by("-number").first()


def revision_latest_for_key(*, environment_key: str) -> Revision | None:
    return (
        Revision.objects.filter(environment__key=environment_key)
        .select_related("environment")
        .order_by("-number")
        .first()
    )


def flag_states_of(*, environment: Environment) -> QuerySet[FlagState]:
    """Every flag's state in ``environment``, with its flag, in key order."""
    return FlagState.objects.filter(environment=environment).select_related("flag").order_by("flag__key")
