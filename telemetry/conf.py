"""Telemetry settings, read one way. Each has an environment variable of the same name and
can be overridden in Django settings (tests do); read afresh on every call."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from environs import Env

_env = Env()

# A fleet of 10,000 Lambdas each reporting every 30 s sends ~333 batches/s to one environment:
# the default leaves three times that, per environment.
DEFAULTS = {
    "TELEMETRY_MAX_BODY_BYTES": 64 * 1024,
    "TELEMETRY_MAX_BATCHES_PER_SECOND": 1000,
    "TELEMETRY_LIMIT_WINDOW_SECONDS": 10,
    "TELEMETRY_RAW_RETENTION_SECONDS": 3600,
    "TELEMETRY_ROLLUP_RETENTION_DAYS": 90,
    "TELEMETRY_AGGREGATE_CHUNK": 5000,
}


@dataclass(frozen=True)
class TelemetrySettings:
    max_body_bytes: int
    max_batches_per_second: int  # per environment; 0 turns the limit off
    limit_window_seconds: int
    raw_retention: timedelta
    rollup_retention: timedelta
    aggregate_chunk: int  # raw batches rolled up per transaction

    @property
    def batches_per_window(self) -> int:
        return self.max_batches_per_second * self.limit_window_seconds


# Read from the environment once: the settings are read on every batch.
_FROM_ENVIRONMENT = {name: _env.int(name, default=default) for name, default in DEFAULTS.items()}


def _value(name: str) -> int:
    configured = getattr(settings, name, None)
    return int(configured) if configured is not None else _FROM_ENVIRONMENT[name]


def telemetry_settings() -> TelemetrySettings:
    return TelemetrySettings(
        max_body_bytes=_value("TELEMETRY_MAX_BODY_BYTES"),
        max_batches_per_second=_value("TELEMETRY_MAX_BATCHES_PER_SECOND"),
        limit_window_seconds=max(1, _value("TELEMETRY_LIMIT_WINDOW_SECONDS")),
        raw_retention=timedelta(seconds=_value("TELEMETRY_RAW_RETENTION_SECONDS")),
        rollup_retention=timedelta(days=_value("TELEMETRY_ROLLUP_RETENTION_DAYS")),
        aggregate_chunk=max(1, _value("TELEMETRY_AGGREGATE_CHUNK")),
    )
