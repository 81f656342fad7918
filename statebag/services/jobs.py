"""Dehydration jobs: a state submitted through the API becomes the next version, on a worker.

``job_submit`` records the job; whoever submits it enqueues ``statebag.tasks.run_dehydration_job``
after commit (the API does), so services never import the tasks that call them."""

from __future__ import annotations

from typing import Any

from analemma_sdk.statebag import StateBagError
from analemma_sdk.statebag.keys import validate_id

from ..faults import checkpoint
from ..models import DehydrationJob, Manifest
from .hydrators import service_hydrator
from .versioning import manifest_state


class UnknownParentError(StateBagError):
    """A job names a parent manifest its execution does not have."""


def job_submit(
    *,
    owner_id: str,
    workflow_id: str,
    execution_id: str,
    state: dict[str, Any],
    parent: str = "",
    submitted_by: str = "",
) -> DehydrationJob:
    validate_id("owner id", owner_id)
    validate_id("workflow id", workflow_id)
    validate_id("execution id", execution_id)
    if not isinstance(state, dict):
        raise ValueError("state must be a JSON object")
    job = DehydrationJob.objects.create(
        owner_id=owner_id,
        workflow_id=workflow_id,
        execution_id=execution_id,
        parent=parent,
        state=state,
        submitted_by=submitted_by,
    )
    return job


# A job is given up once this many attempts started (each one that did not finish was cut off:
# its worker died or was killed, or it was retried after a store error).
MAX_ATTEMPTS = 10


def job_run(job_id: str) -> DehydrationJob | None:
    """Run one job. Safe to run again: the job id is the commit's idempotency key, so a
    redelivered job returns the version its first run committed. A job found RUNNING was cut
    off (its worker died and the broker delivered it again): that is recorded in its error
    while it runs again, and after MAX_ATTEMPTS it is failed."""
    job = DehydrationJob.objects.filter(pk=job_id).first()
    if job is None or job.status in (DehydrationJob.Status.SUCCEEDED, DehydrationJob.Status.FAILED):
        return job
    note = ""
    if job.status == DehydrationJob.Status.RUNNING:
        if job.attempts >= MAX_ATTEMPTS:
            return job_fail(job_id, f"gave up after {job.attempts} attempts that did not finish")
        note = f"attempt {job.attempts} did not finish (its worker was lost); running it again"
    DehydrationJob.objects.filter(pk=job.pk).update(
        status=DehydrationJob.Status.RUNNING, attempts=job.attempts + 1, error=note
    )
    hydrator = service_hydrator(job.owner_id, job.workflow_id)
    try:
        bag = _base_state(job, hydrator)
        for name in [name for name in bag if name not in job.state]:
            del bag[name]
        for name, value in job.state.items():
            bag[name] = value
        checkpoint("job.hydrated")
        result = hydrator.dehydrate_result(
            bag,
            owner_id=job.owner_id,
            workflow_id=job.workflow_id,
            execution_id=job.execution_id,
            idempotency_key=f"job-{job.pk}",
        )
    except StateBagError as exc:  # a typed refusal (conflict, corrupt input...): retrying will not help
        DehydrationJob.objects.filter(pk=job.pk).update(
            status=DehydrationJob.Status.FAILED, error=f"{type(exc).__name__}: {exc}"
        )
        job.refresh_from_db()
        return job
    checkpoint("job.committed")
    DehydrationJob.objects.filter(pk=job.pk).update(
        status=DehydrationJob.Status.SUCCEEDED,
        payload=result.payload,
        manifest=Manifest.objects.filter(hash=result.manifest).first(),
        state={},
        error="",
    )
    job.refresh_from_db()
    return job


def job_fail(job_id: str, error: str) -> DehydrationJob | None:
    """Mark a job that has not finished failed, with the reason (a time limit, a worker that
    kept dying, retries used up); a finished job is left as it is."""
    DehydrationJob.objects.filter(
        pk=job_id, status__in=(DehydrationJob.Status.QUEUED, DehydrationJob.Status.RUNNING)
    ).update(status=DehydrationJob.Status.FAILED, error=error[:2000])
    return DehydrationJob.objects.filter(pk=job_id).first()


def _base_state(job: DehydrationJob, hydrator: Any) -> Any:
    if not job.parent:
        return hydrator.hydrate({})
    parent = (
        Manifest.objects.select_related("execution")
        .filter(hash=job.parent, execution__owner_id=job.owner_id, execution__execution_id=job.execution_id)
        .first()
    )
    if parent is None:
        raise UnknownParentError(f"no manifest {job.parent[:16]} for execution {job.execution_id}")
    return manifest_state(parent, hydrator)
