"""Hydrator telemetry: per configuration cohort, what the state bag costs.

Counted per cohort (the hydrator's ``cohort``, its configuration tag): executions, hydrations
and dehydrations; store requests by operation and bytes written and read (through a thin
wrapper around the store the hydrator reads and writes with); inline, offloaded and payload
bytes; hydrate and dehydrate latency (log2 histograms; a hydrate's lazy field reads come later
and are not in it); cold and warm containers (the first execution this process sees is the
cold one); typed errors; degraded-to-legacy events; two-phase commit outcomes.

An execution starts with a hydrate, or with a dehydrate that no hydrate preceded.
"""

from __future__ import annotations

import time

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from typing import Any

    from .recorder import Cohort
    from .sender import Telemetry

__all__ = ["CountedStore", "HydratorTelemetry", "service_telemetry"]

MAX_ERROR_NAMES = 16  # typed error counters per cohort; beyond, only ``errors``
DEFAULT_FLUSH_EVERY = 30.0

_cold = True  # no execution seen in this process yet
_services: dict[tuple[str, str], Telemetry] = {}


def service_telemetry(base_url: str, write_key: str) -> Telemetry:
    """The process's Telemetry for a hydrator with no flag client: its write key, its
    service."""
    key = (base_url, write_key)
    sink = _services.get(key)
    if sink is None:
        from .sender import Telemetry

        sink = _services.setdefault(key, Telemetry(base_url, write_key))
    return sink


class HydratorTelemetry:
    """What one hydrator reports, into its cohort's entry of ``sink``'s recorder.
    ``flush_every``: seconds between batches sent after a dehydration (for a sink no flag
    client refreshes); None never sends by itself."""

    __slots__ = ("sink", "entry", "flush_every", "_next_flush", "_open", "_errors", "_stores", "_cohort")

    def __init__(
        self, sink: Telemetry, cohort: Mapping[str, Any], *, flush_every: float | None = None
    ) -> None:
        self.sink = sink
        self._cohort = dict(cohort)
        self.entry: Cohort = sink.recorder.cohort(cohort)
        self.flush_every = flush_every
        self._next_flush = time.monotonic() + flush_every if flush_every else float("inf")
        self._open = False  # a hydrate started an execution that no dehydrate has ended
        self._errors: set[str] = set()
        self._stores: list[CountedStore] = []

    def retarget(self, sink: Telemetry) -> None:
        """Report to ``sink`` from now on (the store wrapper follows)."""
        self.sink = sink
        self.entry = sink.recorder.cohort(self._cohort)
        for store in self._stores:
            store._entry = self.entry

    def send_every(self, seconds: float | None) -> None:
        """Send a batch after a dehydration once ``seconds`` have passed since the last (for a
        sink no flag client refreshes); None: never by itself."""
        self.flush_every = seconds
        self._next_flush = time.monotonic() + seconds if seconds else float("inf")

    def store(self, inner: Any) -> CountedStore:
        store = CountedStore(inner, self.entry)
        self._stores.append(store)
        return store

    def _begin(self, counter: str) -> None:
        global _cold
        entry = self.entry
        with entry.lock:
            counters = entry.counters
            counters[counter] = counters.get(counter, 0) + 1
            if counter == "hydrations" or not self._open:
                counters["executions"] = counters.get("executions", 0) + 1
                container = "cold_containers" if _cold else "warm_containers"
                _cold = False
                counters[container] = counters.get(container, 0) + 1
            self._open = counter == "hydrations"
        self.sink.recorder.touch()

    def hydrate(self, hydrate: Callable[[Any], Any], event: Any) -> Any:
        self._begin("hydrations")
        started = time.perf_counter_ns()
        try:
            return hydrate(event)
        except Exception as exc:
            self.error(exc)
            raise
        finally:
            self.entry.observe("hydrate", time.perf_counter_ns() - started)

    def dehydrate(self, dehydrate: Callable[..., Any], state: Any, **ids: Any) -> Any:
        self._begin("dehydrations")
        started = time.perf_counter_ns()
        try:
            result = dehydrate(state, **ids)
        except Exception as exc:
            self.error(exc)
            raise
        finally:
            self.entry.observe("dehydrate", time.perf_counter_ns() - started)
        entry = self.entry
        with entry.lock:
            counters = entry.counters
            for name, amount in (
                ("payload_bytes", result.payload_bytes),
                ("inline_bytes", result.inline_bytes),
                ("offloaded_bytes", result.offloaded_bytes),
            ):
                counters[name] = counters.get(name, 0) + amount
        if time.monotonic() >= self._next_flush:
            self.send_every(self.flush_every)
            self.sink.flush()
        return result

    def error(self, exc: BaseException) -> None:
        name = f"error_{type(exc).__name__}"
        if name in self._errors or len(self._errors) < MAX_ERROR_NAMES:
            self._errors.add(name)
            self.entry.add2("errors", 1, name, 1)
        else:
            self.entry.add("errors")

    def degraded(self) -> None:
        self.entry.add("degraded_to_legacy")

    def commit(self, outcome: str) -> None:
        """``2pc``, ``record`` or ``failed``."""
        self.entry.add(f"commits_{outcome}")


class CountedStore:
    """The hydrator's store, counting each request and its bytes into the cohort (requests
    are counted as they are made, bytes as they arrive). Anything else is the inner store's."""

    def __init__(self, inner: Any, entry: Cohort) -> None:
        self.inner = inner
        self._entry = entry

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # direct_writes, root, modified, ...

    def __repr__(self) -> str:
        return repr(self.inner)

    def put(self, key: str, data: bytes) -> None:
        self._entry.add2("requests_put", 1, "bytes_written", len(data))
        self.inner.put(key, data)

    def get(self, key: str) -> bytes:
        self._entry.add("requests_get")
        data: bytes = self.inner.get(key)
        self._entry.add("bytes_read", len(data))
        return data

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        self._entry.add("requests_get")
        data: bytes = self.inner.get_range(key, offset, length)
        self._entry.add("bytes_read", len(data))
        return data

    def exists(self, key: str) -> bool:
        self._entry.add("requests_head")
        return bool(self.inner.exists(key))

    def delete(self, key: str) -> None:
        self._entry.add("requests_delete")
        self.inner.delete(key)

    def list(self, prefix: str = "") -> Iterator[str]:
        self._entry.add("requests_list")
        listed: Iterator[str] = self.inner.list(prefix)
        return listed
