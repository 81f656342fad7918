from __future__ import annotations

from celery import shared_task

from .services import keys_flush_last_used


@shared_task(name="keys.flush_key_use")
def flush_key_use() -> int:
    return keys_flush_last_used()
