"""Celery's configuration as a worker and a producer load it from the environment: time limits
derived from the tasks' expected duration, a visibility timeout above them, and one queue name
for GC_DLQ_URL on both sides."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SQS_URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/analemma-gc-dlq"
PROBE = """
import json
from analemma.celery import app
conf = app.conf
print(json.dumps({
    "soft": conf.task_soft_time_limit,
    "hard": conf.task_time_limit,
    "visibility": conf.broker_transport_options["visibility_timeout"],
    "worker_queues": sorted(app.amqp.queues.keys()),
    "routes": {name: route["queue"] for name, route in conf.task_routes.items()},
}))
"""
CELERY_ENV = (
    "CELERY_TASK_EXPECTED_SECONDS",
    "CELERY_TASK_GRACE_SECONDS",
    "CELERY_VISIBILITY_TIMEOUT",
    "GC_DLQ_URL",
)


def celery_conf(**env):
    """The Celery configuration a fresh process builds from ``env``."""
    environ = {k: v for k, v in os.environ.items() if k not in CELERY_ENV}
    environ.update(DJANGO_SETTINGS_MODULE="analemma.settings.test", **env)
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120
    )
    return done


def conf_of(**env):
    done = celery_conf(**env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_celery_conf__defaults__limits_from_expected_duration_and_visibility_above_them():
    conf = conf_of()
    assert (conf["soft"], conf["hard"]) == (300, 330)
    assert conf["hard"] < conf["visibility"] == 360  # minutes after a dead worker, not an hour


@pytest.mark.parametrize("expected, grace", [(60, 10), (1800, 120)])
def test_celery_conf__expected_duration__every_value_follows(expected, grace):
    conf = conf_of(CELERY_TASK_EXPECTED_SECONDS=str(expected), CELERY_TASK_GRACE_SECONDS=str(grace))
    assert conf["soft"] == expected
    assert conf["hard"] == expected + grace
    assert conf["visibility"] == expected + 2 * grace


def test_celery_conf__visibility_timeout_not_above_hard_limit__refused():
    done = celery_conf(CELERY_TASK_EXPECTED_SECONDS="300", CELERY_VISIBILITY_TIMEOUT="300")
    assert done.returncode != 0
    assert "CELERY_VISIBILITY_TIMEOUT" in done.stderr and "ImproperlyConfigured" in done.stderr


@pytest.mark.parametrize(
    "gc_dlq_url, queue",
    [(SQS_URL, "analemma-gc-dlq"), ("statebag-cleanup", "statebag-cleanup"), ("", "statebag-gc")],
)
def test_celery_conf__gc_dlq_url__worker_consumes_the_queue_producers_route_to(gc_dlq_url, queue):
    conf = conf_of(GC_DLQ_URL=gc_dlq_url)
    gc_routes = {conf["routes"][name] for name in ("statebag.gc_sweep", "statebag.reap_expired_transactions")}
    assert gc_routes == {queue}
    assert conf["worker_queues"] == sorted(["default", "statebag", queue])
    assert not any("://" in name for name in conf["worker_queues"])
