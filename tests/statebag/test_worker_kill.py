"""A real Celery worker on a real Redis broker dies (SIGKILL) in the middle of a dehydration
job; the job is redelivered to a new worker and commits exactly once."""

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection
from django.utils import timezone

from analemma.celery import app as celery_app
from statebag.models import CommitTransaction, DehydrationJob, Manifest, Pack
from statebag.services.collection import gc_sweep, transactions_reap
from statebag.services.jobs import job_submit
from statebag.services.stores import statebag_store
from statebag.tasks import run_dehydration_job

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        os.environ.get("ANALEMMA_TEST_DB") == "sqlite",
        reason="a worker process cannot share an in-memory SQLite",
    ),
]
ROOT = Path(__file__).resolve().parents[2]


def database_url():
    s = connection.settings_dict
    host = quote(s["HOST"], safe="")  # a socket folder, as the test server listens on
    return f"postgres://{s['USER']}@{host}:{s['PORT']}/{s['NAME']}"


def start_worker(redis_url, store_root, failpoints=""):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "analemma.settings.test",
        "ANALEMMA_TEST_DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": redis_url,
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "CELERY_VISIBILITY_TIMEOUT": "2",
        "CELERY_UNACKED_RESTORE_INTERVAL": "1",
        "CELERY_UNACKED_RESTORE_THROTTLE": "1",
        "STATEBAG_LOCAL_ROOT": str(store_root),
        "USE_2PC": "true",
        "STATEBAG_FAILPOINTS": failpoints,
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "analemma",
            "worker",
            "--pool=solo",
            "-Q",
            "statebag",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
            "--loglevel=INFO",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def reset_producer_pool():
    # Connections made for the previous broker URL must not be reused.
    if celery_app._pool is not None:
        celery_app._pool.force_close_all()
        celery_app._pool = None
    celery_app.amqp._producer_pool = None


@pytest.fixture
def broker(redis_url, statebag_storage, tmp_path):
    store_root = tmp_path / "blobs"
    statebag_storage(folder=store_root)
    saved = {key: celery_app.conf[key] for key in ("broker_url", "task_always_eager")}
    celery_app.conf.update(broker_url=redis_url, task_always_eager=False)
    reset_producer_pool()
    yield store_root
    celery_app.conf.update(saved)
    reset_producer_pool()


def test_worker_killed_mid_job__redelivered__commits_exactly_once(redis_url, broker):
    first = start_worker(redis_url, broker, failpoints="commit.locked=sleep:120")
    second = None
    try:
        state = {
            "messages": [{"content": f"turn {i} " * 300} for i in range(20)],
            "llm_response": {"text": "x " * 3000},
        }
        job = job_submit(owner_id="acme", workflow_id="wf", execution_id="exec-kill", state=state)
        run_dehydration_job.delay(str(job.pk))
        # The first worker uploaded its packs and sits inside the commit: kill it there.
        wait_for(
            lambda: (
                CommitTransaction.objects.filter(execution_id="exec-kill").exists()
                and Pack.objects.filter(owner_id="acme").exists()
            ),
            60,
            "the first attempt to reach its commit",
        )
        time.sleep(0.5)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        assert DehydrationJob.objects.get(pk=job.pk).status == "running"
        second = start_worker(redis_url, broker)
        wait_for(
            lambda: DehydrationJob.objects.get(pk=job.pk).status == "succeeded", 90, "the redelivered job"
        )
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
    done = DehydrationJob.objects.get(pk=job.pk)
    assert done.attempts == 2
    manifests = Manifest.objects.filter(execution__execution_id="exec-kill")
    assert manifests.count() == 1 and manifests.get().idempotency_key == f"job-{job.pk}"
    # The killed attempt's transaction is reaped; nothing is left behind in the store.
    transactions_reap(now=timezone.now() + timedelta(hours=1))
    gc_sweep(grace=timedelta(0))
    assert CommitTransaction.objects.filter(state="prepared").count() == 0
    assert set(statebag_store().list("o/")) == set(Pack.objects.values_list("key", flat=True))
