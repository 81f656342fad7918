"""Gauges read when /metrics is scraped: states of the database and the broker that no process
counts, because they are what is there now (a backlog, a queue), whoever put it there.

Each source is read with a bound (the broker's socket timeout, one indexed COUNT per figure) and
reports ``analemma_metrics_source_up{source}``: a source that fails leaves its gauges out and
says 0 there, so one outage never costs the whole scrape."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.utils import timezone
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from statebag.models import CommitTransaction
from telemetry.models import RawBatch

# kombu's Redis transport keeps a queue's messages of priority p > 0 in "<queue>\x06\x16<p>".
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (0, 3, 6, 9)


def database_gauges() -> list[Metric]:
    now = timezone.now()
    prepared = CommitTransaction.objects.filter(state=CommitTransaction.State.PREPARED)
    pending = GaugeMetricFamily(
        "analemma_statebag_prepared_transactions",
        "Two-phase commits prepared and not yet committed or aborted, by whether they expired "
        "(expired ones wait for the reaper).",
        labels=["expired"],
    )
    pending.add_metric(["false"], prepared.filter(expires_at__gte=now).count())
    pending.add_metric(["true"], prepared.filter(expires_at__lt=now).count())
    backlog = GaugeMetricFamily(
        "analemma_telemetry_raw_backlog",
        "Accepted telemetry batches not yet rolled up by the per-minute aggregation.",
        value=RawBatch.objects.filter(aggregated_at__isnull=True).count(),
    )
    return [pending, backlog]


def _queue_names() -> list[str]:
    return [str(getattr(queue, "name", queue)) for queue in getattr(settings, "CELERY_TASK_QUEUES", [])]


def _redis_lengths(url: str, queues: list[str]) -> dict[str, int]:
    import redis

    timeout = float(getattr(settings, "HEALTH_CHECK_TIMEOUT_SECONDS", 2.0))
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        pipe = client.pipeline(transaction=False)
        for queue in queues:
            for step in _PRIORITY_STEPS:
                pipe.llen(queue if step == 0 else f"{queue}{_PRIORITY_SEP}{step}")
        answers: list[Any] = pipe.execute()
    finally:
        client.close()
    per = len(_PRIORITY_STEPS)
    return {queue: sum(int(n) for n in answers[i * per : (i + 1) * per]) for i, queue in enumerate(queues)}


def _folder_lengths(queues: list[str]) -> dict[str, int]:
    """The embedded default's folder broker: one file per message, named ``...<queue>.msg``."""
    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {})
    names = os.listdir(str(options.get("data_folder_in", "")))
    return {queue: sum(1 for name in names if name.endswith(f".{queue}.msg")) for queue in queues}


def broker_gauges() -> list[Metric]:
    url = str(getattr(settings, "CELERY_BROKER_URL", ""))
    queues = _queue_names()
    if url.startswith(("redis://", "rediss://")):
        lengths = _redis_lengths(url, queues)
    elif url.startswith("filesystem://"):
        lengths = _folder_lengths(queues)
    else:
        return []  # in process (eager) or a broker whose queues are not read here
    depth = GaugeMetricFamily(
        "analemma_celery_queue_messages", "Messages waiting in each Celery queue.", labels=["queue"]
    )
    for queue, length in lengths.items():
        depth.add_metric([queue], length)
    return [depth]


SOURCES: dict[str, Callable[[], list[Metric]]] = {"database": database_gauges, "broker": broker_gauges}


class ScrapeTimeCollector:
    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "analemma_metrics_source_up",
            "1 when the source's gauges were read in this scrape, 0 when it failed.",
            labels=["source"],
        )
        for name, read in SOURCES.items():
            try:
                yield from read()
            except Exception:  # any failure of a source is reported as its gauge, not as a 500
                up.add_metric([name], 0)
            else:
                up.add_metric([name], 1)
        yield up
