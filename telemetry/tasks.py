"""Celery tasks of the telemetry app: thin wrappers around one service each."""

from __future__ import annotations

from dataclasses import asdict

from celery import shared_task

from .services import telemetry_aggregate, telemetry_prune


@shared_task(name="telemetry.aggregate")
def aggregate() -> dict[str, int]:
    """Roll raw batches up per minute, then delete what is past retention."""
    result = asdict(telemetry_aggregate())
    result.update({f"deleted_{name}": count for name, count in asdict(telemetry_prune()).items()})
    return result
