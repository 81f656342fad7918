import json
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from analemma_sdk.statebag import StateHydrator
from statebag.models import DehydrationJob, Execution, GCRun, Manifest, Pack
from statebag.queues import gc_queue_name
from statebag.services import manifest_state
from statebag.services.dictionaries import dictionary_train
from statebag.services.hydrators import reset_service_hydrators
from statebag.services.store_audit import store_audit
from statebag.services.stores import statebag_store
from statebag.tasks import apply_retention, gc_sweep, reap_expired_transactions

from ..factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def service_store(statebag_storage, settings, tmp_path):
    statebag_storage(folder=tmp_path / "svc")
    settings.STATEBAG = {**settings.STATEBAG, "USE_2PC": True, "INLINE_FRAMES": False}  # packs
    reset_service_hydrators()
    yield statebag_store()
    reset_service_hydrators()


@pytest.fixture
def api_client(client):
    user = UserFactory(
        username="pipeline",
        permissions=["statebag.add_dehydrationjob", "statebag.view_dehydrationjob"],
    )
    client.force_login(user)
    return client


def submit(client, **body):
    return client.post(reverse("api:statebag-jobs"), data=json.dumps(body), content_type="application/json")


def submit_step(client, execution_id, step, parent="", owner_id="acme"):
    """Submit big_state(step) as the next version after ``parent``; returns the polled job."""
    response = submit(
        client,
        owner_id=owner_id,
        workflow_id="wf",
        execution_id=execution_id,
        state=big_state(step),
        parent=parent,
    )
    return client.get(response["Location"]).json()


def big_state(step):
    return {
        "step": step,
        "llm_response": {"text": f"answer {step} " * 300},
        "messages": [{"content": f"turn {i} " * 200} for i in range(step * 3)],
    }


def test_job_api__post_then_poll__202_then_manifest_and_payload(api_client, service_store):
    response = submit(api_client, owner_id="acme", workflow_id="wf", execution_id="e1", state=big_state(1))
    assert response.status_code == 202
    url = response["Location"]
    body = api_client.get(url).json()
    assert body["status"] == "succeeded" and body["manifest"]["version"] == 1
    assert body["payload"]["__statebag__"]["manifest"] == body["manifest"]["hash"]
    second = submit_step(api_client, "e1", 2, parent=body["manifest"]["hash"])
    assert second["manifest"]["version"] == 2
    head = Execution.objects.get(execution_id="e1").head
    assert head.committed_via == "2pc"
    assert manifest_state(
        head, StateHydrator(use_batching=True, inline_frames=False, store=service_store)
    ).to_dict() == big_state(2)
    assert DehydrationJob.objects.get(pk=second["id"]).state == {}  # the large input is not kept


@pytest.mark.parametrize(
    "body, status",
    [
        ({"owner_id": "../x", "workflow_id": "wf", "execution_id": "e", "state": {}}, 400),
        ({"owner_id": "a", "workflow_id": "wf", "execution_id": "e", "state": []}, 400),
        ({"owner_id": "a", "workflow_id": "wf"}, 400),
    ],
)
def test_job_api__bad_input__400_and_no_job(api_client, body, status):
    assert submit(api_client, **body).status_code == status
    assert not DehydrationJob.objects.exists()


def test_job_api__stale_parent__job_failed_with_conflict(api_client):
    first = submit_step(api_client, "e", 1, owner_id="a")
    submit_step(api_client, "e", 2, parent=first["manifest"]["hash"], owner_id="a")
    body = submit_step(api_client, "e", 3, parent=first["manifest"]["hash"], owner_id="a")
    assert body["status"] == "failed" and "ManifestConflictError" in body["error"]


def test_job_api__anonymous_or_without_permission__refused(client):
    assert submit(client, owner_id="a", workflow_id="w", execution_id="e", state={}).status_code == 401
    UserFactory(username="nobody")
    client.login(username="nobody", password="pw-long-enough-1")
    assert submit(client, owner_id="a", workflow_id="w", execution_id="e", state={}).status_code == 403


def test_tasks__reap_retention_gc__record_runs_without_listing(api_client, service_store, settings):
    parent = ""
    for step in range(1, 5):
        parent = submit_step(api_client, "e1", step, parent=parent)["manifest"]["hash"]
    settings.STATEBAG = {**settings.STATEBAG, "RETAIN_LAST_VERSIONS": 1, "GC_GRACE_SECONDS": 0}
    apply_retention.delay()
    gc_sweep.delay()
    reap_expired_transactions.delay()
    assert list(Manifest.objects.filter(retained=True).values_list("version", flat=True)) == [4]
    runs = {run.kind: run for run in GCRun.objects.all()}
    assert set(runs) >= {"retention", "gc", "reap"}
    assert runs["gc"].deleted_objects > 0
    assert all(run.store_lists == 0 for run in runs.values())
    assert set(service_store.list("o/")) == set(Pack.objects.values_list("key", flat=True))


def test_beat_schedules__default_schedules_migration__creates_each_once():
    # Transactional tests flush tables, so run the migration's function again here.
    from importlib import import_module

    from django.apps import apps

    migration = import_module("statebag.migrations.0004_default_schedules")
    migration.create(apps, None)
    migration.create(apps, None)
    assert PeriodicTask.objects.filter(task__startswith="statebag.").count() == 4
    tasks = set(PeriodicTask.objects.values_list("task", flat=True))
    assert {
        "statebag.reap_expired_transactions",
        "statebag.gc_sweep",
        "statebag.apply_retention",
        "statebag.train_dictionaries",
    } <= tasks


@pytest.mark.parametrize(
    "value, queue",
    [
        ("", "statebag-gc"),
        ("statebag-cleanup", "statebag-cleanup"),
        ("https://sqs.eu-west-1.amazonaws.com/123456789012/analemma-gc-dlq", "analemma-gc-dlq"),
        ("redis://redis:6379/0", "statebag-gc"),
    ],
)
def test_gc_queue_name__gc_dlq_url_forms(value, queue):
    assert gc_queue_name(value) == queue


def test_audit_store__unknown_objects__dry_run_then_delete_old_only(service_store):
    service_store.put("o/acme/p/aa/ghost-old.asbp", b"x")
    service_store.put("o/acme/p/aa/ghost-new.asbp", b"y")
    old = time.time() - 7200
    import os

    os.utime(service_store.root / "o/acme/p/aa/ghost-old.asbp", (old, old))
    dry = store_audit(grace=timedelta(hours=1))
    assert sorted(dry.unknown) == ["o/acme/p/aa/ghost-new.asbp", "o/acme/p/aa/ghost-old.asbp"]
    assert service_store.exists("o/acme/p/aa/ghost-old.asbp")
    call_command("audit_store", "--delete", "--grace-seconds", "3600")
    assert not service_store.exists("o/acme/p/aa/ghost-old.asbp")
    assert service_store.exists("o/acme/p/aa/ghost-new.asbp")
    assert GCRun.objects.filter(kind="audit", dry_run=False, deleted_objects=1).exists()


def test_dictionary_train__enough_blobs__rolled_in_for_the_workflow(api_client, service_store):
    for execution in range(12):
        state = {
            "messages": [
                {"role": "user", "content": f"booking {execution}-{i} for flight {i * 7} " * 30}
                for i in range(40)
            ]
        }
        submit(api_client, owner_id="acme", workflow_id="airline", execution_id=f"e{execution}", state=state)
    row = dictionary_train(owner_id="acme", workflow_id="airline", min_samples=20, size=8 * 1024)
    assert row is not None and row.active
    job = api_client.get(
        submit(
            api_client,
            owner_id="acme",
            workflow_id="airline",
            execution_id="e-new",
            state={"messages": [{"role": "user", "content": f"booking new {i} " * 30} for i in range(40)]},
        )["Location"]
    ).json()
    pointer = job["payload"]["messages"]
    assert (
        any(chunk.get("x") == row.dict_id for chunk in pointer["chunks"]) or pointer.get("x") == row.dict_id
    )
    assert timezone.now() >= row.created_at


def test_job_api__unknown_parent__job_failed_with_typed_error(api_client):
    response = submit(
        api_client, owner_id="a", workflow_id="wf", execution_id="e", state=big_state(1), parent="f" * 64
    )
    body = api_client.get(response["Location"]).json()
    assert body["status"] == "failed" and "UnknownParentError" in body["error"]
    assert not Manifest.objects.exists()
