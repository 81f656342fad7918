"""Celery tasks: thin wrappers that take ids, call one service and are safe to run twice.

acks_late + reject_on_worker_lost (settings) re-queue a task whose worker died; a worker that
died as a whole leaves its message unacknowledged, and the broker delivers it again after the
visibility timeout, which the settings derive from the tasks' time limits. A dehydration job
whose task fails for good (a time limit, a store error after its retries, a bug) is marked
failed with the reason instead of staying "running"."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celery import Task, shared_task

from core import metrics

from .services import collection, dictionaries, envelopes, jobs


@shared_task(name="statebag.reap_expired_transactions")
def reap_expired_transactions() -> int:
    return metrics.sweep_observed(collection.transactions_reap()).pk


@shared_task(name="statebag.gc_sweep")
def gc_sweep() -> int:
    return metrics.sweep_observed(collection.gc_sweep()).pk


@shared_task(name="statebag.apply_retention")
def apply_retention() -> int:
    return metrics.sweep_observed(collection.retention_apply()).pk


@shared_task(name="statebag.write_envelopes")
def write_envelopes() -> dict[str, Any]:
    return envelopes.envelopes_write().summary()


@shared_task(name="statebag.train_dictionaries")
def train_dictionaries() -> list[str]:
    return [row.dict_id for row in dictionaries.dictionaries_train_recent()]


if TYPE_CHECKING:
    _TaskBase = Task[..., Any]
else:
    _TaskBase = Task  # not subscriptable at run time


class JobTask(_TaskBase):
    """Reports the job of a task that failed for good, also when the worker killed it at the
    hard time limit (Celery calls on_failure for that too)."""

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        job_id = (kwargs or {}).get("job_id") or (args[0] if args else None)
        if isinstance(job_id, str):
            jobs.job_fail(job_id, f"{type(exc).__name__}: {exc}")


@shared_task(
    name="statebag.run_dehydration_job",
    base=JobTask,
    autoretry_for=(OSError,),
    retry_backoff=True,
    max_retries=5,
)
def run_dehydration_job(job_id: str) -> str | None:
    job = jobs.job_run(job_id)
    return job.status if job else None
