"""When each flag was last evaluated in each environment: written by the per-minute aggregation
(``evaluations_record``), read by the rollout admin through ``ROLLOUT_FLAG_ACTIVITY``
(``flag_activity``) for "Last evaluated" and for dead flags.

A row per (flag, environment) rather than a MAX over rollups: the flags list reads it for 50
flags at a time and the cleanup view for every flag, and both must cost one indexed query
however many rollups 90 days hold.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q

from .models import FlagActivity

ENVIRONMENT_ROW = FlagActivity.ENVIRONMENT_ROW


def evaluations_record(evaluated: Iterable[tuple[str, str, datetime]]) -> int:
    """Fold ``(environment, flag, minute)`` evaluations into the activity rows, and each
    environment's own row; run inside the aggregation's transaction (a chunk rolled back
    takes its activity with it). Returns how many rows were written."""
    wanted: dict[tuple[str, str], tuple[datetime, datetime]] = {}
    for environment, flag, minute in evaluated:
        for key in ((environment, flag), (environment, ENVIRONMENT_ROW)):
            first, last = wanted.get(key, (minute, minute))
            wanted[key] = (min(first, minute), max(last, minute))
    if not wanted:
        return 0
    match = Q(pk__in=[])
    for environment, flag in wanted:
        match |= Q(environment=environment, flag=flag)
    existing = {
        (row.environment, row.flag): row
        # Locked in one order: two aggregation runs at once wait for each other, not deadlock.
        for row in FlagActivity.objects.select_for_update().filter(match).order_by("environment", "flag")
    }
    changed, created = [], []
    for (environment, flag), (first, last) in wanted.items():
        row = existing.get((environment, flag))
        if row is None:
            created.append(
                FlagActivity(
                    environment=environment, flag=flag, first_evaluated_at=first, last_evaluated_at=last
                )
            )
        elif first < row.first_evaluated_at or last > row.last_evaluated_at:
            row.first_evaluated_at = min(row.first_evaluated_at, first)
            row.last_evaluated_at = max(row.last_evaluated_at, last)
            changed.append(row)
    FlagActivity.objects.bulk_update(changed, ["first_evaluated_at", "last_evaluated_at"], batch_size=500)
    FlagActivity.objects.bulk_create(created, batch_size=500)
    return len(changed) + len(created)


@dataclass(frozen=True)
class Activity:
    """What telemetry knows of flags' evaluations, by environment key."""

    # (flag key, environment key) -> the minute of the flag's latest evaluation reported there
    last_evaluated: dict[tuple[str, str], datetime]
    # environment key -> since when its SDKs report evaluations (any flag); absent: never
    reporting_since: dict[str, datetime]

    def last(self, flag: str, environment: str) -> datetime | None:
        return self.last_evaluated.get((flag, environment))


def flag_activity(flags: Iterable[str] | None = None) -> Activity:
    """The activity of ``flags`` (every flag when None), in one query."""
    rows = FlagActivity.objects.all()
    if flags is not None:
        rows = rows.filter(flag__in=[*flags, ENVIRONMENT_ROW])
    last_evaluated, reporting_since = {}, {}
    for environment, flag, first, last in rows.values_list(
        "environment", "flag", "first_evaluated_at", "last_evaluated_at"
    ):
        if flag == ENVIRONMENT_ROW:
            reporting_since[environment] = first
        else:
            last_evaluated[(flag, environment)] = last
    return Activity(last_evaluated=last_evaluated, reporting_since=reporting_since)
