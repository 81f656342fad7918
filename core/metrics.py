"""The service's event counters, as Prometheus metrics: what the web processes, the Celery
workers and beat count as it happens (requests, batches, commits, sweeps).

They live here, below every app, because the apps that count (rollout, statebag, telemetry)
may not import the project package; ``analemma.metrics`` serves them at /metrics.

With ``PROMETHEUS_MULTIPROC_DIR`` set before this module is first imported, every process
writes its counts to its own file in that folder and a scrape sums the files (gunicorn
workers, Celery's pool children); without it (runserver, tests) the counts are process
memory, served by the same process. See README, "Metrics".

The SDK keeps its own process-local counters (``analemma_sdk.statebag.metrics``), since a
Lambda ships no metrics library; ``increment`` here bumps both, so the service's counts reach
Prometheus while everything that reads the SDK's dictionary still sees them."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, Protocol, TypeVar

from analemma_sdk.statebag import StateBagError
from analemma_sdk.statebag import metrics as sdk_metrics

_folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
if _folder:
    # A missing folder would fail the first metric created below, i.e. the import of the app.
    os.makedirs(_folder, exist_ok=True)

from prometheus_client import Counter, Histogram  # noqa: E402 - reads the folder's variable

P = ParamSpec("P")
R = TypeVar("R")

FLAGSET_REQUESTS = Counter(
    "analemma_flagset_requests",
    "GET /api/v1/flagset answers by HTTP status (the fast path's and Django's alike).",
    ["status"],
)
TELEMETRY_BATCHES = Counter(
    "analemma_telemetry_batches",
    "POST /api/v1/telemetry batches by outcome: accepted, duplicate, refused (429 over the "
    "environment's limit), too_large (413), malformed (400).",
    ["outcome"],
)
TELEMETRY_SDK_DROPPED = Counter(
    "analemma_telemetry_sdk_dropped_reports",
    "Reports SDKs said they dropped before sending (the 'dropped' of accepted batches).",
)
COMMITS = Counter(
    "analemma_statebag_commits",
    "Versions recorded by the manifest store, by path (record: one step; two_phase: commit of "
    "a prepared transaction) and outcome (committed, or the error's name).",
    ["path", "outcome"],
)
COMMIT_SECONDS = Histogram(
    "analemma_statebag_commit_seconds",
    "Time the manifest store took to record a version, by path, whatever the outcome.",
    ["path"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
SWEEPS = Counter("analemma_statebag_sweeps", "Reaper, GC and retention runs, by kind.", ["kind"])
SWEPT_OBJECTS = Counter(
    "analemma_statebag_swept_objects", "Store objects the reaper, GC and retention deleted.", ["kind"]
)
SWEPT_BYTES = Counter(
    "analemma_statebag_swept_bytes", "Bytes the reaper, GC and retention deleted from the store.", ["kind"]
)
# The counters the service side used to keep in process memory only, under the same names.
SERVICE_COUNTERS = {
    "statebag_2pc_bypassed_total": Counter(
        "statebag_2pc_bypassed", "One-step versions that uploaded packs while USE_2PC is on."
    ),
    "statebag_integrity_errors_total": Counter(
        "statebag_integrity_errors", "Manifests whose stored hash chain did not verify."
    ),
    "statebag_dictionary_training_failures_total": Counter(
        "statebag_dictionary_training_failures", "zstd dictionary trainings that failed."
    ),
}

# Label values known in advance start at 0, so a rate is defined before the first event.
_FLAGSET = {status: FLAGSET_REQUESTS.labels(status=str(status)) for status in (200, 304, 401, 404)}
_BATCHES = {
    outcome: TELEMETRY_BATCHES.labels(outcome=outcome)
    for outcome in ("accepted", "duplicate", "refused", "too_large", "malformed")
}
for _kind in ("reap", "gc", "retention"):
    SWEEPS.labels(kind=_kind)
    SWEPT_OBJECTS.labels(kind=_kind)
    SWEPT_BYTES.labels(kind=_kind)


def increment(name: str, amount: int = 1) -> None:
    """What ``analemma_sdk.statebag.metrics.increment`` does, and the same count in Prometheus
    for the names in SERVICE_COUNTERS."""
    sdk_metrics.increment(name, amount)
    counter = SERVICE_COUNTERS.get(name)
    if counter is not None:
        counter.inc(amount)


def flagset_request(status: int) -> None:
    """One flag-set answer; on the fast path, so the common statuses are bound in advance."""
    child = _FLAGSET.get(status)
    (child or FLAGSET_REQUESTS.labels(status=str(status))).inc()


def telemetry_batch(outcome: str, dropped: int = 0) -> None:
    _BATCHES[outcome].inc()
    if dropped > 0:
        TELEMETRY_SDK_DROPPED.inc(dropped)


class Sweep(Protocol):
    kind: str
    deleted_objects: int
    deleted_bytes: int


S = TypeVar("S", bound=Sweep)


def sweep_observed(run: S) -> S:
    """Counts a finished reaper, GC or retention run (a ``statebag.models.GCRun``); returns it."""
    SWEEPS.labels(kind=run.kind).inc()
    SWEPT_OBJECTS.labels(kind=run.kind).inc(run.deleted_objects)
    SWEPT_BYTES.labels(kind=run.kind).inc(run.deleted_bytes)
    return run


def _outcome(exc: BaseException) -> str:
    """A state bag error's class name as a label (``ManifestConflictError`` → ``manifest_conflict``);
    anything else is ``error``: the label's values stay the few the code defines."""
    if not isinstance(exc, StateBagError):
        return "error"
    name = type(exc).__name__.removesuffix("Error")
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


def commit_observed(path: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Counts each call of a version-recording method by outcome and times it."""
    seconds = COMMIT_SECONDS.labels(path=path)
    committed = COMMITS.labels(path=path, outcome="committed")

    def decorate(method: Callable[P, R]) -> Callable[P, R]:
        @wraps(method)
        def observed(*args: P.args, **kwargs: P.kwargs) -> R:
            started = time.perf_counter()
            try:
                result = method(*args, **kwargs)
            except BaseException as exc:
                COMMITS.labels(path=path, outcome=_outcome(exc)).inc()
                raise
            finally:
                seconds.observe(time.perf_counter() - started)
            committed.inc()
            return result

        return observed

    return decorate
