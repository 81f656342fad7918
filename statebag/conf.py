"""The state bag's settings, read one way. ``settings.STATEBAG`` is filled from the
environment in analemma/settings/storage.py; each value keeps the name its environment
variable and the flag of the same concept have (``USE_2PC`` → ``use_2pc``, ``ZSTD_LEVEL`` →
``zstd_level``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings


@dataclass(frozen=True)
class StatebagSettings:
    payload_budget: int
    inline_threshold: int
    inline_frames: bool
    max_blob_bytes: int
    use_2pc: bool
    zstd_level: int
    transaction_ttl: timedelta
    gc_grace: timedelta
    retain_last_versions: int
    finished_ttl: timedelta
    gc_dlq_url: str
    envelope_quiet: timedelta
    envelope_max_versions: int
    envelope_max_bytes: int
    envelope_batch: int


def statebag_settings() -> StatebagSettings:
    """Read afresh on every call: cheap, and tests that override settings see their values."""
    values: dict[str, Any] = settings.STATEBAG
    return StatebagSettings(
        payload_budget=values["PAYLOAD_BUDGET"],
        inline_threshold=values["INLINE_THRESHOLD"],
        inline_frames=values.get("INLINE_FRAMES", True),
        max_blob_bytes=values["MAX_BLOB_BYTES"],
        use_2pc=values["USE_2PC"],
        zstd_level=values["ZSTD_LEVEL"],
        transaction_ttl=timedelta(seconds=values["TRANSACTION_TTL_SECONDS"]),
        gc_grace=timedelta(seconds=values["GC_GRACE_SECONDS"]),
        retain_last_versions=values["RETAIN_LAST_VERSIONS"],
        finished_ttl=timedelta(days=values["FINISHED_TTL_DAYS"]),
        gc_dlq_url=values["GC_DLQ_URL"],
        envelope_quiet=timedelta(seconds=values["ENVELOPE_QUIET_SECONDS"]),
        envelope_max_versions=values["ENVELOPE_MAX_VERSIONS"],
        envelope_max_bytes=values["ENVELOPE_MAX_BYTES"],
        envelope_batch=values["ENVELOPE_BATCH"],
    )
