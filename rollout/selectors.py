"""Reads of the rollout app that span relations: one place for each query shape."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Max, QuerySet

from .models import Environment, FlagState, Revision


def revision_latest(*, environment: Environment) -> Revision | None:
    return environment.revisions.order_by("-number").first()


def revision_numbers_latest(*, environments: Iterable[Environment]) -> dict[str, int | None]:
    """Each environment's current revision number, by environment key (None before any)."""
    wanted = {environment.pk: environment.key for environment in environments}
    latest = dict(
        Revision.objects.filter(environment_id__in=wanted)
        .values("environment_id")
        .annotate(number=Max("number"))
        .values_list("environment_id", "number")
    )
    return {key: latest.get(pk) for pk, key in wanted.items()}


def revision_latest_for_key(*, environment_key: str) -> Revision | None:
    return (
        Revision.objects.filter(environment__key=environment_key)
        .select_related("environment")
        .order_by("-number")
        .first()
    )


def revision_number_etag_latest(*, environment_key: str) -> tuple[int, str] | None:
    """The latest revision's number and ETag: the cheap check a process caching in its own
    memory makes before trusting its copy (one indexed row)."""
    row: tuple[int, str] | None = (
        Revision.objects.filter(environment__key=environment_key)
        .order_by("-number")
        .values_list("number", "etag")
        .first()
    )
    return row


def flag_states_of(*, environment: Environment) -> QuerySet[FlagState]:
    """Every flag's state in ``environment``, with its flag, in key order."""
    return FlagState.objects.filter(environment=environment).select_related("flag").order_by("flag__key")
