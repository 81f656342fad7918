"""A dehydration job never stays "running" because its attempt was cut off: a redelivered job
runs again (and says so), one that keeps being cut off is given up, and a task that fails for
good reports its job failed with the reason."""

import pytest

from statebag import faults
from statebag.models import DehydrationJob, Manifest
from statebag.services.hydrators import reset_service_hydrators
from statebag.services.jobs import MAX_ATTEMPTS, job_run, job_submit
from statebag.tasks import run_dehydration_job

pytestmark = pytest.mark.django_db(transaction=True)
STATE = {"messages": [{"content": f"turn {i} " * 300} for i in range(10)], "status": "open"}


@pytest.fixture(autouse=True)
def service_store(statebag_storage, tmp_path):
    statebag_storage(folder=tmp_path / "svc")
    reset_service_hydrators()
    yield
    reset_service_hydrators()
    faults.install(None)


def cut_off_job(attempts):
    """A job whose last attempt started and never finished (its worker died)."""
    job = job_submit(owner_id="acme", workflow_id="wf", execution_id="e1", state=STATE)
    DehydrationJob.objects.filter(pk=job.pk).update(status=DehydrationJob.Status.RUNNING, attempts=attempts)
    return job


def test_job_run__redelivered_after_its_worker_died__runs_again_and_records_it():
    job = cut_off_job(attempts=1)
    notes = []
    faults.install(
        lambda point: (
            notes.append(DehydrationJob.objects.get(pk=job.pk).error) if point == "job.hydrated" else None
        )
    )
    done = job_run(str(job.pk))
    assert done.status == DehydrationJob.Status.SUCCEEDED and done.attempts == 2 and done.error == ""
    assert notes == ["attempt 1 did not finish (its worker was lost); running it again"]
    assert Manifest.objects.count() == 1


def test_job_run__cut_off_too_often__failed_with_the_reason():
    job = cut_off_job(attempts=MAX_ATTEMPTS)
    done = job_run(str(job.pk))
    assert done.status == DehydrationJob.Status.FAILED
    assert f"gave up after {MAX_ATTEMPTS} attempts" in done.error
    assert not Manifest.objects.exists()


def test_task__fails_for_good__job_reported_failed_not_left_running():
    # Given a job whose run fails with an error that is not a typed refusal (a bug, a time limit)
    job = job_submit(owner_id="acme", workflow_id="wf", execution_id="e1", state=STATE)

    def crash(point):
        if point == "job.hydrated":
            raise faults.InjectedFault(point)

    faults.install(crash)
    # When the task runs it
    run_dehydration_job.delay(str(job.pk))
    # Then the job says it failed, and why
    job.refresh_from_db()
    assert job.status == DehydrationJob.Status.FAILED
    assert job.error.startswith("InjectedFault")
