"""Telemetry writes: admitting and storing batches, counting refusals, rolling raw batches up
per minute, and deleting what is past retention.

Why raw rows first and a rollup task after, rather than adding into the rollups as batches
arrive: a fleet's batches all name the same flags and cohorts in the same minute, so adding on
ingest would make every request update the same few rows (each waiting for the row lock the
previous request holds) and merge sketches under that lock; one INSERT per batch contends on
nothing, and the task merges thousands of batches per transaction (bench/telemetry_ingest.py
measures both halves).

* The ingestion limit is a fixed window per environment (``TELEMETRY_LIMIT_WINDOW_SECONDS``)
  counted in the cache: with Redis every web process shares it; with process memory (the
  embedded default) each process counts its own. A cache outage admits (telemetry is not
  worth refusing a fleet over).
* Refused and replayed batches are counted in process memory and added to
  ``IngestionMinute`` at most once a second per process, so an overloaded service does not
  also write a row per refusal.
* Aggregation claims unaggregated raw rows (``skip_locked``: two runs never take the same
  rows), merges them with the rollup rows they touch, and marks them aggregated, in one
  transaction per chunk: a crash rolls the chunk back and the next run takes it again.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.core.cache import cache
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from .activity import evaluations_record
from .conf import telemetry_settings
from .models import CohortRollup, EvaluationRollup, IngestionMinute, RawBatch
from .sketch import histogram_merge, sketch_merge
from .wire import Batch, canonical, parse_payload

logger = logging.getLogger("analemma.telemetry")

COUNTS_FLUSH_SECONDS = 1.0
_counts_lock = threading.Lock()
# (environment, minute as unix seconds) -> {"refused": n, "duplicates": n}, not yet written.
_pending_counts: dict[tuple[str, int], dict[str, int]] = {}
_last_flush = [0.0]


# Namespaces: what a batch is filed under. An SDK key's batches go under its environment's key;
# a write key's (a hydrator with no flag client) under its owner's, ``owner:<owner id>``. An
# environment key cannot hold a colon, so the two never meet, and an owner id is the whole rest.
OWNER_NAMESPACE = "owner:"


def owner_namespace(owner_id: str) -> str:
    """Where the batches of ``owner_id``'s write keys are filed."""
    return f"{OWNER_NAMESPACE}{owner_id}"


def namespace_owner(namespace: str) -> str | None:
    """The owner id an ``owner:`` namespace files for; None for an environment's."""
    return namespace[len(OWNER_NAMESPACE) :] if namespace.startswith(OWNER_NAMESPACE) else None


def minute_of(moment: float) -> datetime:
    return datetime.fromtimestamp(int(moment // 60) * 60, tz=UTC)


# Ingestion ------------------------------------------------------------------------------------
def ingestion_admit(*, environment: str, now: float) -> int | None:
    """None when ``environment`` may file one more batch now; else the seconds until it may
    (its current window is spent)."""
    conf = telemetry_settings()
    if conf.max_batches_per_second <= 0:
        return None
    window = conf.limit_window_seconds
    index = int(now // window)
    key = f"telemetry:limit:{environment}:{index}"
    try:
        try:
            used = cache.incr(key)
        except ValueError:  # the window's first batch (in this cache)
            used = 1 if cache.add(key, 1, window * 2) else cache.incr(key)
    except Exception as exc:  # a cache outage must not refuse every fleet
        logger.warning("telemetry limit not checked, cache unavailable (%s)", exc)
        return None
    if used <= conf.batches_per_window:
        return None
    return max(1, math.ceil((index + 1) * window - now))


def batch_ingest(*, environment: str, batch: Batch, received_at: datetime) -> bool:
    """Store ``batch`` for ``environment``; False (and nothing changed) when that environment
    already has a batch with its id. One statement, no transaction around it: the unique
    constraint decides, and a replay is not an error to roll back."""
    table = RawBatch._meta.db_table
    ops = connection.ops
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (environment, batch, minute, received_at, sdk, dropped, payload) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (environment, batch) DO NOTHING RETURNING id",
            [
                environment,
                batch.batch_id,
                ops.adapt_datetimefield_value(datetime.fromtimestamp(batch.minute, tz=UTC)),
                ops.adapt_datetimefield_value(received_at),
                batch.sdk,
                batch.dropped,
                batch.payload(),
            ],
        )
        return cursor.fetchone() is not None


def ingestion_count(*, environment: str, now: float, refused: int = 0, duplicates: int = 0) -> None:
    """Count a refused or replayed batch; written to the database within a second."""
    with _counts_lock:
        counts = _pending_counts.setdefault((environment, int(now // 60) * 60), {})
        counts["refused"] = counts.get("refused", 0) + refused
        counts["duplicates"] = counts.get("duplicates", 0) + duplicates
    ingestion_counts_flush(now=now)


def ingestion_counts_flush(*, now: float, force: bool = False) -> int:
    """Write this process's pending counts when the last write is a second old (or ``force``);
    returns how many rows were written."""
    with _counts_lock:
        if not _pending_counts or (not force and now - _last_flush[0] < COUNTS_FLUSH_SECONDS):
            return 0
        pending = dict(_pending_counts)
        _pending_counts.clear()
        _last_flush[0] = now
    for (environment, minute), counts in pending.items():
        _ingestion_add(environment, datetime.fromtimestamp(minute, tz=UTC), **counts)
    return len(pending)


def _ingestion_add(environment: str, minute: datetime, **deltas: int) -> None:
    deltas = {name: delta for name, delta in deltas.items() if delta}
    if not deltas:
        return
    rows = IngestionMinute.objects.filter(environment=environment, minute=minute)
    if rows.update(**{name: F(name) + delta for name, delta in deltas.items()}):
        return
    try:
        with transaction.atomic():
            IngestionMinute.objects.create(environment=environment, minute=minute, **deltas)
    except IntegrityError:  # another process created it meanwhile
        rows.update(**{name: F(name) + delta for name, delta in deltas.items()})


# Aggregation ----------------------------------------------------------------------------------
def series_of(*parts: Any) -> str:
    return hashlib.sha256(canonical(list(parts)).encode()).hexdigest()[:32]


@dataclass
class _EvaluationGroup:
    flag: str
    variant: str | None
    value: str
    reason: str
    evaluations: int = 0
    sketches: list[bytes] = field(default_factory=list)


@dataclass
class _CohortGroup:
    cohort: str
    reports: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    latency: dict[str, list[dict[int, int]]] = field(default_factory=dict)


@dataclass
class AggregationResult:
    batches: int = 0
    evaluation_rollups: int = 0
    cohort_rollups: int = 0
    chunks: int = 0


def _matching(pairs: Iterable[tuple[str, datetime]], series: set[str]) -> Q:
    query = Q(pk__in=[])
    for environment, minute in pairs:
        query |= Q(environment=environment, minute=minute)
    return query & Q(series__in=series)


class _Rollup:
    """One chunk's raw batches, grouped by the rollup row each part adds to."""

    def __init__(self) -> None:
        self.evaluations: dict[tuple[str, datetime, str], _EvaluationGroup] = {}
        self.cohorts: dict[tuple[str, datetime, str], _CohortGroup] = {}
        self.stats: dict[tuple[str, datetime], dict[str, int]] = {}
        self._series: dict[tuple[Any, ...], str] = {}

    def _series_of(self, *identity: Any) -> str:
        series = self._series.get(identity)
        if series is None:
            series = self._series[identity] = series_of(*identity)
        return series

    def add(self, environment: str, minute: datetime, dropped: int, payload: str) -> None:
        evaluations, cohorts = parse_payload(payload)
        stats = self.stats.setdefault((environment, minute), {"batches": 0, "evaluations": 0, "dropped": 0})
        stats["batches"] += 1
        stats["dropped"] += dropped
        for e in evaluations:
            identity = (e.flag, e.variant, e.value, e.reason)
            key = (environment, minute, self._series_of(*identity))
            group = self.evaluations.get(key)
            if group is None:
                group = self.evaluations[key] = _EvaluationGroup(*identity)
            group.evaluations += e.count
            stats["evaluations"] += e.count
            if e.units is not None:
                group.sketches.append(base64.b64decode(e.units))
        for c in cohorts:
            key = (environment, minute, self._series_of(c.cohort))
            cohort = self.cohorts.get(key)
            if cohort is None:
                cohort = self.cohorts[key] = _CohortGroup(c.cohort)
            cohort.reports += 1
            for name, count in c.counters.items():
                cohort.counters[name] = cohort.counters.get(name, 0) + count
            for name, histogram in c.latency.items():
                cohort.latency.setdefault(name, []).append(histogram)


def _aggregate_chunk(*, now: datetime, chunk: int) -> tuple[int, int, int]:
    """Roll up at most ``chunk`` unaggregated batches in one transaction; returns (batches,
    evaluation rollups, cohort rollups) written."""
    with transaction.atomic():
        rows = list(
            RawBatch.objects.select_for_update(skip_locked=True)
            .filter(aggregated_at__isnull=True)
            .order_by("id")
            .values_list("id", "environment", "minute", "dropped", "payload")[:chunk]
        )
        if not rows:
            return 0, 0, 0
        rollup = _Rollup()
        for _, environment, minute, dropped, payload in rows:
            rollup.add(environment, minute, dropped, payload)
        _write_evaluations(rollup.evaluations)
        # "Last evaluated" per flag and environment, kept here so nobody scans rollups for it.
        evaluations_record((key[0], group.flag, key[1]) for key, group in rollup.evaluations.items())
        _write_cohorts(rollup.cohorts)
        for (environment, minute), counts in rollup.stats.items():
            _ingestion_add(environment, minute, **counts)
        RawBatch.objects.filter(id__in=[row[0] for row in rows]).update(aggregated_at=now)
    return len(rows), len(rollup.evaluations), len(rollup.cohorts)


def _write_evaluations(groups: dict[tuple[str, datetime, str], _EvaluationGroup]) -> None:
    if not groups:
        return
    pairs = {(environment, minute) for environment, minute, _ in groups}
    existing = {
        (row.environment, row.minute, row.series): row
        for row in EvaluationRollup.objects.select_for_update().filter(
            _matching(pairs, {series for _, _, series in groups})
        )
    }
    changed, created = [], []
    for key, group in groups.items():
        row = existing.get(key)
        sketches = list(group.sketches)
        if row is None:
            row = EvaluationRollup(
                environment=key[0],
                minute=key[1],
                series=key[2],
                flag=group.flag,
                variant=group.variant,
                value=group.value,
                reason=group.reason,
            )
            created.append(row)
        else:
            changed.append(row)
            if row.units:
                sketches.append(bytes(row.units))
        row.evaluations += group.evaluations
        row.units = sketch_merge(sketches) if sketches else None
    EvaluationRollup.objects.bulk_update(changed, ["evaluations", "units"], batch_size=500)
    EvaluationRollup.objects.bulk_create(created, batch_size=500)


def _write_cohorts(groups: dict[tuple[str, datetime, str], _CohortGroup]) -> None:
    if not groups:
        return
    pairs = {(environment, minute) for environment, minute, _ in groups}
    existing = {
        (row.environment, row.minute, row.series): row
        for row in CohortRollup.objects.select_for_update().filter(
            _matching(pairs, {series for _, _, series in groups})
        )
    }
    changed, created = [], []
    for key, group in groups.items():
        row = existing.get(key)
        if row is None:
            row = CohortRollup(environment=key[0], minute=key[1], series=key[2], cohort=group.cohort)
            created.append(row)
        else:
            changed.append(row)
        row.reports += group.reports
        counters = dict(row.counters)
        for name, count in group.counters.items():
            counters[name] = counters.get(name, 0) + count
        row.counters = counters
        latency = {name: {int(b): c for b, c in stored.items()} for name, stored in row.latency.items()}
        for name, histograms in group.latency.items():
            merged = histogram_merge([latency.get(name, {}), *histograms])
            latency[name] = merged
        row.latency = {name: {str(b): c for b, c in sorted(h.items())} for name, h in latency.items()}
    CohortRollup.objects.bulk_update(changed, ["reports", "counters", "latency"], batch_size=500)
    CohortRollup.objects.bulk_create(created, batch_size=500)


def telemetry_aggregate(
    *, now: datetime | None = None, chunk: int | None = None, max_seconds: float = 50.0
) -> AggregationResult:
    """Roll every unaggregated raw batch up into its minute's rollups, a chunk per
    transaction, for at most about ``max_seconds`` (the next run goes on)."""
    now = now or timezone.now()
    chunk = chunk or telemetry_settings().aggregate_chunk
    result = AggregationResult()
    started = time.monotonic()
    while time.monotonic() - started < max_seconds:
        for attempt in (1, 2):
            try:
                batches, evaluation_rollups, cohort_rollups = _aggregate_chunk(now=now, chunk=chunk)
                break
            except IntegrityError:  # a concurrent run created one of the same rollup rows first
                if attempt == 2:
                    raise
            except OperationalError as exc:
                # Two runs at once may each lock a rollup row the other one wants: PostgreSQL
                # rolls one chunk back (a deadlock), which is then done again.
                if attempt == 2 or getattr(exc.__cause__, "sqlstate", None) != "40P01":
                    raise
        if not batches:
            break
        result.chunks += 1
        result.batches += batches
        result.evaluation_rollups += evaluation_rollups
        result.cohort_rollups += cohort_rollups
        if batches < chunk:
            break
    return result


@dataclass(frozen=True)
class PruneResult:
    raw_batches: int
    rollups: int


def telemetry_prune(*, now: datetime | None = None) -> PruneResult:
    """Delete aggregated raw batches past ``TELEMETRY_RAW_RETENTION_SECONDS`` and rollups past
    ``TELEMETRY_ROLLUP_RETENTION_DAYS``."""
    now = now or timezone.now()
    conf = telemetry_settings()
    raw, _ = RawBatch.objects.filter(
        received_at__lt=now - conf.raw_retention, aggregated_at__isnull=False
    ).delete()
    cutoff = now - conf.rollup_retention
    rollups = sum(
        model.objects.filter(minute__lt=cutoff).delete()[0]
        for model in (EvaluationRollup, CohortRollup, IngestionMinute)
    )
    return PruneResult(raw_batches=raw, rollups=rollups)
