"""Celery queue names, in one place: producers route by them (the CELERY_TASK_ROUTES setting) and
workers consume them (CELERY_TASK_QUEUES), so both resolve GC_DLQ_URL the same way."""

from __future__ import annotations

from enum import StrEnum
from urllib.parse import urlparse


class CeleryQueue(StrEnum):
    DEFAULT = "default"
    STATEBAG = "statebag"
    GC = "statebag-gc"


def gc_queue_name(gc_dlq_url: str) -> str:
    """GC_DLQ_URL keeps the original system's meaning, where failed-transaction cleanup goes. Here it
    names the Celery queue for reaping, GC and retention: a plain name, or a URL whose last
    path segment is the name (an SQS queue URL, a redis://.../0/name URL). Empty: the default."""
    value = gc_dlq_url.strip()
    if not value:
        return CeleryQueue.GC.value
    if "://" in value:
        segment = urlparse(value).path.rstrip("/").rsplit("/", 1)[-1]
        if segment and not segment.isdigit():
            return segment
        return CeleryQueue.GC.value
    return value


def worker_queues(gc_dlq_url: str) -> list[str]:
    """Every queue a worker consumes when started without -Q: the ones tasks are routed to."""
    return [CeleryQueue.DEFAULT.value, CeleryQueue.STATEBAG.value, gc_queue_name(gc_dlq_url)]
