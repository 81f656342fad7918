"""GET /metrics in one process (no PROMETHEUS_MULTIPROC_DIR): who may read it, that the text
parses, and that each counter moves when its event happens. The multiprocess case, gunicorn
with two workers, is test_metrics_gunicorn.py."""

from __future__ import annotations

import io
import time
from wsgiref.util import setup_testing_defaults

import pytest
from django.core.cache import cache
from django.core.handlers.wsgi import WSGIHandler
from django.urls import reverse
from prometheus_client.parser import text_string_to_metric_families

from analemma_sdk.statebag import ManifestDraft
from analemma_sdk.statebag import metrics as sdk_metrics
from analemma_sdk.statebag.errors import ManifestConflictError
from core import metrics as service_metrics
from rollout.fastpath import FlagsetFastPath
from rollout.models import Environment
from statebag import tasks
from statebag.services.versioning import StateVersioningService

from ..factories import sdk_key
from ..telemetry.conftest import make_batch

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("rollout_defaults")]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client, **headers) -> Samples:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.status_code
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def prod_key():
    return sdk_key(Environment.objects.get(key="prod"), actor="ops")[1]


def flagset(client, key=None, etag=None):
    headers = {}
    if key:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    if etag:
        headers["HTTP_IF_NONE_MATCH"] = etag
    return client.get(reverse("flagset"), **headers)


def test_metrics__loopback__every_family_parses_and_the_database_gauges_are_read(client):
    samples = scrape(client)
    names = {name for name, _ in samples}
    for expected in (
        "analemma_flagset_requests_total",
        "analemma_telemetry_batches_total",
        "analemma_statebag_sweeps_total",
        "statebag_2pc_bypassed_total",
        "statebag_integrity_errors_total",
        "statebag_dictionary_training_failures_total",
        "analemma_statebag_prepared_transactions",
        "analemma_telemetry_raw_backlog",
    ):
        assert expected in names, expected
    assert value(samples, "analemma_metrics_source_up", source="database") == 1


def test_metrics__elsewhere_without_token__404_and_wrong_token_403(client, settings):
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    settings.METRICS_TOKEN = "s3cr3t-metrics-token"
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.7").status_code == 404
    assert (
        client.get("/metrics", REMOTE_ADDR="192.0.2.7", HTTP_AUTHORIZATION="Bearer nope").status_code == 403
    )
    good = client.get("/metrics", REMOTE_ADDR="192.0.2.7", HTTP_AUTHORIZATION="Bearer s3cr3t-metrics-token")
    assert good.status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    settings.METRICS_ALLOWED_NETWORKS = []
    assert client.get("/metrics").status_code == 404  # loopback too, once no network is named


def test_metrics__flagset_answers__counted_by_status_including_304(client, prod_key):
    before = scrape(client)
    assert flagset(client).status_code == 401
    etag = flagset(client, prod_key)["ETag"]
    assert flagset(client, prod_key, etag).status_code == 304
    after = scrape(client)
    for status in ("200", "304", "401"):
        grew = value(after, "analemma_flagset_requests_total", status=status) - value(
            before, "analemma_flagset_requests_total", status=status
        )
        assert grew == 1, status


def test_metrics__fast_path_answers__counted_too(client, prod_key):
    before = scrape(client)
    flagset(client, prod_key)  # warms the cache the fast path answers from
    fast = FlagsetFastPath(WSGIHandler())
    environ = {
        "PATH_INFO": "/api/v1/flagset",
        "REQUEST_METHOD": "GET",
        "HTTP_HOST": "testserver",
        "HTTP_AUTHORIZATION": f"Bearer {prod_key}",
        "wsgi.input": io.BytesIO(),
    }
    setup_testing_defaults(environ)
    statuses: list[str] = []
    fast(environ, lambda status, headers: statuses.append(status))
    assert statuses == ["200 OK"]
    grew = value(scrape(client), "analemma_flagset_requests_total", status="200") - value(
        before, "analemma_flagset_requests_total", status="200"
    )
    assert grew == 2  # the warming request through Django, and the fast path's


def test_metrics__telemetry_batches__accepted_duplicate_and_refused(client, prod_key, settings):
    before = scrape(client)
    batch = make_batch(dropped=7)

    def post():
        return client.post(
            "/api/v1/telemetry",
            batch,
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {prod_key}",
        )

    assert post().status_code == 202
    assert post().status_code == 200  # the same batch id again
    middle = scrape(client)
    assert (
        value(middle, "analemma_telemetry_raw_backlog") == value(before, "analemma_telemetry_raw_backlog") + 1
    )
    # Given the environment's window already spent
    settings.TELEMETRY_MAX_BATCHES_PER_SECOND = 1
    settings.TELEMETRY_LIMIT_WINDOW_SECONDS = 3600
    cache.set(f"telemetry:limit:prod:{int(time.time() // 3600)}", 10**6, 7200)
    assert post().status_code == 429
    after = scrape(client)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("analemma_telemetry_batches_total", outcome="accepted") == 1
    assert grew("analemma_telemetry_batches_total", outcome="duplicate") == 1
    assert grew("analemma_telemetry_batches_total", outcome="refused") == 1
    assert grew("analemma_telemetry_sdk_dropped_reports_total") == 7


def test_metrics__commits__counted_by_outcome_and_timed(client):
    before = scrape(client)
    service = StateVersioningService(use_2pc=False)

    def draft(parents: tuple[str, ...]) -> ManifestDraft:
        return ManifestDraft(
            owner_id="acme",
            workflow_id="w",
            execution_id="metrics-1",
            parents=parents,
            entries={"n": 1},
            packs=(),
        )

    service.record(draft(()))
    with pytest.raises(ManifestConflictError):
        service.record(draft(()))  # the head moved: a stale parent
    after = scrape(client)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("analemma_statebag_commits_total", path="record", outcome="committed") == 1
    assert grew("analemma_statebag_commits_total", path="record", outcome="manifest_conflict") == 1
    assert grew("analemma_statebag_commit_seconds_count", path="record") == 2
    assert grew("analemma_statebag_commit_seconds_sum", path="record") > 0


def test_metrics__reaper_run__counted(client):
    before = scrape(client)
    tasks.reap_expired_transactions()
    grew = value(scrape(client), "analemma_statebag_sweeps_total", kind="reap") - value(
        before, "analemma_statebag_sweeps_total", kind="reap"
    )
    assert grew == 1


def test_increment__service_counter__both_the_sdk_dictionary_and_prometheus(client):
    before = scrape(client)
    sdk_before = sdk_metrics.counters["statebag_integrity_errors_total"]
    service_metrics.increment("statebag_integrity_errors_total")
    assert sdk_metrics.counters["statebag_integrity_errors_total"] == sdk_before + 1
    grew = value(scrape(client), "statebag_integrity_errors_total") - value(
        before, "statebag_integrity_errors_total"
    )
    assert grew == 1


def test_metrics__redis_broker__queue_depth_from_llen(client, settings, redis_url):
    import redis

    settings.CELERY_BROKER_URL = redis_url
    connection = redis.Redis.from_url(redis_url)
    connection.delete("statebag", "statebag\x06\x163")
    connection.lpush("statebag", b"a", b"b")
    connection.lpush("statebag\x06\x163", b"c")  # a message of priority 3
    try:
        samples = scrape(client)
    finally:
        connection.delete("statebag", "statebag\x06\x163")
    assert value(samples, "analemma_celery_queue_messages", queue="statebag") == 3
    assert value(samples, "analemma_metrics_source_up", source="broker") == 1


def test_metrics__broker_unreachable__source_down_and_the_rest_served(client, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:9/0"  # discard port: nothing listens
    samples = scrape(client)
    assert value(samples, "analemma_metrics_source_up", source="broker") == 0
    assert value(samples, "analemma_metrics_source_up", source="database") == 1
