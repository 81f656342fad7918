"""Reads of the rollout app that span relations: one place for each query shape."""

from __future__ import annotations

from collections.abc import Iterable
from functools import reduce
from operator import or_

from django.db.models import F, Max, Q, QuerySet, Window
from django.db.models.functions import RowNumber

from .models import Environment, FlagState, FlagVersion, Revision


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


def flag_history(*, flag_key: str, per_environment: int = 20) -> list[tuple[FlagVersion, Revision]]:
    """The revisions that changed ``flag_key``, newest first, at most ``per_environment`` in
    each environment, each with the flag's version it opened: two queries, whatever the
    number of environments or revisions."""
    ranked = FlagVersion.objects.filter(flag_key=flag_key).annotate(
        rank=Window(RowNumber(), partition_by=F("environment_id"), order_by=F("since").desc())
    )
    versions = list(ranked.filter(rank__lte=per_environment).order_by("environment_id", "-since"))
    if not versions:
        return []
    wanted = reduce(or_, (Q(environment_id=v.environment_id, number=v.since) for v in versions))
    revisions = {
        (r.environment_id, r.number): r for r in Revision.objects.filter(wanted).select_related("environment")
    }
    return [
        (v, revisions[v.environment_id, v.since])
        for v in versions
        if (v.environment_id, v.since) in revisions
    ]
