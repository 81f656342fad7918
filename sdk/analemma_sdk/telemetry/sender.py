"""Telemetry: a recorder, and the batches it sends to ``POST /api/v1/telemetry``.

No background thread (Lambda freezes it between invocations): a batch goes out when the
caller's code reaches a natural point, the flag client's next document refresh or an explicit
``flush(timeout=...)``. A flush takes what was recorded, sends it within its total time bound
and never raises. When the service cannot take it (unreachable, slow, 5xx, 429), the counts
go back into the recorder and out with the next batch: at most one batch worth is ever kept,
since the recorder's caps still hold and what does not fit is counted as dropped. When the
service refuses it (4xx: a bad key, an endpoint it does not have, a body it rejects), sending
again would not help: the batch is dropped and counted in the next one's ``dropped``. A
batch older than an hour is dropped too: the service files nothing that old where it happened.
"""

from __future__ import annotations

import _thread
import time

from .. import __version__
from .recorder import Recorder
from .wire import batch_id, encode

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

__all__ = ["MAX_BODY_BYTES", "Telemetry"]

PATH = "/api/v1/telemetry"
MAX_BODY_BYTES = 64 * 1024
DEFAULT_FLUSH_TIMEOUT = 0.5
MAX_AGE = 3600.0
REFUSED_PAUSE = 600.0  # after a refused key or a missing endpoint, ask again this much later
MAX_RETRY_AFTER = 600.0

DELIVERED = "delivered"
KEPT = "kept"
DROPPED = "dropped"
EMPTY = "empty"


class Telemetry:
    """``Telemetry(base_url, key)``; ``recorder`` counts, ``flush(timeout)`` sends."""

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        timeout: float = DEFAULT_FLUSH_TIMEOUT,
        units: bool = True,
        log: list[tuple[Any, ...]] | None = None,
        tallies: Callable[[], list[Any]] | None = None,
    ) -> None:
        self.url = str(base_url or "").rstrip("/") + PATH
        self._key = str(key or "")
        self.timeout = float(timeout)
        self.recorder = Recorder(units=units, sdk_version=__version__, log=log, tallies=tallies)
        self._lock = _thread.allocate_lock()
        self._not_before = 0.0  # monotonic: a 429's Retry-After, or a pause after a refusal
        self.batches_sent = 0
        self.last_outcome: str | None = None
        self.last_status: int | None = None
        self.last_error: str | None = None
        _track(self)

    def flush(self, timeout: float | None = None) -> bool:
        """Send what was recorded; True when it was delivered (or there was nothing to send).
        Returns within ``timeout`` seconds (plus a little CPU), never raises, and never waits
        for another flush in progress."""
        try:
            return self._flush(self.timeout if timeout is None else float(timeout))
        except Exception as exc:  # never into the caller
            self.last_error = f"unexpected {type(exc).__name__}: {exc}"
            return False

    def _flush(self, timeout: float) -> bool:
        if not self._lock.acquire(False):
            return False  # another thread is sending
        try:
            deadline = time.monotonic() + max(timeout, 0.0)
            if time.monotonic() < self._not_before:
                return False  # counts wait in the recorder, within its caps
            body = self.recorder.snapshot_and_reset()
            if body is None:
                self.last_outcome = EMPTY
                return True
            if body["sent_at"] - body["window"][0] > MAX_AGE:
                self.recorder.dropped += _events(body)
                self.last_outcome = DROPPED
                return False
            parts = split(body)
            for index, part in enumerate(parts):
                outcome = self._send(part, deadline)
                self.last_outcome = outcome
                if outcome == DELIVERED:
                    continue
                rest = parts[index:]
                if outcome == KEPT:
                    for kept in rest:
                        self.recorder.restore(kept)
                else:
                    self.recorder.dropped += sum(_events(dropped) for dropped in rest)
                return False
            return True
        finally:
            self._lock.release()

    def _send(self, body: Mapping[str, Any], deadline: float) -> str:
        from .. import _http  # http.client loads with the first request

        left = deadline - time.monotonic()
        if left <= 0:
            self.last_error = "no time left to send"
            return KEPT
        headers = {
            "Authorization": f"Bearer {self._key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        try:
            response = _http.request("POST", self.url, headers, encode(body), timeout=left, max_bytes=65536)
        except _http.FetchError as exc:
            self.last_status, self.last_error = None, str(exc)
            return KEPT
        status = self.last_status = response.status
        if status in (200, 201, 202):
            self.batches_sent += 1
            self.last_error = None
            return DELIVERED
        self.last_error = f"HTTP {status}: {response.body[:200]!r}"
        if status == 429:
            self._not_before = time.monotonic() + _retry_after(response.headers.get("retry-after"))
            return KEPT
        if status >= 500:
            return KEPT
        if status in (401, 403, 404):
            self._not_before = time.monotonic() + REFUSED_PAUSE
        _log("telemetry batch refused by %s: %s", self.url, self.last_error)
        return DROPPED

    def _after_fork(self) -> None:
        self._lock = _thread.allocate_lock()
        self.recorder.forget()

    def __repr__(self) -> str:
        return f"<Telemetry {self.url} sent={self.batches_sent} last={self.last_outcome}>"


_instances: Any = None  # a WeakSet of every Telemetry, for the fork hook


def _track(telemetry: Telemetry) -> None:
    global _instances
    if _instances is None:
        import os
        import weakref

        _instances = weakref.WeakSet()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_all)
    _instances.add(telemetry)


def _after_fork_all() -> None:
    for telemetry in list(_instances or ()):
        telemetry._after_fork()


def _retry_after(value: str | None) -> float:
    try:
        seconds = float(value) if value is not None else 1.0
    except ValueError:
        seconds = 1.0  # an HTTP date: not worth parsing for a pause this short
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _events(body: Mapping[str, Any]) -> int:
    """What a batch stands for, as ``dropped`` counts it: evaluations, hydrator events, and
    what it already reported as dropped."""
    total = int(body.get("dropped") or 0)
    total += sum(int(item["count"]) for item in body.get("evaluations") or ())
    for item in body.get("statebag") or ():
        counters = item["counters"]
        total += int(counters.get("hydrations", 0)) + int(counters.get("dehydrations", 0))
    return total


def split(body: dict[str, Any], limit: int = MAX_BODY_BYTES) -> list[dict[str, Any]]:
    """The body as one or more bodies of at most ``limit`` encoded bytes each (a sketch is
    ~350 bytes, so 512 keys with sketches do not fit one); cohorts and ``dropped`` ride in the
    first. Each part has a batch id of its own."""
    if len(encode(body)) <= limit:
        return [body]
    head = {**body, "evaluations": []}
    room = limit - len(encode(head)) - 16
    parts: list[dict[str, Any]] = []
    current: list[dict[str, Any]] = []
    used = 0
    for item in body["evaluations"]:
        size = len(encode(item)) + 1
        if current and used + size > room:
            parts.append({**head, "evaluations": current})
            head = {**body, "batch": batch_id(), "dropped": 0, "evaluations": [], "statebag": []}
            room = limit - len(encode(head)) - 16
            current, used = [], 0
        current.append(item)
        used += size
    parts.append({**head, "evaluations": current})
    return parts


def _log(message: str, *args: Any) -> None:
    import logging  # only when there is something to say

    logging.getLogger("analemma_sdk.telemetry").warning(message, *args)
