"""GET /metrics: the service's metrics in Prometheus' text format.

Two kinds of figures, each where it is exact:

* event counters (``core.metrics``): counted as they happen by whichever process saw them.
  With ``PROMETHEUS_MULTIPROC_DIR`` each process writes its own file; a scrape sums every
  ``*.db`` file in the folders of ``METRICS_MULTIPROC_DIRS`` (the web's folder, and the
  workers' and beat's when they share a volume with it), so the answer does not depend on which
  gunicorn worker took the scrape. Without it, the counts of this process.
* gauges read at scrape time from the database and the broker (``analemma.metrics_sources``):
  how many transactions are prepared, how much raw telemetry awaits aggregation, how long the
  Celery queues are. They are states, not events, so no process has to remember them.

Not public: see ``allowed``."""

from __future__ import annotations

import glob
import hmac
import ipaddress
import os
from collections.abc import Iterable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

import core.metrics  # noqa: F401 - defines the counters, in-process mode serves them from REGISTRY

from .metrics_sources import ScrapeTimeCollector


class FolderCollector:
    """Every process's counts, from the files of the multiprocess folders, summed."""

    def __init__(self, folders: Iterable[str]) -> None:
        self.folders = list(folders)

    def collect(self) -> Iterable[Metric]:
        files = [path for folder in self.folders for path in glob.glob(os.path.join(folder, "*.db"))]
        # The library leaves merge untyped; it returns the merged Metric families.
        merged: Iterable[Metric] = MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call]
        return merged


def _folders() -> list[str]:
    return [str(folder) for folder in getattr(settings, "METRICS_MULTIPROC_DIRS", []) if folder]


def allowed(request: HttpRequest) -> bool | None:
    """True for a request that may read the metrics: one with ``Authorization: Bearer
    <METRICS_TOKEN>`` (compared in constant time), or one from an address in
    ``METRICS_ALLOWED_NETWORKS``. False for a wrong token (403), None for anyone else (404:
    the endpoint does not announce itself)."""
    token = str(getattr(settings, "METRICS_TOKEN", ""))
    header = request.headers.get("Authorization", "")
    if token and header:
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return None
    networks = getattr(settings, "METRICS_ALLOWED_NETWORKS", [])
    if any(address in ipaddress.ip_network(network, strict=False) for network in networks):
        return True
    return None


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    verdict = allowed(request)
    if not verdict:
        return HttpResponse(status=404 if verdict is None else 403)
    folders = _folders()
    if folders:
        counted = CollectorRegistry()
        counted.register(FolderCollector(folders))
        body = generate_latest(counted)
    else:
        body = generate_latest(REGISTRY)
    read_now = CollectorRegistry()
    read_now.register(ScrapeTimeCollector())
    body += generate_latest(read_now)
    response = HttpResponse(body, content_type=CONTENT_TYPE_PLAIN_0_0_4)  # what every Prometheus reads
    response["Cache-Control"] = "no-store"
    return response
