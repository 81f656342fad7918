"""Telemetry: a recorder, and the batches it sends to ``POST /api/v1/telemetry``.

No background thread (Lambda freezes it between invocations): a batch goes out when the
caller's code reaches a natural point, the flag client's next document refresh or an explicit
``flush(timeout=...)``. A flush takes what was recorded, sends it within its total time bound
and never raises. A flush sends at most once per ``min_interval`` seconds (30 by default,
``ANALEMMA_TELEMETRY_INTERVAL``) counted from the last delivered batch, unless forced: a busy
function that flushes at the end of every invocation still sends one batch per interval.

When the outcome of a send is unknown (a timeout or a connection lost after the body went out,
a 5xx, a 429), the service may have stored it: the batch is kept as it is, batch id included,
and sent again first by the next flush, so the service's idempotency (environment, batch id)
counts it once. One such pending batch at most; what is recorded meanwhile stays in the
recorder (whose caps hold: what does not fit is counted as dropped) and goes out after the
pending batch is delivered. When the service refuses a batch (4xx: a bad key, an endpoint it
does not have, a body it rejects), sending again would not help: it is dropped and counted in
the next one's ``dropped``. A pending batch first sent over an hour ago is dropped rather
than sent again: by then the service may have forgotten its id and would count it twice. A new
batch always goes out, however long the process was idle: the service files it by its window's
end, no earlier than an hour back.
"""

from __future__ import annotations

import _thread
import os
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
DEFAULT_MIN_INTERVAL = 30.0
INTERVAL_SLACK = 0.99  # a caller pacing itself at the interval is not turned away by microseconds

DELIVERED = "delivered"
KEPT = "kept"  # the outcome is unknown: the batch is pending, sent again as it is
UNSENT = "unsent"  # never went out (no time left): its counts go back into the recorder
DROPPED = "dropped"
EMPTY = "empty"
DEFERRED = "deferred"  # within min_interval of the last delivery: the counts wait


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
        min_interval: float | None = None,
    ) -> None:
        self.url = str(base_url or "").rstrip("/") + PATH
        self._key = str(key or "")
        self.timeout = float(timeout)
        self.recorder = Recorder(units=units, sdk_version=__version__, log=log, tallies=tallies)
        self._lock = _thread.allocate_lock()
        self._not_before = 0.0  # monotonic: a 429's Retry-After, or a pause after a refusal
        self.min_interval = _interval(min_interval)
        self._delivered_at = float("-inf")  # monotonic start of the last flush that delivered
        # A batch sent whose outcome is unknown: sent again, unchanged, before anything newer.
        self.pending: dict[str, Any] | None = None
        self.batches_sent = 0
        self.last_outcome: str | None = None
        self.last_status: int | None = None
        self.last_error: str | None = None
        _track(self)

    def flush(self, timeout: float | None = None, *, force: bool = False) -> bool:
        """Send what was recorded; True when it was delivered, there was nothing to send, or
        the last delivery is less than ``min_interval`` seconds old (the counts wait for a
        later flush; ``force=True``, e.g. in a shutdown hook, sends anyway). False when a send
        failed or could not be made. Returns within ``timeout`` seconds (plus a little CPU),
        never raises, and never waits for another flush in progress."""
        try:
            return self._flush(self.timeout if timeout is None else float(timeout), force)
        except Exception as exc:  # never into the caller
            self.last_error = f"unexpected {type(exc).__name__}: {exc}"
            return False

    def _flush(self, timeout: float, force: bool) -> bool:
        if not self._lock.acquire(False):
            return False  # another thread is sending
        try:
            started = time.monotonic()
            deadline = started + max(timeout, 0.0)
            if started < self._not_before:
                return False  # counts wait in the recorder, within its caps
            if not force and started - self._delivered_at < self.min_interval * INTERVAL_SLACK:
                self.last_outcome = DEFERRED
                return True
            delivered = False
            if self.pending is not None:
                if not self._send_pending(deadline):
                    return False
                delivered = self.last_outcome == DELIVERED  # not when it aged out or was refused
            body = self.recorder.snapshot_and_reset()
            if body is None:
                if delivered:
                    self._delivered_at = started
                else:
                    self.last_outcome = EMPTY
                return True
            if not self._send_parts(split(body), deadline):
                return False
            self._delivered_at = started
            return True
        finally:
            self._lock.release()

    def _send_parts(self, parts: list[dict[str, Any]], deadline: float) -> bool:
        """Send a new batch's parts in turn; True when all were delivered. At the first that
        was not: that one pending if its outcome is unknown, the rest back into the recorder
        (or dropped, when the service refused)."""
        for index, part in enumerate(parts):
            outcome = self._send(part, deadline)
            self.last_outcome = outcome
            if outcome == DELIVERED:
                continue
            if outcome == KEPT:
                self.pending = part  # the service may have it: only this very batch may follow
                index += 1
            for rest in parts[index:]:
                if outcome == DROPPED:
                    self.recorder.add_dropped(_events(rest))
                else:  # never sent: merged into the next batch, under a new id
                    self.recorder.restore(rest)
            return False
        return True

    def _send_pending(self, deadline: float) -> bool:
        """Send the pending batch again, unchanged; True once it is off our hands."""
        pending = self.pending
        assert pending is not None
        if time.time() - pending["sent_at"] > MAX_AGE:  # first sent then; retries keep it
            self.pending = None
            self.recorder.add_dropped(_events(pending))
            self.last_outcome = DROPPED
            return True
        outcome = self._send(pending, deadline)
        self.last_outcome = outcome
        if outcome in (KEPT, UNSENT):
            return False
        self.pending = None
        if outcome == DROPPED:
            self.recorder.add_dropped(_events(pending))
        return True

    def _send(self, body: Mapping[str, Any], deadline: float) -> str:
        from .. import _http  # http.client loads with the first request

        left = deadline - time.monotonic()
        if left <= 0:
            self.last_error = "no time left to send"
            return UNSENT
        headers = {
            "Authorization": f"Bearer {self._key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        try:
            response = _http.request("POST", self.url, headers, encode(body), timeout=left, max_bytes=65536)
        except _http.FetchError as exc:
            self.last_status, self.last_error = None, str(exc)
            # Refused: the body never went out. Anything else (a timeout, a reset, a garbled
            # answer) may have come after the service stored it.
            return UNSENT if self.last_error.startswith("ConnectionRefusedError") else KEPT
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
        self.pending = None  # the parent's batch
        self.recorder.forget()

    def __repr__(self) -> str:
        return f"<Telemetry {self.url} sent={self.batches_sent} last={self.last_outcome}>"


_instances: Any = None  # a WeakSet of every Telemetry, for the fork hook


def _track(telemetry: Telemetry) -> None:
    global _instances
    if _instances is None:
        import weakref

        _instances = weakref.WeakSet()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_all)
    _instances.add(telemetry)


def _after_fork_all() -> None:
    for telemetry in list(_instances or ()):
        telemetry._after_fork()


def _interval(value: float | None) -> float:
    """``min_interval``, else ``ANALEMMA_TELEMETRY_INTERVAL``, else 30 s; a bad value is the default."""
    if value is None:
        raw = os.environ.get("ANALEMMA_TELEMETRY_INTERVAL")
        if raw is None:
            return DEFAULT_MIN_INTERVAL
        try:
            value = float(raw)
        except ValueError:
            return DEFAULT_MIN_INTERVAL
    return max(float(value), 0.0) if value == value else DEFAULT_MIN_INTERVAL


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
