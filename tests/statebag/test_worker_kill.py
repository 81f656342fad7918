"""A real Celery worker on a real Redis broker dies (SIGKILL) in the middle of a dehydration
job; the job is redelivered to a new worker (after the visibility timeout the time limits give)
and commits exactly once. A job that overruns its time limit is reported failed, and a worker
started without -Q consumes the GC queue GC_DLQ_URL names, as producers route to it."""

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
from kombu import pools as kombu_pools

from analemma.celery import app as celery_app
from statebag.models import CommitTransaction, DehydrationJob, GCRun, Manifest, Pack
from statebag.queues import gc_queue_name
from statebag.services.collection import gc_sweep, transactions_reap
from statebag.services.jobs import job_submit
from statebag.services.stores import statebag_store
from statebag.tasks import reap_expired_transactions, run_dehydration_job

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


SQS_URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/analemma-gc-dlq"


def start_worker(redis_url, store_root, failpoints="", pool="solo", queues=("-Q", "statebag"), **extra_env):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "analemma.settings.test",
        "ANALEMMA_TEST_DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": redis_url,
        "CELERY_TASK_ALWAYS_EAGER": "false",
        # Tasks expected to take 1 s: soft limit 1 s, hard 2 s, redelivery after 3 s.
        "CELERY_TASK_EXPECTED_SECONDS": "1",
        "CELERY_TASK_GRACE_SECONDS": "1",
        "CELERY_UNACKED_RESTORE_INTERVAL": "1",
        "CELERY_UNACKED_RESTORE_THROTTLE": "1",
        "STATEBAG_LOCAL_ROOT": str(store_root),
        "USE_2PC": "true",
        "STATEBAG_INLINE_FRAMES": "false",  # values go to packs: there is an upload to kill
        "STATEBAG_FAILPOINTS": failpoints,
        **extra_env,
    }
    env.pop("CELERY_VISIBILITY_TIMEOUT", None)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "analemma",
            "worker",
            f"--pool={pool}",
            "--concurrency=1",
            *queues,
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
    kombu_pools.reset()  # the registry keeps closed pools by broker URL: the next test reuses the URL


@pytest.fixture
def broker(redis_url, statebag_storage, tmp_path):
    store_root = tmp_path / "blobs"
    statebag_storage(folder=store_root)
    saved = {key: celery_app.conf[key] for key in ("broker_url", "task_always_eager", "task_routes")}
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


def stop(*procs):
    for proc in procs:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_worker_time_limit__job_overruns__reported_failed_not_left_running(redis_url, broker):
    # Given a prefork worker whose tasks may run 1 s (soft) / 2 s (hard), and a job that hangs
    worker = start_worker(redis_url, broker, failpoints="job.hydrated=sleep:60", pool="prefork")
    try:
        job = job_submit(owner_id="acme", workflow_id="wf", execution_id="exec-slow", state={"a": 1})
        # A producer stamps the time limits its own settings give on each message; this process
        # was configured with the defaults, so send the worker's.
        run_dehydration_job.apply_async((str(job.pk),), soft_time_limit=1, time_limit=2)
        # Then the job is failed with the reason within seconds, not left "running"
        wait_for(
            lambda: DehydrationJob.objects.get(pk=job.pk).status == "failed",
            60,
            "the job to be reported failed",
        )
    finally:
        stop(worker)
    done = DehydrationJob.objects.get(pk=job.pk)
    assert "TimeLimitExceeded" in done.error and done.attempts == 1
    assert not Manifest.objects.filter(execution__execution_id="exec-slow").exists()


def test_worker_without_queue_option__gc_dlq_url_is_an_sqs_url__consumes_the_gc_queue(redis_url, broker):
    # Given producers that route GC work by GC_DLQ_URL (an SQS queue URL), as the settings do
    queue = gc_queue_name(SQS_URL)
    celery_app.conf.update(
        task_routes={**celery_app.conf.task_routes, "statebag.reap_expired_transactions": {"queue": queue}}
    )
    # And a worker started as docker-compose starts it: no -Q, the same GC_DLQ_URL
    worker = start_worker(redis_url, broker, queues=(), GC_DLQ_URL=SQS_URL)
    try:
        # When reaping is enqueued
        reap_expired_transactions.delay()
        # Then that worker runs it
        wait_for(lambda: GCRun.objects.filter(kind=GCRun.Kind.REAP).exists(), 60, "the worker to reap")
    finally:
        stop(worker)
