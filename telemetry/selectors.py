"""What telemetry says about a flag in an environment over a time range: the reads rollout
guards (``ROLLOUT_GUARDS``, by dotted path), the admin's charts and the CLI share.

* ``exposures``: evaluations and distinct units per (variant, value), all reasons together
  and per reason. Distinct units come from merged HyperLogLog sketches: an estimate with a
  standard error of about 6.5 % (``telemetry.sketch.STANDARD_ERROR``).
* ``exposures_by_minute``: the same per minute, for charts.
* ``cohort_split``: the statebag's per-cohort economics grouped by the value a flag had in
  the cohort (``{"true": ..., "false": ...}`` for a boolean flag: treatment and control at
  the same time), with the derived rates guards compare.
* ``ingestion``: batches, evaluations, dropped, refused and replayed per minute.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .models import CohortRollup, EvaluationRollup, IngestionMinute
from .sketch import histogram_merge, histogram_quantile, sketch_estimate, sketch_merge

REQUEST_COUNTERS = ("requests_get", "requests_put", "requests_head", "requests_list", "requests_delete")


@dataclass(frozen=True)
class Exposure:
    variant: str | None
    value: Any
    evaluations: int
    units: float | None  # estimated distinct units; None when no SDK tracked them
    by_reason: dict[str, int]


@dataclass(frozen=True)
class ExposurePoint:
    minute: datetime
    variant: str | None
    value: Any
    evaluations: int
    units: float | None


@dataclass
class CohortMetrics:
    """Counters summed and latency histograms merged over every cohort in a group."""

    cohorts: list[dict[str, Any]] = field(default_factory=list)
    reports: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    latency: dict[str, dict[int, int]] = field(default_factory=dict)

    @property
    def executions(self) -> int:
        return self.counters.get("executions", 0)

    def per_execution(self, counter: str) -> float | None:
        return self.counters.get(counter, 0) / self.executions if self.executions else None

    @property
    def requests(self) -> int:
        return sum(self.counters.get(name, 0) for name in REQUEST_COUNTERS)

    @property
    def requests_per_execution(self) -> float | None:
        return self.requests / self.executions if self.executions else None

    @property
    def error_rate(self) -> float | None:
        return self.per_execution("errors")

    @property
    def degraded_rate(self) -> float | None:
        return self.per_execution("degraded_to_legacy")

    def quantile(self, name: str, quantile: float) -> int | None:
        """The latency ``name`` (hydrate, dehydrate) at ``quantile``: at most this many ms."""
        return histogram_quantile(self.latency.get(name, {}), quantile)

    def summary(self) -> dict[str, Any]:
        return {
            "reports": self.reports,
            "executions": self.executions,
            "requests_per_execution": self.requests_per_execution,
            "bytes_written": self.counters.get("bytes_written", 0),
            "bytes_written_per_execution": self.per_execution("bytes_written"),
            "p50_hydrate_ms": self.quantile("hydrate", 0.5),
            "p95_hydrate_ms": self.quantile("hydrate", 0.95),
            "p50_dehydrate_ms": self.quantile("dehydrate", 0.5),
            "p95_dehydrate_ms": self.quantile("dehydrate", 0.95),
            "error_rate": self.error_rate,
            "degraded_to_legacy_rate": self.degraded_rate,
            "counters": dict(sorted(self.counters.items())),
        }


def _units(sketches: list[bytes], evaluations: int) -> float | None:
    """Distinct units estimated from the sketches, never more than the evaluations: every unit
    was evaluated at least once, and a sketch's error can overshoot a small count."""
    return min(sketch_estimate(sketch_merge(sketches)), float(evaluations)) if sketches else None


def _in_range(queryset: Any, since: datetime, until: datetime | None) -> Any:
    queryset = queryset.filter(minute__gte=since.replace(second=0, microsecond=0))
    return queryset.filter(minute__lte=until) if until is not None else queryset


def exposures(
    *, environment: str, flag: str, since: datetime, until: datetime | None = None
) -> list[Exposure]:
    """Per (variant, value), most evaluated first."""
    groups: dict[tuple[str | None, str], dict[str, Any]] = {}
    rows = _in_range(EvaluationRollup.objects.filter(environment=environment, flag=flag), since, until)
    for variant, value, reason, evaluations, units in rows.values_list(
        "variant", "value", "reason", "evaluations", "units"
    ):
        group = groups.setdefault((variant, value), {"evaluations": 0, "sketches": [], "by_reason": {}})
        group["evaluations"] += evaluations
        group["by_reason"][reason] = group["by_reason"].get(reason, 0) + evaluations
        if units:
            group["sketches"].append(bytes(units))
    found = [
        Exposure(
            variant=variant,
            value=json.loads(value),
            evaluations=group["evaluations"],
            units=_units(group["sketches"], group["evaluations"]),
            by_reason=dict(sorted(group["by_reason"].items())),
        )
        for (variant, value), group in groups.items()
    ]
    return sorted(found, key=lambda e: (-e.evaluations, str(e.variant), json.dumps(e.value)))


def exposures_by_minute(
    *, environment: str, flag: str, since: datetime, until: datetime | None = None
) -> list[ExposurePoint]:
    groups: dict[tuple[datetime, str | None, str], list[Any]] = {}
    rows = _in_range(EvaluationRollup.objects.filter(environment=environment, flag=flag), since, until)
    for minute, variant, value, evaluations, units in rows.values_list(
        "minute", "variant", "value", "evaluations", "units"
    ):
        group = groups.setdefault((minute, variant, value), [0, []])
        group[0] += evaluations
        if units:
            group[1].append(bytes(units))
    return [
        ExposurePoint(
            minute=minute,
            variant=variant,
            value=json.loads(value),
            evaluations=evaluations,
            units=_units(sketches, evaluations),
        )
        for (minute, variant, value), (evaluations, sketches) in sorted(
            groups.items(), key=lambda item: (item[0][0], str(item[0][1]), item[0][2])
        )
    ]


def cohort_split(
    *, environment: str, flag: str, since: datetime, until: datetime | None = None
) -> dict[str, CohortMetrics]:
    """The cohorts' metrics grouped by the value ``flag`` had in them, as canonical JSON
    ("true", "false", "3"; "null" for cohorts that did not record the flag)."""
    split: dict[str, CohortMetrics] = {}
    histograms: dict[str, dict[str, list[dict[int, int]]]] = {}
    rows = _in_range(CohortRollup.objects.filter(environment=environment), since, until)
    for cohort_text, reports, counters, latency in rows.values_list(
        "cohort", "reports", "counters", "latency"
    ):
        cohort = json.loads(cohort_text)
        side = json.dumps(cohort.get(flag), sort_keys=True, separators=(",", ":"))
        metrics = split.setdefault(side, CohortMetrics())
        if cohort not in metrics.cohorts:
            metrics.cohorts.append(cohort)
        metrics.reports += reports
        for name, count in counters.items():
            metrics.counters[name] = metrics.counters.get(name, 0) + count
        for name, histogram in latency.items():
            histograms.setdefault(side, {}).setdefault(name, []).append(
                {int(bound): count for bound, count in histogram.items()}
            )
    for side, by_name in histograms.items():
        split[side].latency = {name: histogram_merge(parts) for name, parts in by_name.items()}
    return dict(sorted(split.items()))


@dataclass(frozen=True)
class IngestionPoint:
    minute: datetime
    batches: int
    evaluations: int
    dropped: int
    refused: int
    duplicates: int


def ingestion(*, environment: str, since: datetime, until: datetime | None = None) -> list[IngestionPoint]:
    rows = _in_range(IngestionMinute.objects.filter(environment=environment), since, until)
    return [
        IngestionPoint(*values)
        for values in rows.order_by("minute").values_list(
            "minute", "batches", "evaluations", "dropped", "refused", "duplicates"
        )
    ]


def cohorts_merged(groups: Sequence[CohortMetrics]) -> CohortMetrics:
    """Cohort groups summed into one side (guards' control, a chart's cohort): their cohorts
    listed, counters added, latency histograms merged."""
    merged = CohortMetrics()
    histograms: dict[str, list[dict[int, int]]] = {}
    for group in groups:
        merged.cohorts.extend(group.cohorts)
        merged.reports += group.reports
        for name, count in group.counters.items():
            merged.counters[name] = merged.counters.get(name, 0) + count
        for name, histogram in group.latency.items():
            histograms.setdefault(name, []).append(histogram)
    merged.latency = {name: histogram_merge(parts) for name, parts in histograms.items()}
    return merged
