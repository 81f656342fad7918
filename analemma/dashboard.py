"""The admin's home page: what is rolling out, what changed, and how the state bag is doing,
read from the database (every process writes its rows there, so the page is the same whichever
process serves it).

Every figure is an aggregate over a bounded time window on an indexed time column, so the page
costs the same with a hundred executions or millions: commits per minute over the last hour and
per hour over the last day (``Manifest.created_at``), aborts and reaps
(``CommitTransaction.state, finished_at``), GC runs (``GCRun.kind, started_at``) and bytes
written (``Pack.created_at``). The one total, bytes stored, sums every live pack; it and the
per-hour series of the last day are kept for ``CACHE_SECONDS`` in the cache (the per-minute
series of the last hour is read on every view).

Bytes freed are what GC sweeps and the reaper deleted: the reaper deletes the uploads of the
transactions it aborts, and those bytes leave the store as surely as a sweep's.

Event counters such as ``statebag_2pc_bypassed_total`` are on /metrics, summed over the
processes (analemma.metrics); the page derives its windowed figures from rows
instead: a one-step version that uploaded packs is exactly what that counter counts while
USE_2PC is on. Client-side figures (evaluations, degraded-to-legacy, latencies)
and guard status are reported by the SDKs and arrive with telemetry; the page keeps them a place.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.db.models import Count, Max, Q, Sum
from django.db.models.functions import Trunc
from django.template.defaultfilters import filesizeformat
from django.utils import timezone

from audit.models import AuditEntry
from rollout.models import Environment, FlagState, RolloutPlan
from statebag.conf import statebag_settings
from statebag.models import CommitTransaction, GCRun, Manifest, Pack
from statebag.services.collection import REAPED_REASON

MINUTE, HOUR = timedelta(minutes=1), timedelta(hours=1)
STORED_BYTES_KEY = "analemma:dashboard:stored-bytes"
DAY_SERIES_KEY = "analemma:dashboard:day:{start:%Y%m%d%H}"
CACHE_SECONDS = 60
RECENT_CHANGES = 10
ACTIVE_PLANS = 10

# How each outcome is drawn and named; the order is the stacking order.
OUTCOMES = {
    "2pc": "committed, two-phase",
    "noupload": "committed, nothing to upload",
    "direct": "committed, one step with uploads",
    "aborted": "aborted",
    "reaped": "reaped (expired)",
}
LABELS = {**OUTCOMES, "written": "bytes written", "freed": "bytes freed", "runs": "GC runs"}
# The sweeps whose deletions count as bytes freed.
FREEING_KINDS = (GCRun.Kind.GC, GCRun.Kind.REAP)


@dataclass(frozen=True)
class Segment:
    y: float
    height: float
    css: str


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    segments: list[Segment]
    title: str


@dataclass(frozen=True)
class Chart:
    """A small bar chart drawn by the template as inline SVG (no script, no library)."""

    bars: list[Bar]
    peak: int
    peak_label: str
    first_label: str
    last_label: str
    width: int = 300
    height: int = 60


@dataclass(frozen=True)
class Series:
    """Counts per time bucket, oldest first, one list per name."""

    start: datetime
    step: timedelta
    buckets: int
    values: dict[str, list[int]]

    def total(self, name: str) -> int:
        return sum(self.values.get(name, ()))

    def chart(self, names: Sequence[str], *, in_bytes: bool = False) -> Chart:
        width, height, gap = 300, 60, 1.0
        slot = width / self.buckets
        sums = [sum(self.values[name][i] for name in names) for i in range(self.buckets)]
        peak = max(sums, default=0)
        bars = []
        for i, total in enumerate(sums):
            if not total:
                continue
            top = float(height)
            segments = []
            for name in names:
                value = self.values[name][i]
                if value:
                    size = height * value / peak
                    top -= size
                    segments.append(Segment(round(top, 2), round(size, 2), f"series-{name}"))
            at = timezone.localtime(self.start + i * self.step)
            parts = ", ".join(f"{self.values[n][i]:,} {LABELS.get(n, n)}" for n in names if self.values[n][i])
            bars.append(
                Bar(round(i * slot, 2), round(max(slot - gap, 0.5), 2), segments, f"{at:%H:%M}: {parts}")
            )
        span = self.buckets * self.step
        first = f"{span // HOUR} h ago" if span >= 2 * HOUR else f"{span // MINUTE} min ago"
        peak_label = str(filesizeformat(peak)) if in_bytes else f"{peak:,}"
        return Chart(bars, peak, peak_label, first, "now", width, height)


@dataclass(frozen=True)
class FlagCounts:
    environment: str
    on: int
    rolling: int
    off: int

    @property
    def total(self) -> int:
        return self.on + self.rolling + self.off


@dataclass(frozen=True)
class PlanRow:
    plan: RolloutPlan
    steps_total: int
    steps_applied: int


COMMITTED = ("2pc", "noupload", "direct")


@dataclass(frozen=True)
class OutcomeRow:
    name: str
    label: str
    hour: int
    day: int


@dataclass
class StatebagHealth:
    commits_hour: Series
    commits_day: Series
    bytes_day: Series
    gc_day: Series
    use_2pc: bool
    bypassed_hour: int
    bypassed_day: int
    prepared_open: int
    prepared_expired: int
    gc_runs_day: int
    gc_freed_bytes_day: int
    gc_deleted_objects_day: int
    last_sweeps: list[tuple[str, str, datetime | None]]  # kind, its name, when it last started
    stored_bytes: int
    stored_packs: int
    charts: dict[str, Chart] = field(default_factory=dict)

    @property
    def outcomes(self) -> list[OutcomeRow]:
        return [
            OutcomeRow(name, label, self.commits_hour.total(name), self.commits_day.total(name))
            for name, label in OUTCOMES.items()
        ]

    @property
    def committed_hour(self) -> int:
        return sum(self.commits_hour.total(name) for name in COMMITTED)

    @property
    def reaped_hour(self) -> int:
        return self.commits_hour.total("reaped")

    @property
    def reaped_day(self) -> int:
        return self.commits_day.total("reaped")


@dataclass
class Dashboard:
    generated_at: datetime
    plans: list[PlanRow] | None = None
    plans_running: int = 0
    changes: list[AuditEntry] | None = None
    flags: list[FlagCounts] | None = None
    statebag: StatebagHealth | None = None


def dashboard_build(
    *, now: datetime | None = None, rollout: bool = True, audit: bool = True, statebag: bool = True
) -> Dashboard:
    """The dashboard's figures; a section the viewer may not see is left out (None)."""
    now = now or timezone.now()
    board = Dashboard(generated_at=now)
    if rollout:
        board.plans, board.plans_running = _plans()
        board.flags = _flags_by_state()
    if audit:
        board.changes = list(AuditEntry.objects.order_by("-created_at")[:RECENT_CHANGES])
    if statebag:
        board.statebag = statebag_health(now)
    return board


# Rollout ------------------------------------------------------------------------------------
def _plans() -> tuple[list[PlanRow], int]:
    active = (RolloutPlan.Status.RUNNING, RolloutPlan.Status.PAUSED)
    plans = (
        RolloutPlan.objects.filter(status__in=active)
        .select_related("flag")
        .annotate(
            steps_total=Count("steps"),
            steps_applied=Count("steps", filter=Q(steps__applied_at__isnull=False)),
        )
        .order_by("-updated_at")[:ACTIVE_PLANS]
    )
    rows = [PlanRow(plan, plan.steps_total, plan.steps_applied) for plan in plans]
    running = RolloutPlan.objects.filter(status=RolloutPlan.Status.RUNNING).count()
    return rows, running


def _flags_by_state() -> list[FlagCounts]:
    """Per environment: on for everyone, rolling out (variants, or a percentage strictly between
    0 and 100), off (switched off, or on for 0 % with no variants: nobody gets the value)."""
    no_variants = Q(variants=[])
    rolling = Q(enabled=True) & (~no_variants | Q(percentage__gt=0, percentage__lt=100))
    off = Q(enabled=False) | (no_variants & Q(percentage=0))
    counts = dict(
        (row["environment_id"], row)
        for row in FlagState.objects.values("environment_id").annotate(
            total=Count("pk"),
            off=Count("pk", filter=off),
            rolling=Count("pk", filter=rolling),
        )
    )
    rows = []
    for environment in Environment.objects.order_by("pk"):
        row = counts.get(environment.pk, {"total": 0, "off": 0, "rolling": 0})
        on = row["total"] - row["off"] - row["rolling"]
        rows.append(FlagCounts(environment.key, on, row["rolling"], row["off"]))
    return rows


# State bag ----------------------------------------------------------------------------------
def _floor(moment: datetime, step: timedelta) -> datetime:
    seconds = int(step.total_seconds())
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, tz=UTC)


def _series(
    names: Iterable[str], start: datetime, step: timedelta, buckets: int, rows: Iterable[tuple[str, Any, int]]
) -> Series:
    values = {name: [0] * buckets for name in names}
    for name, moment, count in rows:
        if moment is None or name not in values:
            continue
        index = int((moment - start).total_seconds() // step.total_seconds())
        if 0 <= index < buckets:
            values[name][index] += int(count or 0)
    return Series(start, step, buckets, values)


def _outcomes(start: datetime, step: timedelta, buckets: int) -> Series:
    """Committed versions by how they were committed, and aborted transactions by whether the
    reaper (the reason it records) or a caller aborted them, per bucket."""
    unit = "minute" if step == MINUTE else "hour"
    committed = (
        Manifest.objects.filter(created_at__gte=start)
        .annotate(bucket=Trunc("created_at", unit, tzinfo=UTC))
        .values("committed_via", "bucket")
        .annotate(n=Count("pk"))
        .values_list("committed_via", "bucket", "n")
    )
    aborted = (
        CommitTransaction.objects.filter(state=CommitTransaction.State.ABORTED, finished_at__gte=start)
        .annotate(bucket=Trunc("finished_at", unit, tzinfo=UTC))
        .values("bucket")
        # A client may abort after its transaction expired: only the reaper's reason says reaped.
        .annotate(reaped=Count("pk", filter=Q(reason=REAPED_REASON)), n=Count("pk"))
        .values_list("bucket", "reaped", "n")
    )
    rows: list[tuple[str, Any, int]] = list(committed)
    for bucket, reaped, n in aborted:
        rows += [("reaped", bucket, reaped), ("aborted", bucket, n - reaped)]
    return _series(OUTCOMES, start, step, buckets, rows)


def _stored_bytes() -> tuple[int, int]:
    cached = cache.get(STORED_BYTES_KEY)
    if cached is None:
        totals = Pack.objects.filter(state=Pack.State.LIVE).aggregate(size=Sum("size"), packs=Count("pk"))
        cached = (int(totals["size"] or 0), int(totals["packs"] or 0))
        cache.set(STORED_BYTES_KEY, cached, CACHE_SECONDS)
    return cached[0], cached[1]


@dataclass(frozen=True)
class DaySeries:
    """The last day's per-hour figures, and what the GC card lists beside them."""

    commits: Series
    written: Series
    gc: Series
    gc_deleted_objects: int


def _day_series(day_start: datetime) -> DaySeries:
    """Per hour over the last day; kept for ``CACHE_SECONDS`` (its key names its first hour, so
    a new hour starts a new entry)."""
    key = DAY_SERIES_KEY.format(start=day_start)
    cached = cache.get(key)
    if isinstance(cached, DaySeries):
        return cached
    written = (
        Pack.objects.filter(created_at__gte=day_start)
        .annotate(bucket=Trunc("created_at", "hour", tzinfo=UTC))
        .values("bucket")
        .annotate(n=Sum("size"))
        .values_list("bucket", "n")
    )
    sweeps = list(
        GCRun.objects.filter(kind__in=FREEING_KINDS, started_at__gte=day_start)
        .annotate(bucket=Trunc("started_at", "hour", tzinfo=UTC))
        .values("bucket")
        .annotate(
            runs=Count("pk", filter=Q(kind=GCRun.Kind.GC)),
            freed=Sum("deleted_bytes"),
            deleted=Sum("deleted_objects"),
        )
        .values_list("bucket", "runs", "freed", "deleted")
    )
    series = DaySeries(
        commits=_outcomes(day_start, HOUR, 24),
        written=_series(["written"], day_start, HOUR, 24, (("written", b, n) for b, n in written)),
        gc=_series(
            ["runs", "freed"],
            day_start,
            HOUR,
            24,
            [
                *(("runs", b, runs) for b, runs, _, _ in sweeps),
                *(("freed", b, freed) for b, _, freed, _ in sweeps),
            ],
        ),
        gc_deleted_objects=sum(int(objects or 0) for _, _, _, objects in sweeps),
    )
    cache.set(key, series, CACHE_SECONDS)
    return series


def statebag_health(now: datetime) -> StatebagHealth:
    hour_start = _floor(now, MINUTE) - 59 * MINUTE
    day_start = _floor(now, HOUR) - 23 * HOUR
    commits_hour = _outcomes(hour_start, MINUTE, 60)
    day = _day_series(day_start)
    commits_day, bytes_day, gc_day = day.commits, day.written, day.gc
    transactions = CommitTransaction.objects.filter(state=CommitTransaction.State.PREPARED).aggregate(
        open=Count("pk"), expired=Count("pk", filter=Q(expires_at__lt=now))
    )
    last = dict(
        GCRun.objects.filter(started_at__gte=now - 7 * 24 * HOUR)
        .values("kind")
        .annotate(at=Max("started_at"))
        .values_list("kind", "at")
    )
    stored_bytes, stored_packs = _stored_bytes()
    health = StatebagHealth(
        commits_hour=commits_hour,
        commits_day=commits_day,
        bytes_day=bytes_day,
        gc_day=gc_day,
        use_2pc=statebag_settings().use_2pc,
        bypassed_hour=commits_hour.total("direct"),
        bypassed_day=commits_day.total("direct"),
        prepared_open=int(transactions["open"] or 0),
        prepared_expired=int(transactions["expired"] or 0),
        gc_runs_day=gc_day.total("runs"),
        gc_freed_bytes_day=gc_day.total("freed"),
        gc_deleted_objects_day=day.gc_deleted_objects,
        last_sweeps=[(kind.value, str(kind.label), last.get(kind.value)) for kind in GCRun.Kind],
        stored_bytes=stored_bytes,
        stored_packs=stored_packs,
    )
    outcomes = list(OUTCOMES)
    health.charts = {
        "commits_hour": commits_hour.chart(outcomes),
        "commits_day": commits_day.chart(outcomes),
        "bytes_day": bytes_day.chart(["written"], in_bytes=True),
        "gc_day": gc_day.chart(["freed"], in_bytes=True),
    }
    return health
