"""Object-store requests, round trips and bytes of real workflow executions, in every hydrator
mode, against a re-implementation of the original system's legacy path.

    python bench/statebag_workload.py [--quick] [--corpus DIR] [--workload tau|fanout|all]
                                      [--json-only] [--latency-ms MS | --no-latency] [--jobs N]
                                      [--store local|s3]

Workloads
* ``tau``: one execution per agent trajectory of the corpus (``{task_id, reward, info, traj,
  trial}``). The state starts as ``{task_id, reward, info, trial, messages: [], llm_response:
  null}``; step k (k = 1..len(traj)) hydrates the previous payload (passed through JSON, as
  the orchestrator does), reads every field (an agent replays the whole conversation),
  appends message k to ``messages``, replaces ``llm_response`` with the chat-completion record
  of ``llm_record`` (message k plus the system prompt) and dehydrates.
* ``fanout``: a workflow with large shared fields, generated from a seeded random
  (``workflow_config`` ~100 KB, ``partition_map``, ``query_results`` a few MB of varied
  records). Step 1 (the parent execution) stores them; a Distributed-Map-style step runs one
  child execution per branch (``<parent>-branch-<i>``, each in a new container), which
  hydrates the parent's payload, reads the shared fields and writes ``branch_results``
  (2-20 KB); a reduce step (the parent, a new container) hydrates the parent's payload and
  every child's, reads ``workflow_config`` and every result, and writes ``final_state``.

Modes
* ``original_legacy``: the original system's legacy path, re-implemented here from its
  rules (``OriginalLegacy``): a field leaves the payload only when its name is one of the
  data-plane fields and its JSON (``json.dumps`` with Python's defaults) is over 10 * 1024
  bytes; each such field is one uncompressed JSON object under a new key at each
  dehydration; every offloaded field read during the step is written again in full, one not
  read keeps its pointer; hydration is lazy, one whole-object GET per field on first access,
  nothing cached. The original has no manifest service: its SERVICE rows are its DIRECT runs.
* ``legacy``: this project's ``StateHydrator()`` with no arguments, meant to behave exactly
  like the above (the output says whether it does). No manifest service either.
* ``batched`` (``use_batching``, gzip) and ``batched_zstd`` (``use_batching, use_zstd``):
  DIRECT (the Lambda writes the store, no manifest service) and SERVICE (``use_2pc`` through
  the manifest service: prepare, upload, commit).
* ``degraded`` (shown when the project has this fallback; warm containers only):
  ``batched_zstd`` with ``use_2pc`` whose manifest service is down, so every dehydration
  takes the path the hydrator falls back to. A row for what an outage costs, not a baseline.

Containers: WARM is one hydrator per execution (a warm container serves the execution),
COLD a new hydrator at every step (no cache, no memory of what is stored). In ``fanout``
every step runs in a new container by construction, so it has one row per mode.

The service runs in this process: Django with a temporary SQLite database (migrated at
start) and the "statebag" store in a local folder; ``InProcessService`` calls the same
service functions the HTTP API calls (scope check and ``StateVersioningService.prepare``;
``remote.commit``, which verifies every uploaded object before committing; ``remote.abort``)
without the HTTP layer. The Lambda writes the service's store directly (its own
``STATEBAG_STORE_URL``); with ``--store s3`` that store is a bucket on a loopback
S3-protocol server (moto) instead of a folder. Runs are spread over ``--jobs`` processes, each with its own
database; every run has stores and an owner of its own, so no run reuses another's blobs.

How each figure is counted
* Requests by operation (PUT, GET whole, GET ranged, HEAD, LIST, DELETE): every request to
  the object store made for the execution by anyone: the Lambda's store, and the service's
  store (``statebag_store()``, replaced by a counting wrapper: upload verification and, when
  the service has them, envelopes, written as each execution ends and counted with it but
  on no step's critical path). Per execution: mean, and the max of all requests.
* Round trips per step, on the step's critical path: each call to the service counts one;
  a store request counts one when it starts while no other request of the same side (the
  Lambda, or the service) is in flight, so parallel GETs of one step count once. Every
  request takes a simulated latency (``--latency-ms``, 1 ms by default; 5 ms at least off
  the main thread, so that a thread pool's requests overlap while its threads start); with
  ``--no-latency`` parallel requests may count separately. Mean and max per step.
* Bytes written: bytes of every PUT (both sides). ``written/raw``: all bytes written over
  all raw state bytes, the compact UTF-8 JSON of the whole state after each step, summed.
* Largest control payload: the compact UTF-8 JSON of the biggest payload a step returned.
* Lossless: the last payload of every execution, hydrated by a fresh hydrator, equals the
  state that was written, including the key order of every object (the JSON of both, keys
  unsorted, compared byte for byte). In ``fanout``: the reduce step's output, every child's
  result as the reduce step read it, and the whole state of the first and last child.

Output: a table per workload, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import DEFAULT_CORPUS, emit_json, load_corpus, print_table

from analemma_sdk.statebag import LocalFolderStore, StateHydrator

OPS = ("put", "get_whole", "get_ranged", "head", "list", "delete")
OP_LABELS = {
    "put": "PUT",
    "get_whole": "GET whole",
    "get_ranged": "GET ranged",
    "head": "HEAD",
    "list": "LIST",
    "delete": "DELETE",
}
MODES: dict[str, dict[str, Any]] = {
    "original_legacy": {},
    "legacy": {},
    "batched": {"use_batching": True},
    "batched_zstd": {"use_batching": True, "use_zstd": True},
}
# Modes with no manifest service: their SERVICE rows are their DIRECT runs.
NO_SERVICE = {"original_legacy", "legacy"}
# The project's fallback when the manifest service cannot be reached: batched_zstd asked to
# commit through a service that is down. Shown when the project has it (``has_degraded_mode``).
DEGRADED = "degraded"


# Simulated latency, at least, of a store request made off the main thread (see Side).
THREAD_LATENCY = 0.005

try:  # the same bytes as the standard library's compact form, several times faster
    from orjson import dumps as _orjson_dumps
except ImportError:  # pragma: no cover - orjson comes with analemma-sdk[fast]
    _orjson_dumps = None


def compact(value: Any) -> bytes:
    """Compact UTF-8 JSON, keys in the value's order."""
    if _orjson_dumps is not None:
        return bytes(_orjson_dumps(value))
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def through_json(payload: Any) -> Any:
    """What the orchestrator hands the next step."""
    return json.loads(json.dumps(payload))


# Metering -----------------------------------------------------------------------------------
class Side:
    """One side's store traffic (the Lambda's, or the service's): requests by operation,
    bytes written, and round trips: a request that starts while none is in flight on this
    side starts a new one.

    Every request takes ``latency``; one made off the main thread (a thread pool's) at least
    ``THREAD_LATENCY``, so that requests issued together overlap even while the pool's threads
    are still starting."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.thread_latency = max(latency, THREAD_LATENCY) if latency else 0.0
        self.ops: Counter[str] = Counter()
        self.bytes_written = 0
        self.round_trips = 0
        self._in_flight = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def request(self, op: str, written: int = 0) -> Iterator[None]:
        with self._lock:
            if self._in_flight == 0:
                self.round_trips += 1
            self._in_flight += 1
            self.ops[op] += 1
            self.bytes_written += written
        try:
            main = threading.current_thread() is threading.main_thread()
            delay = self.latency if main else self.thread_latency
            if delay:
                time.sleep(delay)
            yield
        finally:
            with self._lock:
                self._in_flight -= 1


class MeteredStore:
    """A BlobStore that reports every request to its side."""

    def __init__(self, inner: Any, side: Side) -> None:
        self.inner = inner
        self.side = side

    def __repr__(self) -> str:
        return f"MeteredStore({self.inner!r})"

    def put(self, key: str, data: bytes) -> None:
        with self.side.request("put", len(data)):
            self.inner.put(key, data)

    def get(self, key: str) -> bytes:
        with self.side.request("get_whole"):
            data: bytes = self.inner.get(key)
            return data

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        with self.side.request("get_ranged"):
            data: bytes = self.inner.get_range(key, offset, length)
            return data

    def exists(self, key: str) -> bool:
        with self.side.request("head"):
            return bool(self.inner.exists(key))

    def delete(self, key: str) -> None:
        with self.side.request("delete"):
            self.inner.delete(key)

    def list(self, prefix: str = "") -> Iterator[str]:
        with self.side.request("list"):
            keys = list(self.inner.list(prefix))
        return iter(keys)


class Ledger:
    """Everything one run counts: both sides' stores and the calls to the service."""

    def __init__(self, latency: float) -> None:
        self.lambda_side = Side(latency)
        self.service_side = Side(latency)
        self.service_calls: Counter[str] = Counter()

    def snapshot(self) -> tuple[Counter[str], int, int, int, int]:
        ops = self.lambda_side.ops + self.service_side.ops
        return (
            ops,
            self.lambda_side.bytes_written + self.service_side.bytes_written,
            self.lambda_side.round_trips,
            self.service_side.round_trips,
            sum(self.service_calls.values()),
        )

    def since(self, before: tuple[Counter[str], int, int, int, int]) -> Usage:
        ops, written, rt_lambda, rt_service, calls = self.snapshot()
        diff = Counter({op: ops[op] - before[0][op] for op in OPS})
        return Usage(
            ops=diff,
            written=written - before[1],
            rt_lambda=rt_lambda - before[2],
            rt_service_store=rt_service - before[3],
            service_calls=calls - before[4],
        )


@dataclass
class Usage:
    ops: Counter[str]
    written: int
    rt_lambda: int = 0
    rt_service_store: int = 0
    service_calls: int = 0

    @property
    def round_trips(self) -> int:
        return self.rt_lambda + self.rt_service_store + self.service_calls

    @property
    def requests(self) -> int:
        return sum(self.ops.values())


@dataclass
class Step:
    usage: Usage
    payload_bytes: int
    raw_bytes: int


@dataclass
class Execution:
    steps: list[Step] = field(default_factory=list)
    after: Usage | None = None  # requests made once the execution went quiet (envelopes)

    def total(self) -> Usage:
        ops: Counter[str] = Counter()
        written = 0
        for usage in [s.usage for s in self.steps] + ([self.after] if self.after else []):
            ops.update(usage.ops)
            written += usage.written
        return Usage(ops=ops, written=written)


# The original system's legacy path, re-implemented ---------------------------------------
ORIGINAL_DATA_PLANE = frozenset(
    {
        "workflow_config",
        "partition_map",
        "segment_manifest",
        "current_state",
        "final_state",
        "state_history",
        "parallel_results",
        "branch_results",
        "callback_result",
        "llm_response",
        "query_results",
        "step_history",
        "messages",
        "thought_signature",
        "thinking_process",
        "thought_steps",
    }
)
ORIGINAL_THRESHOLD = 10 * 1024  # "over 10 KB", read as 10,240 bytes of JSON
ORIGINAL_BUCKET = "analemma-workflow-state"
ORIGINAL_FLAG = "__s3_offloaded"


def original_json(value: Any, style: str) -> bytes:
    if style == "compact":
        return compact(value)
    return json.dumps(value).encode()  # Python's defaults: ", " / ": ", ASCII escapes


class OriginalBag(MutableMapping[str, Any]):
    """The state as the original's hydration gives it: an offloaded field is fetched, whole,
    on first access; nothing else is kept between invocations."""

    def __init__(self, store: Any, stored: dict[str, Any]) -> None:
        self._store = store
        self._stored = stored
        self._values: dict[str, Any] = {}
        self._deleted: set[str] = set()

    @staticmethod
    def is_pointer(value: Any) -> bool:
        return isinstance(value, dict) and value.get(ORIGINAL_FLAG) is True

    def __getitem__(self, name: str) -> Any:
        if name in self._values:
            return self._values[name]
        if name in self._deleted or name not in self._stored:
            raise KeyError(name)
        value = self._stored[name]
        if self.is_pointer(value):
            value = json.loads(self._store.get(value["key"]))
        self._values[name] = value
        return value

    def __setitem__(self, name: str, value: Any) -> None:
        self._values[name] = value
        self._deleted.discard(name)

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        self._values.pop(name, None)
        self._deleted.add(name)

    def __iter__(self) -> Iterator[str]:
        for name in self._stored:
            if name not in self._deleted:
                yield name
        for name in self._values:
            if name not in self._stored and name not in self._deleted:
                yield name

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, name: object) -> bool:
        return name not in self._deleted and (name in self._values or name in self._stored)

    def untouched_pointer(self, name: str) -> dict[str, Any] | None:
        """The stored pointer of a field neither read nor assigned during the step."""
        if name in self._values or name in self._deleted:
            return None
        value = self._stored.get(name)
        return value if self.is_pointer(value) else None

    def to_dict(self) -> dict[str, Any]:
        return {name: self[name] for name in self}


class OriginalLegacy:
    """The original system's legacy path (see the module docstring for its rules)."""

    def __init__(self, store: Any, owner: str, json_style: str = "python") -> None:
        self.store = store
        self.owner = owner
        self.json_style = json_style

    def hydrate(self, event: dict[str, Any]) -> OriginalBag:
        state_data = event.get("state_data")
        if isinstance(state_data, dict):
            bag = state_data.get("bag")
            stored = dict(bag) if isinstance(bag, dict) else dict(state_data)
        else:
            stored = dict(event)
        return OriginalBag(self.store, stored)

    def dehydrate(self, state: OriginalBag, execution_id: str) -> dict[str, Any]:
        payload: dict[str, Any] = {}
        for name in state:
            pointer = state.untouched_pointer(name)
            if pointer is not None:
                payload[name] = pointer  # never loaded: the pointer stays
                continue
            value = state[name]
            data = original_json(value, self.json_style) if name in ORIGINAL_DATA_PLANE else b""
            if len(data) > ORIGINAL_THRESHOLD:
                key = f"workflow-state/{self.owner}/{execution_id}/{name}/{uuid.uuid4().hex}.json"
                self.store.put(key, data)
                payload[name] = {
                    ORIGINAL_FLAG: True,
                    "bucket": ORIGINAL_BUCKET,
                    "key": key,
                    "size": len(data),
                }
            else:
                payload[name] = value
        return payload


# Engines: one "container" of a mode ------------------------------------------------------------
class ProjectEngine:
    def __init__(self, hydrator: StateHydrator, owner: str, workflow: str) -> None:
        self.hydrator = hydrator
        self.owner = owner
        self.workflow = workflow

    def hydrate(self, payload: dict[str, Any]) -> MutableMapping[str, Any]:
        return self.hydrator.hydrate(payload)

    def dehydrate(self, state: Any, execution_id: str) -> dict[str, Any]:
        return self.hydrator.dehydrate(
            state, owner_id=self.owner, workflow_id=self.workflow, execution_id=execution_id
        )


class OriginalEngine:
    def __init__(self, legacy: OriginalLegacy) -> None:
        self.legacy = legacy

    def hydrate(self, payload: dict[str, Any]) -> MutableMapping[str, Any]:
        return self.legacy.hydrate(payload)

    def dehydrate(self, state: Any, execution_id: str) -> dict[str, Any]:
        return self.legacy.dehydrate(state, execution_id)


Engine = ProjectEngine | OriginalEngine


@dataclass
class RunSpec:
    mode: str
    cold: bool
    service: bool
    store: Any  # the Lambda's metered store
    plain: Any  # the same folder, unmetered (verification reads)
    owner: str  # one per run, so runs never share blobs
    manifest_store: Any = None
    json_style: str = "python"

    def engine(self, workflow: str, *, metered: bool = True) -> Engine:
        store = self.store if metered else self.plain
        if self.mode == "original_legacy":
            return OriginalEngine(OriginalLegacy(store, self.owner, self.json_style))
        options = dict(MODES["batched_zstd" if self.mode == DEGRADED else self.mode])
        if self.service and metered:
            options.update(use_2pc=True, manifest_store=self.manifest_store)
        return ProjectEngine(StateHydrator(store=store, **options), self.owner, workflow)


def touch(value: Any) -> None:
    """Use a value as an agent does: serialize it (into a prompt)."""
    compact(value)


def json_equal(actual: Any, expected: Any) -> bool:
    """Equal, with every object's keys in the same order: the JSON of both, keys unsorted."""
    return compact(actual) == compact(expected)


def to_plain(bag: MutableMapping[str, Any]) -> dict[str, Any]:
    return {name: bag[name] for name in bag}


# The service, in process ------------------------------------------------------------------------
class InProcessService:
    """The manifest service's two-phase commit as the HTTP API runs it, without HTTP: the same
    scope check and prepare, the commit with its upload verification, the abort. Each call
    is one round trip of the step."""

    def __init__(self, ledger: Ledger) -> None:
        from statebag.services import StateVersioningService

        self.ledger = ledger
        self.service = StateVersioningService(use_2pc=True)
        self.owners: dict[str, str] = {}

    def prepare(self, request: Any) -> Any:
        from statebag.services import remote

        self.ledger.service_calls["prepare"] += 1
        remote.prepare_request_check(request.owner_id, request)
        prepared = self.service.prepare(request)
        if prepared.txn_id:
            self.owners[prepared.txn_id] = request.owner_id
        return prepared

    def commit(self, txn_id: str, entries: Any, cohort: Any) -> Any:
        from analemma_sdk.statebag import ManifestRecord
        from statebag.services import remote

        self.ledger.service_calls["commit"] += 1
        answer = remote.commit(self.owners[txn_id], txn_id, entries, cohort)  # verifies uploads
        return ManifestRecord(answer["hash"], int(answer["version"]), answer.get("entries"))

    def abort(self, txn_id: str) -> None:
        from statebag.services import remote

        self.ledger.service_calls["abort"] += 1
        remote.abort(self.owners[txn_id], txn_id)

    def record(self, draft: Any) -> Any:
        """As HttpManifestStore.record: a version that uploads nothing is one call (``POST
        /manifests``); one whose objects were uploaded first is prepared and committed at once."""
        from analemma_sdk.statebag import ManifestRecord
        from analemma_sdk.statebag.manifests import PrepareRequest
        from statebag.services import remote

        if not draft.packs:
            self.ledger.service_calls["record"] += 1
            answer, _ = remote.record(draft.owner_id, draft)
            return ManifestRecord(answer["hash"], int(answer["version"]), answer.get("entries"))
        prepared = self.prepare(
            PrepareRequest(
                owner_id=draft.owner_id,
                workflow_id=draft.workflow_id,
                execution_id=draft.execution_id,
                parents=draft.parents,
                packs=draft.packs,
                reused=(),
                idempotency_key=draft.idempotency_key,
            )
        )
        if prepared.committed is not None:
            return prepared.committed
        return self.commit(prepared.txn_id, draft.entries, draft.cohort)


class UnreachableService:
    """A manifest service that is down: every call fails (after its timeout, in real life)."""

    def __init__(self, ledger: Ledger | None = None) -> None:
        self.ledger = ledger

    def _down(self, call: str) -> Any:
        from analemma_sdk.statebag.errors import ManifestServiceUnavailableError

        if self.ledger is not None:
            self.ledger.service_calls[call] += 1
        raise ManifestServiceUnavailableError(f"{call}: connection refused")

    def prepare(self, request: Any) -> Any:
        return self._down("prepare")

    def commit(self, txn_id: str, entries: Any, cohort: Any) -> Any:
        return self._down("commit")

    def abort(self, txn_id: str) -> None:
        self._down("abort")

    def record(self, draft: Any) -> Any:
        return self._down("record")


def has_degraded_mode() -> bool:
    """Whether a hydrator whose manifest service is down still stores the step (on a path of
    its own, marked in the payload) rather than failing it."""
    big = {"messages": [{"role": "user", "content": f"turn {i} " * 40} for i in range(200)]}
    try:
        with tempfile.TemporaryDirectory() as folder, _quiet_logger("analemma_sdk.statebag"):
            hydrator = StateHydrator(
                use_batching=True,
                use_zstd=True,
                use_2pc=True,
                store=LocalFolderStore(folder),
                manifest_store=UnreachableService(),
            )
            payload = hydrator.dehydrate(big, owner_id="probe", workflow_id="probe", execution_id="probe")
    except Exception:
        return False
    meta = next((v for v in payload.values() if isinstance(v, dict) and "degraded" in v), {})
    return bool(meta.get("degraded"))


class ServiceHarness:
    """Django in this process, with the service's store replaced by a metered one per run."""

    def __init__(self, workdir: Path) -> None:
        os.environ["ANALEMMA_TEST_DATABASE_URL"] = f"sqlite:///{workdir / 'bench.sqlite3'}"
        os.environ["STATEBAG_LOCAL_ROOT"] = str(workdir / "service-default")
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "analemma.settings.test")
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        import statebag.services.remote  # noqa: F401 - its name binding of statebag_store is patched too
        from statebag.services import stores

        self.envelopes = _envelope_writer()
        self.envelope_errors: list[str] = []
        self._original = stores.statebag_store
        self.current: Any = None

        def metered_store() -> Any:
            return self.current

        metered_store.cache_clear = lambda: None  # type: ignore[attr-defined]
        for name, module in list(sys.modules.items()):
            if name.startswith("statebag") and getattr(module, "statebag_store", None) is self._original:
                module.statebag_store = metered_store  # type: ignore[attr-defined]

    @property
    def envelope_name(self) -> str | None:
        return self.envelopes.__name__ if self.envelopes is not None else None

    def use(self, store: MeteredStore) -> None:
        self.current = store

    def write_envelopes(self, owner_id: str, execution_id: str) -> None:
        if self.envelopes is None:
            return
        try:
            self.envelopes(owner_id=owner_id, execution_id=execution_id, store=self.current)
        except Exception as exc:  # reported with the results; the steps' figures still stand
            self.envelope_errors.append(f"{execution_id}: {type(exc).__name__}: {exc}")


def after_execution(
    ledger: Ledger, harness: ServiceHarness | None, spec: RunSpec, execution_id: str
) -> Usage:
    """What the service does once an execution goes quiet (its envelope), counted apart
    from the steps: it is on no step's critical path."""
    before = ledger.snapshot()
    if harness is not None and spec.service and spec.mode not in NO_SERVICE | {DEGRADED}:
        harness.write_envelopes(spec.owner, execution_id)
    return ledger.since(before)


def _envelope_writer() -> Callable[..., None] | None:
    """The service's envelope writing (``statebag.services.envelopes``), when it has it: each
    execution is flushed as soon as it ends (a quiet period of 0), through the metered store."""
    try:
        from statebag.services import envelopes  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return None
    flush = getattr(envelopes, "envelope_flush", None)
    write_all = getattr(envelopes, "envelopes_write", None)
    if not callable(flush) and not callable(write_all):
        return None

    def call(*, owner_id: str, execution_id: str, store: Any) -> None:
        from datetime import timedelta

        from statebag.models import Execution

        if not callable(flush):
            write_all(quiet=timedelta(0), store=store)  # every execution that is due
            return
        pk = (
            Execution.objects.filter(owner_id=owner_id, execution_id=execution_id)
            .values_list("pk", flat=True)
            .first()
        )
        if pk is None:
            return
        for _ in range(10_000):  # one segment per call, until nothing is left to write
            if flush(pk, store=store) is None:
                break

    call.__name__ = "statebag.services.envelopes." + (
        "envelope_flush" if callable(flush) else "envelopes_write"
    )
    return call


# Workload 1: agent trajectories ----------------------------------------------------------------
def llm_record(traj: list[dict[str, Any]], k: int) -> dict[str, Any]:
    """The llm_response of step k: a chat-completion record of message k (1-based), carrying
    the system prompt the call was made with."""
    return {
        "id": f"chatcmpl-{k}",
        "object": "chat.completion",
        "model": "gpt-4o",
        "system_prompt": traj[0]["content"],
        "choices": [{"index": 0, "message": traj[k - 1], "finish_reason": "stop"}],
    }


def tau_initial(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "task_id": doc["task_id"],
        "reward": doc["reward"],
        "info": doc["info"],
        "trial": doc["trial"],
        "messages": [],
        "llm_response": None,
    }


def tau_state(doc: dict[str, Any], k: int) -> dict[str, Any]:
    state = tau_initial(doc)
    state["messages"] = doc["traj"][:k]
    state["llm_response"] = llm_record(doc["traj"], k)
    return state


class TauWorkload:
    name = "tau"
    workflow = "tau-airline"

    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self.docs = docs
        self.raw = [[len(compact(tau_state(doc, k))) for k in range(1, len(doc["traj"]) + 1)] for doc in docs]

    def describe(self) -> str:
        steps = sum(len(d["traj"]) for d in self.docs)
        return f"{len(self.docs)} executions (trajectories), {steps} steps"

    def run(
        self, spec: RunSpec, ledger: Ledger, harness: ServiceHarness | None
    ) -> tuple[list[Execution], bool]:
        executions, lossless = [], True
        for index, doc in enumerate(self.docs):
            execution_id = f"tau-{index}"
            traj = doc["traj"]
            run = Execution()
            payload = through_json(tau_initial(doc))
            engine = spec.engine(self.workflow)
            for k in range(1, len(traj) + 1):
                before = ledger.snapshot()
                if spec.cold:
                    engine = spec.engine(self.workflow)
                bag = engine.hydrate(payload)
                for name in list(bag):
                    touch(bag[name])
                bag["messages"] = [*bag["messages"], traj[k - 1]]
                bag["llm_response"] = llm_record(traj, k)
                out = engine.dehydrate(bag, execution_id)
                run.steps.append(Step(ledger.since(before), len(compact(out)), self.raw[index][k - 1]))
                payload = through_json(out)
            run.after = after_execution(ledger, harness, spec, execution_id)
            executions.append(run)
            final = spec.engine(self.workflow, metered=False).hydrate(payload)
            lossless &= json_equal(to_plain(final), tau_state(doc, len(traj)))
        return executions, lossless


# Workload 2: large state with fan-out -----------------------------------------------------------
_SYLLABLES = [a + b for a in "bcdfghjklmnprstvwz" for b in ("a", "e", "i", "o", "u", "ai", "ou", "ei")]


class Corpus:
    """Deterministic, varied text and records from a seeded random."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.words = ["".join(self.rng.choices(_SYLLABLES, k=self.rng.randint(1, 4))) for _ in range(3000)]
        self.cities = [self.word().title() for _ in range(150)]

    def word(self) -> str:
        return self.rng.choice(self.words)

    def sentence(self, low: int = 4, high: int = 18) -> str:
        words = self.rng.choices(self.words, k=self.rng.randint(low, high))
        return " ".join(words).capitalize() + self.rng.choice([".", ".", "?", "!"])

    def date(self) -> str:
        r = self.rng
        return (
            f"2024-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}T"
            f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}Z"
        )

    def record(self, index: int) -> dict[str, Any]:
        r = self.rng
        row: dict[str, Any] = {
            "id": f"ord_{index:07d}_{r.getrandbits(24):06x}",
            "customer": {
                "name": f"{self.word().title()} {self.word().title()}",
                "email": f"{self.word()}.{self.word()}@{self.word()}.{r.choice(['com', 'io', 'net', 'org'])}",
                "tier": r.choice(["free", "silver", "gold", "platinum"]),
            },
            "amount": round(r.lognormvariate(4, 1.2), 2),
            "currency": r.choice(["USD", "EUR", "GBP", "JPY", "CAD"]),
            "status": r.choice(["pending", "paid", "refunded", "disputed", "shipped", "cancelled"]),
            "created_at": self.date(),
        }
        if r.random() < 0.7:
            row["items"] = [
                {
                    "sku": f"{self.word()[:4].upper()}-{r.randint(100, 99999)}",
                    "qty": r.randint(1, 9),
                    "unit_price": round(r.uniform(0.5, 900), 2),
                }
                for _ in range(r.randint(1, 5))
            ]
        if r.random() < 0.5:
            row["shipping"] = {
                "city": r.choice(self.cities),
                "postcode": f"{r.randint(10000, 99999)}",
                "express": r.random() < 0.3,
            }
        if r.random() < 0.6:
            row["notes"] = self.sentence(3, 30)
        if r.random() < 0.4:
            row["tags"] = r.sample(self.words[:200], r.randint(1, 4))
        if r.random() < 0.3:
            row["risk"] = {"score": round(r.random(), 4), "model": f"risk-v{r.randint(1, 4)}"}
        if r.random() < 0.2:
            row["refund_of"] = f"ord_{r.randint(0, max(index, 1)):07d}"
        return row


def sized(target: int, make: Callable[[int], Any]) -> list[Any]:
    items, size = [], 2
    while size < target:
        item = make(len(items))
        items.append(item)
        size += len(compact(item)) + 1
    return items


@dataclass
class FanoutData:
    job: dict[str, Any]
    workflow_config: dict[str, Any]
    partition_map: dict[str, Any]
    query_results: dict[str, Any]
    results: list[dict[str, Any]]
    final_state: dict[str, Any]

    def parent_state(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "status": "partitioned",
            "workflow_config": self.workflow_config,
            "partition_map": self.partition_map,
            "query_results": self.query_results,
        }

    def child_state(self, branch: int) -> dict[str, Any]:
        return {**self.parent_state(), "branch_results": self.results[branch]}

    def reduced_state(self) -> dict[str, Any]:
        state = self.parent_state()
        state["status"] = "reduced"
        state["final_state"] = self.final_state
        return state


def make_fanout(branches: int, query_bytes: int, seed: int) -> FanoutData:
    c = Corpus(seed)
    r = c.rng
    job = {"job_id": f"job-{seed}", "tenant": "acme", "requested_by": c.word(), "priority": r.randint(1, 5)}

    def step(i: int) -> dict[str, Any]:
        return {
            "name": f"{c.word()}_{i}",
            "type": r.choice(["task", "map", "choice", "wait", "llm", "http"]),
            "retries": r.randint(0, 5),
            "timeout_s": r.choice([30, 60, 300, 900]),
            "prompt": " ".join(c.sentence() for _ in range(r.randint(1, 4))),
            "params": {
                c.word(): r.choice([c.word(), r.randint(0, 10**6), round(r.random(), 5), True])
                for _ in range(r.randint(2, 8))
            },
            "tools": [
                {"name": c.word(), "description": c.sentence(), "required": r.sample(c.words[:60], 2)}
                for _ in range(r.randint(0, 3))
            ],
        }

    workflow_config = {
        "workflow": "order-audit",
        "version": f"2024.{r.randint(1, 12)}.{r.randint(0, 40)}",
        "models": {"default": "gpt-4o", "fallback": "gpt-4o-mini", "temperature": 0.2},
        "limits": {"max_branches": 256, "max_rows": 10**6, "deadline_s": 3600},
        "steps": sized(100 * 1024, step),
    }
    rows = sized(query_bytes, c.record)
    query_results = {
        "query": "SELECT * FROM orders WHERE created_at >= :since AND status <> 'archived'",
        "params": {"since": "2024-01-01T00:00:00Z"},
        "columns": ["id", "customer", "amount", "currency", "status", "created_at", "items", "notes"],
        "row_count": len(rows),
        "rows": rows,
    }
    bounds = [round(i * len(rows) / branches) for i in range(branches + 1)]
    partition_map = {
        "strategy": "range",
        "key": "id",
        "partitions": [
            {
                "branch": i,
                "rows": [bounds[i], bounds[i + 1]],
                "shard": f"shard-{r.randint(0, 15):02d}",
                "weight": round(r.uniform(0.5, 2.0), 3),
                "owner": c.word(),
                "filters": {
                    "status": r.sample(["paid", "pending", "shipped", "refunded"], 2),
                    "min_amount": r.randint(0, 50),
                },
            }
            for i in range(branches)
        ],
    }
    results = []
    for i in range(branches):
        part = rows[bounds[i] : bounds[i + 1]]
        target = r.randint(2 * 1024, 20 * 1024)
        flagged: list[dict[str, Any]] = []
        size = 0
        while size < target:
            row = r.choice(part) if part else c.record(i)
            item = {
                "id": row["id"],
                "amount": row["amount"],
                "currency": row["currency"],
                "verdict": r.choice(["ok", "review", "fraud", "duplicate"]),
                "reason": c.sentence(6, 24),
                "confidence": round(r.random(), 3),
            }
            flagged.append(item)
            size += len(compact(item))
        results.append(
            {
                "branch": i,
                "rows": [bounds[i], bounds[i + 1]],
                "processed": len(part),
                "total_amount": round(sum(row["amount"] for row in part), 2),
                "flagged": flagged,
                "summary": c.sentence(10, 30),
            }
        )
    final_state = {
        "branches": branches,
        "processed": sum(res["processed"] for res in results),
        "flagged": sum(len(res["flagged"]) for res in results),
        "per_branch": [
            {
                "branch": res["branch"],
                "processed": res["processed"],
                "amount": res["total_amount"],
                "flagged": len(res["flagged"]),
            }
            for res in results
        ],
        "summary": c.sentence(20, 40),
    }
    return FanoutData(job, workflow_config, partition_map, query_results, results, final_state)


# Warm containers of the fan-out's map (Lambda keeps a few and hands them the next branch).
WARM_CONTAINERS = 10


class FanoutWorkload:
    name = "fanout"
    workflow = "order-audit"

    def __init__(self, branches: int, query_bytes: int, workflows: int) -> None:
        self.branches = branches
        self.data = [make_fanout(branches, query_bytes, seed=7 + i) for i in range(workflows)]
        self.raw = []
        for data in self.data:
            parent = len(compact(data.parent_state()))
            children = [len(compact(data.child_state(i))) for i in range(branches)]
            self.raw.append((parent, children, len(compact(data.reduced_state()))))

    def describe(self) -> str:
        size = len(compact(self.data[0].query_results))
        config = len(compact(self.data[0].workflow_config))
        return (
            f"{len(self.data)} workflow run(s) of 1 parent + {self.branches} child executions, "
            f"{self.branches + 2} steps each; query_results {size:,} B, workflow_config {config:,} B; "
            f"warm: {WARM_CONTAINERS} containers serve the branches in turn; cold: a new container every step"
        )

    def run(
        self, spec: RunSpec, ledger: Ledger, harness: ServiceHarness | None
    ) -> tuple[list[Execution], bool]:
        """One Execution per workflow run (parent and children together)."""
        runs, lossless = [], True
        for index, data in enumerate(self.data):
            parent_id = f"fanout-{index}"
            raw_parent, raw_children, raw_reduced = self.raw[index]
            run = Execution()
            quiet = Usage(ops=Counter(), written=0)

            # Warm: a pool of containers serves the map's branches in turn (as Lambda reuses
            # them), the parent's container runs the reduce too; cold: a new one every step.
            pool = [] if spec.cold else [spec.engine(self.workflow) for _ in range(WARM_CONTAINERS)]

            def container(number: int, pool: list[Engine] = pool) -> Engine:
                return spec.engine(self.workflow) if spec.cold else pool[number % len(pool)]

            # Step 1: the parent stores the shared fields.
            before = ledger.snapshot()
            engine = container(0)
            bag = engine.hydrate(through_json({"job": data.job, "status": "started"}))
            for name in list(bag):
                touch(bag[name])
            bag["status"] = "partitioned"
            bag["workflow_config"] = data.workflow_config
            bag["partition_map"] = data.partition_map
            bag["query_results"] = data.query_results
            out = engine.dehydrate(bag, parent_id)
            run.steps.append(Step(ledger.since(before), len(compact(out)), raw_parent))
            parent_payload = through_json(out)

            # The map: one child execution per branch.
            child_payloads = []
            for branch in range(self.branches):
                child_id = f"{parent_id}-branch-{branch}"
                before = ledger.snapshot()
                engine = container(branch + 1)
                bag = engine.hydrate(through_json(parent_payload))
                for name in ("workflow_config", "partition_map", "query_results"):
                    touch(bag[name])
                bag["branch_results"] = data.results[branch]
                out = engine.dehydrate(bag, child_id)
                run.steps.append(Step(ledger.since(before), len(compact(out)), raw_children[branch]))
                child_payloads.append(through_json(out))
                _add(quiet, after_execution(ledger, harness, spec, child_id))
                if branch in (0, self.branches - 1):  # whole states of two children; results below
                    check = spec.engine(self.workflow, metered=False).hydrate(child_payloads[-1])
                    lossless &= json_equal(to_plain(check), data.child_state(branch))

            # Reduce: the parent again, with every child's payload.
            before = ledger.snapshot()
            engine = container(0)
            bag = engine.hydrate(through_json(parent_payload))
            touch(bag["workflow_config"])
            results = []
            for payload in child_payloads:
                results.append(engine.hydrate(through_json(payload))["branch_results"])
                touch(results[-1])
            bag["status"] = "reduced"
            bag["final_state"] = data.final_state
            out = engine.dehydrate(bag, parent_id)
            run.steps.append(Step(ledger.since(before), len(compact(out)), raw_reduced))
            _add(quiet, after_execution(ledger, harness, spec, parent_id))
            run.after = quiet
            runs.append(run)
            final = spec.engine(self.workflow, metered=False).hydrate(through_json(out))
            lossless &= json_equal(to_plain(final), data.reduced_state())
            lossless &= json_equal(results, data.results)  # every child's result, as the reduce read it
        return runs, lossless


def _add(total: Usage, more: Usage) -> None:
    total.ops.update(more.ops)
    total.written += more.written


Workload = TauWorkload | FanoutWorkload


# Running and summarising --------------------------------------------------------------------------
def summarise(executions: list[Execution]) -> dict[str, Any]:
    totals = [e.total() for e in executions]
    steps = [s for e in executions for s in e.steps]
    n = len(executions)
    written = sum(t.written for t in totals)
    raw = sum(s.raw_bytes for s in steps)
    return {
        "executions": n,
        "steps": len(steps),
        "requests_per_execution": {op: sum(t.ops[op] for t in totals) / n for op in OPS},
        "requests_per_execution_mean": sum(t.requests for t in totals) / n,
        "requests_per_execution_max": max(t.requests for t in totals),
        "round_trips_per_step_mean": sum(s.usage.round_trips for s in steps) / len(steps),
        "round_trips_per_step_max": max(s.usage.round_trips for s in steps),
        "round_trips_breakdown": {
            "lambda_store": sum(s.usage.rt_lambda for s in steps),
            "service_calls": sum(s.usage.service_calls for s in steps),
            "service_store": sum(s.usage.rt_service_store for s in steps),
        },
        "bytes_written_per_execution_mean": written / n,
        "bytes_written_per_execution_max": max(t.written for t in totals),
        "bytes_written": written,
        "raw_state_bytes": raw,
        "written_over_raw": written / raw if raw else 0.0,
        "payload_max_bytes": max(s.payload_bytes for s in steps),
    }


def step_signature(executions: list[Execution]) -> list[tuple[tuple[int, ...], int]]:
    return [(tuple(s.usage.ops[op] for op in OPS), s.usage.round_trips) for e in executions for s in e.steps]


@dataclass
class Row:
    mode: str
    containers: str
    commit: str
    result: dict[str, Any] | None = None
    executions: list[Execution] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0
    same_as: str = ""  # for SERVICE rows of modes without a service: the DIRECT row used
    envelopes: str | None = None  # the service's envelope writer, when it has one
    envelope_errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Task:
    workload: str
    mode: str
    cold: bool
    service: bool

    def containers(self) -> str:
        return "cold" if self.cold else "warm"

    def commit(self) -> str:
        if self.mode == DEGRADED:
            return "service down"
        return "service" if self.service else "direct"

    def tag(self) -> str:
        name = f"{self.workload}-{self.mode}-{self.containers()}-{self.commit()}"
        return name.replace("_", "-").replace("/", "").replace(" ", "-")

    def weight(self) -> float:
        """Rough relative cost (seconds of a full run), to start the longest runs first."""
        if self.workload == "fanout":
            return {"original_legacy": 45, "degraded": 20}.get(self.mode, 40 if self.service else 30)
        if self.mode == DEGRADED:
            return 50
        if self.mode in NO_SERVICE:
            return 10
        return 65 if self.service else 25


@dataclass(frozen=True)
class Settings:
    workdir: Path
    latency: float
    json_style: str


# What a worker process needs, set before it starts (inherited by fork).
_WORKLOADS: dict[str, Workload] = {}
_SETTINGS: list[Settings] = []
_HARNESS: list[ServiceHarness | str] = []  # the harness, or why it could not start


def _worker_start(folder: Path) -> None:
    """One worker process: its own Django, database and service store. A service that cannot
    start fails only the SERVICE runs (with the reason)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        _HARNESS.append(ServiceHarness(folder))
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        _HARNESS.append(f"the service did not start: {type(exc).__name__}: {exc}")


_S3_CLIENT: list[Any] = []  # one boto3 client per process


def make_store(tag: str, folder: Path, s3_endpoint: str | None) -> Any:
    """The run's object store: a folder of its own, or a bucket of its own on the S3 server."""
    if s3_endpoint is None:
        return LocalFolderStore(folder)
    from analemma_sdk.statebag.s3 import S3Store

    if not _S3_CLIENT:
        import boto3

        _S3_CLIENT.append(
            boto3.client(
                "s3",
                endpoint_url=s3_endpoint,
                region_name="us-east-1",
                aws_access_key_id="bench",
                aws_secret_access_key="bench",  # loopback test server
            )
        )
    bucket = f"bench-{tag}".lower()[:63].rstrip("-")
    _S3_CLIENT[0].create_bucket(Bucket=bucket)
    return S3Store(bucket, "statebag", client=_S3_CLIENT[0])


def run_task(task: Task, s3_endpoint: str | None = None) -> Row:
    """One mode, containers and commit path over a whole workload, with stores of its own."""
    settings, started_harness, workload = _SETTINGS[0], _HARNESS[0], _WORKLOADS[task.workload]
    harness = started_harness if isinstance(started_harness, ServiceHarness) else None
    row = Row(task.mode, task.containers(), task.commit(), envelopes=harness and harness.envelope_name)
    if harness is None and task.service and task.mode != DEGRADED:
        row.error = str(started_harness)
        return row
    tag = task.tag()
    plain = make_store(tag, settings.workdir / tag, s3_endpoint)
    ledger = Ledger(settings.latency)
    spec = RunSpec(
        task.mode,
        task.cold,
        task.service,
        MeteredStore(plain, ledger.lambda_side),
        plain,
        owner=tag[:120],
        json_style=settings.json_style,
    )
    quiet = contextlib.nullcontext()
    if task.mode == DEGRADED:
        spec.manifest_store = UnreachableService(ledger)
        quiet = _quiet_logger("analemma_sdk.statebag")  # one warning a step, as designed
    elif task.service:
        harness.use(MeteredStore(plain, ledger.service_side))  # the same store, the service's side
        spec.manifest_store = InProcessService(ledger)
    errors_before = len(harness.envelope_errors) if harness else 0
    started = time.perf_counter()
    try:
        with quiet:
            row.executions, lossless = workload.run(spec, ledger, harness)
        row.result = {**summarise(row.executions), "lossless": lossless}
    except Exception as exc:  # the SDK is a moving target: report, go on with the other modes
        row.error = f"{type(exc).__name__}: {exc}"
        traceback.print_exc(file=sys.stderr)
    row.seconds = time.perf_counter() - started
    row.envelope_errors = harness.envelope_errors[errors_before:] if harness else []
    print(f"  {tag}: {row.seconds:.1f} s{' ERROR ' + row.error if row.error else ''}", file=sys.stderr)
    return row


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    import logging

    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def plan_tasks(workloads: list[Workload], degraded: bool) -> list[Task]:
    tasks = []
    for workload in workloads:
        colds = [False, True]
        for service in (False, True):
            for mode in MODES:
                if service and mode in NO_SERVICE:
                    continue  # no service: its DIRECT run stands for it
                tasks.extend(Task(workload.name, mode, cold, service) for cold in colds)
        if degraded:  # warm only: a row for what an outage costs
            tasks.append(Task(workload.name, DEGRADED, False, True))
    return tasks


def run_tasks(tasks: list[Task], jobs: int, store: str) -> dict[Task, Row]:
    import functools
    import multiprocessing

    settings = _SETTINGS[0]
    with contextlib.ExitStack() as stack:
        if jobs <= 1:
            _worker_start(settings.workdir / "service")
            endpoint = stack.enter_context(_s3_server()) if store == "s3" else None
            return {task: run_task(task, endpoint) for task in tasks}
        # Fork: the workloads are built once, before; each worker sets up its own Django. The
        # workers start here, before the S3 server's threads.
        pool = stack.enter_context(multiprocessing.get_context("fork").Pool(jobs, initializer=_worker_init))
        endpoint = stack.enter_context(_s3_server()) if store == "s3" else None
        order = sorted(tasks, key=lambda t: -t.weight())
        rows = pool.map(functools.partial(run_task, s3_endpoint=endpoint), order, chunksize=1)
        return dict(zip(order, rows, strict=True))


@contextlib.contextmanager
def _s3_server() -> Iterator[str]:
    import logging

    from tests.servers import s3_server  # a loopback S3-protocol server (moto)

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    with s3_server() as endpoint:
        yield endpoint


def _worker_init() -> None:
    _worker_start(_SETTINGS[0].workdir / f"service-{os.getpid()}")


def assemble(workload: Workload, done: dict[Task, Row]) -> list[Row]:
    """Rows in table order; a SERVICE row of a mode without a service is its DIRECT run."""
    rows = []
    colds = [False, True]
    for service in (False, True):
        for mode in MODES:
            for cold in colds:
                task = Task(workload.name, mode, cold, service)
                if service and mode in NO_SERVICE:
                    direct = done[Task(workload.name, mode, cold, False)]
                    rows.append(
                        Row(
                            mode,
                            direct.containers,
                            "service",
                            direct.result,
                            direct.executions,
                            direct.error,
                            0.0,
                            same_as="direct",
                        )
                    )
                else:
                    rows.append(done[task])
    rows.extend(
        done[Task(workload.name, DEGRADED, cold, True)]
        for cold in colds
        if (Task(workload.name, DEGRADED, cold, True) in done)
    )
    return rows


def compare_legacy(rows: list[Row]) -> list[dict[str, Any]]:
    """Does this project's legacy path make the original's requests, step by step?"""
    checks = []
    for original in rows:
        if original.mode != "original_legacy" or original.commit != "direct" or original.result is None:
            continue
        mine = next(
            (
                r
                for r in rows
                if r.mode == "legacy" and r.commit == "direct" and r.containers == original.containers
            ),
            None,
        )
        if mine is None or mine.result is None:
            checks.append(
                {"containers": original.containers, "matches": False, "detail": "legacy run failed"}
            )
            continue
        a, b = step_signature(original.executions), step_signature(mine.executions)
        same = sum(1 for x, y in zip(a, b, strict=False) if x == y)
        first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
        ratio = (
            mine.result["bytes_written"] / original.result["bytes_written"]
            if original.result["bytes_written"]
            else 1.0
        )
        matches = (
            len(a) == len(b) and same == len(a) and mine.result["lossless"] == original.result["lossless"]
        )
        detail = f"{same:,} of {len(a):,} steps make the same requests and round trips"
        if first is not None:
            x, y = a[first], b[first]
            detail += (
                f"; first difference at step #{first + 1}: original "
                f"{_ops_text(x[0])} ({x[1]} RT), legacy {_ops_text(y[0])} ({y[1]} RT)"
            )
        detail += f"; bytes written legacy/original {ratio:.3f}"
        checks.append(
            {
                "containers": original.containers,
                "matches": matches,
                "steps_same": same,
                "steps": len(a),
                "bytes_ratio": ratio,
                "detail": detail,
            }
        )
    return checks


def _ops_text(counts: tuple[int, ...]) -> str:
    parts = [f"{n} {OP_LABELS[op]}" for op, n in zip(OPS, counts, strict=True) if n]
    return ", ".join(parts) or "no request"


def mean(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def print_rows(title: str, rows: list[Row]) -> None:
    print(f"\n{title}")
    headers = [
        "mode",
        "containers",
        "commit",
        *[OP_LABELS[op] for op in OPS],
        "req/exec",
        "req max",
        "RT/step",
        "RT max",
        "written B/exec",
        "written max",
        "written/raw",
        "payload max",
        "lossless",
    ]
    table, errors = [], []
    for row in rows:
        r = row.result
        commit = row.commit + (" (= direct)" if row.same_as else "")
        if r is None:
            table.append([row.mode, row.containers, commit] + ["-"] * (len(headers) - 4) + ["ERROR"])
            errors.append(f"  {row.mode} {row.containers} {row.commit}: {row.error[:300]}")
            continue
        per = r["requests_per_execution"]
        table.append(
            [
                row.mode,
                row.containers,
                commit,
                *[mean(per[op]) for op in OPS],
                mean(r["requests_per_execution_mean"]),
                r["requests_per_execution_max"],
                f"{r['round_trips_per_step_mean']:.2f}",
                r["round_trips_per_step_max"],
                round(r["bytes_written_per_execution_mean"]),
                r["bytes_written_per_execution_max"],
                f"{r['written_over_raw']:.2%}",
                r["payload_max_bytes"],
                "yes" if r["lossless"] else "NO",
            ]
        )
    print_table(headers, table)
    if errors:
        print("\n".join(errors))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="6 trajectories; 10 branches of 1 MB")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--workload", choices=["tau", "fanout", "all"], default="all")
    parser.add_argument("--store", choices=["local", "s3"], default="local", help="s3: a loopback S3 server")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    parser.add_argument("--latency-ms", type=float, default=1.0, help="simulated latency per store request")
    parser.add_argument("--no-latency", action="store_true", help="no simulated latency (see round trips)")
    parser.add_argument(
        "--executions", type=int, default=0, help="trajectories (default: all; 6 with --quick)"
    )
    parser.add_argument("--branches", type=int, default=0, help="fan-out branches (default 100; 10 quick)")
    parser.add_argument("--query-mb", type=float, default=0.0, help="query_results MB (default 3; 1 quick)")
    parser.add_argument(
        "--jobs", type=int, default=min(2, os.cpu_count() or 1), help="runs in parallel processes"
    )
    parser.add_argument(
        "--original-json",
        choices=["python", "compact"],
        default="python",
        help="how the original serializes a field: json.dumps defaults (python) or compact",
    )
    return parser.parse_args()


def build_workloads(args: argparse.Namespace) -> list[Workload]:
    workloads: list[Workload] = []
    if args.workload in ("tau", "all"):
        docs = load_corpus(args.corpus)
        wanted = args.executions or (6 if args.quick else len(docs))
        if wanted < len(docs):  # spread over the corpus: different tasks, lengths, trials
            stride = len(docs) / wanted
            docs = [docs[int(i * stride)] for i in range(wanted)]
        workloads.append(TauWorkload(docs))
    if args.workload in ("fanout", "all"):
        branches = args.branches or (10 if args.quick else 100)
        query_mb = args.query_mb or (1.0 if args.quick else 3.0)
        workloads.append(FanoutWorkload(branches, int(query_mb * 1024 * 1024), workflows=1))
    return workloads


def main() -> None:
    args = parse_args()
    latency = 0.0 if args.no_latency else args.latency_ms / 1000
    started = time.perf_counter()
    workloads = build_workloads(args)
    degraded = has_degraded_mode()

    with tempfile.TemporaryDirectory(prefix="statebag-workload-") as tmp:
        _WORKLOADS.update({w.name: w for w in workloads})
        _SETTINGS.append(Settings(Path(tmp), latency, args.original_json))
        for workload in workloads:
            print(f"{workload.name}: {workload.describe()}", file=sys.stderr)
        done = run_tasks(plan_tasks(workloads, degraded), args.jobs, args.store)

    results: dict[str, Any] = {}
    envelope_errors = [e for row in done.values() for e in row.envelope_errors]
    envelopes = next((row.envelopes for row in done.values() if row.envelopes), None)
    lines: list[str] = []
    for workload in workloads:
        rows = assemble(workload, done)
        checks = compare_legacy(rows)
        results[workload.name] = {
            "description": workload.describe(),
            "rows": [
                {
                    "mode": r.mode,
                    "containers": r.containers,
                    "commit": r.commit,
                    "same_as": r.same_as or None,
                    "seconds": round(r.seconds, 2),
                    "error": r.error or None,
                    **(r.result or {}),
                }
                for r in rows
            ],
            "legacy_matches_original": checks,
        }
        if args.json_only:
            continue
        print(f"\n== {workload.name}: {workload.describe()}")
        unit = "execution" if isinstance(workload, TauWorkload) else "workflow run (parent + children)"
        print(f"requests and bytes written per {unit} (mean, and max); round trips per step")
        print_rows(
            "DIRECT (the Lambda writes its store; no manifest service)",
            [r for r in rows if r.commit == "direct"],
        )
        print_rows(
            "SERVICE (use_2pc through the in-process service: prepare, upload, commit with upload "
            "verification, envelopes; original_legacy and legacy have no service: their DIRECT runs)",
            [r for r in rows if r.commit.startswith("service")],
        )
        for check in checks:
            verdict = "yes" if check["matches"] else "NO"
            print(f"legacy matches original_legacy ({check['containers']}): {verdict} - {check['detail']}")
        if args.original_json == "python" and any(not check["matches"] for check in checks):
            print(
                "  (original_legacy sizes and writes a field as json.dumps with Python's defaults; a "
                "legacy path that measures compact JSON crosses the 10 KiB line at other steps: "
                "--original-json compact compares with that reading)"
            )
    lines.append(
        f"store {args.store}; latency {latency * 1000:g} ms per store request; original_legacy JSON: "
        + ("json.dumps defaults" if args.original_json == "python" else "compact")
    )
    lines.append(
        f"envelopes: written by {envelopes} at the end of each execution (quiet period 0)"
        if envelopes
        else "envelopes: the service has no statebag.services.envelopes here: none counted"
    )
    if envelope_errors:
        lines.append(f"envelope writing failed {len(envelope_errors)} time(s); first: {envelope_errors[0]}")
    if degraded:
        lines.append(
            "degraded: the project's fallback when the manifest service is down (batched_zstd asked for "
            "use_2pc, every call to the service fails; each failed call counts one round trip)"
        )
    elapsed = time.perf_counter() - started
    lines.append(f"{elapsed:.1f} s with {args.jobs} process(es)")
    if not args.json_only:
        print()
        print("\n".join(lines))
    emit_json(
        {
            "workloads": results,
            "latency_ms": latency * 1000,
            "store": args.store,
            "original_json": args.original_json,
            "envelopes": envelopes,
            "envelope_errors": envelope_errors[:20],
            "degraded_mode": degraded,
            "quick": args.quick,
            "jobs": args.jobs,
            "seconds": round(elapsed, 1),
        }
    )


if __name__ == "__main__":
    main()
