"""Celery tasks: thin wrappers that take ids, call one service and are safe to run twice.
acks_late + reject_on_worker_lost (settings) re-queue a task whose worker died."""

from __future__ import annotations

from celery import shared_task

from .services import collection, dictionaries, jobs


@shared_task(name="statebag.reap_expired_transactions")
def reap_expired_transactions() -> int:
    return collection.transactions_reap().pk


@shared_task(name="statebag.gc_sweep")
def gc_sweep() -> int:
    return collection.gc_sweep().pk


@shared_task(name="statebag.apply_retention")
def apply_retention() -> int:
    return collection.retention_apply().pk


@shared_task(name="statebag.train_dictionaries")
def train_dictionaries() -> list[str]:
    return [row.dict_id for row in dictionaries.dictionaries_train_recent()]


@shared_task(name="statebag.run_dehydration_job", autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def run_dehydration_job(job_id: str) -> str | None:
    job = jobs.job_run(job_id)
    return job.status if job else None
