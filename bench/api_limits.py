"""How long one statebag API request at the limits holds the database's write lock.

    python bench/api_limits.py [--rounds 5] [--parallel 4] [--postgres URL|auto]

Every limit of STATEBAG_API_LIMITS at once, through the real API (a write key, Django's test
client): a prepare declaring the most packs, frames, reused blobs and parents, then its commit
with the most entries, blob pointers and cohort values; and a commit whose body is at the
size limit with inline values. Each outermost database transaction a request opens is timed,
from asking for it to the end of its commit: on SQLite that is how long the request holds the
database's write lock (at most: an automatic WAL checkpoint, which lets other writers in, runs
within the commit call when one falls due). The target is 100 ms.

Then ``--parallel`` processes send prepares at the limits all at once while one more sends
small ones: its slowest answer, and any 5xx ("database is locked"), are reported.

SQLite runs on a file database in a temporary folder, configured as ``make run`` configures it
(WAL, IMMEDIATE transactions, the busy timeout). ``--postgres URL`` runs the same against a
throwaway PostgreSQL database (its tables are created there); ``--postgres auto`` starts one
the way the test suite does (fsync off, so commits there cost less than on a durable server).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from typing import Any

from _common import emit_json, print_table

TARGET_MS = 100.0
OWNER = "bench"


# In the worker process --------------------------------------------------------------------
class TransactionClock:
    """Times every outermost atomic block, per thread: from asking for the transaction (on
    SQLite, for the write lock) to its commit or rollback."""

    def __init__(self) -> None:
        from django.db import transaction

        self.local = threading.local()
        atomic = transaction.Atomic
        enter, leave = atomic.__enter__, atomic.__exit__
        clock = self

        def timed_enter(block: Any) -> Any:
            if not transaction.get_connection(block.using).in_atomic_block:
                clock.local.started = time.perf_counter()
            return enter(block)

        def timed_exit(block: Any, *exc: Any) -> Any:
            try:
                return leave(block, *exc)
            finally:
                started = getattr(clock.local, "started", None)
                if started is not None and not transaction.get_connection(block.using).in_atomic_block:
                    clock.local.started = None
                    clock.spans().append(time.perf_counter() - started)

        atomic.__enter__ = timed_enter  # type: ignore[method-assign]
        atomic.__exit__ = timed_exit  # type: ignore[method-assign]

    def start(self) -> None:
        self.local.spans = []

    def spans(self) -> list[float]:
        if not hasattr(self.local, "spans"):
            self.local.spans = []
        spans: list[float] = self.local.spans
        return spans


class Workload:
    def __init__(self, limits: dict[str, int], body_bytes: int) -> None:
        from django.test import Client

        from keys.services import key_create
        from statebag.models import WriteKey

        self.limits = limits
        self.body_bytes = body_bytes
        raw = key_create(key=WriteKey(owner_id=OWNER, name="bench"), actor="bench")
        self.headers = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
        self.client_class = Client
        self.client = Client()
        self.seq = 0
        self.history: list[str] = []  # manifest hashes of the execution, oldest first
        self.stored: list[tuple[str, str]] = []  # (key, digest) of committed blobs

    # Requests ------------------------------------------------------------------------
    def post(self, path: str, body: dict[str, Any], client: Any = None) -> Any:
        data = json.dumps(body, separators=(",", ":"))
        return (client or self.client).post(
            f"/api/v1/statebag{path}", data=data, content_type="application/json", **self.headers
        )

    def packs(self, count: int, frames: int) -> tuple[list[dict[str, Any]], dict[str, bytes], list[Any]]:
        """``count`` new packs holding ``frames`` raw frames in all: their declarations, their
        bytes by key, and a pointer to every frame."""
        from analemma_sdk.statebag.canonical import canonical_json, sha256_hex
        from analemma_sdk.statebag.codec import RAW, Encoded
        from analemma_sdk.statebag.keys import pack_key
        from analemma_sdk.statebag.manifests import PackWrite
        from analemma_sdk.statebag.packs import build_pack
        from analemma_sdk.statebag.pointers import BlobRef

        declared, data, pointers = [], {}, []
        per_pack = [frames // count + (1 if i < frames % count else 0) for i in range(count)]
        for size in per_pack:
            blobs = []
            for _ in range(size):
                self.seq += 1
                raw = canonical_json({"value": self.seq, "text": "x" * 150})
                blobs.append((sha256_hex(raw), len(raw), Encoded(RAW, raw)))
            built = build_pack(blobs)
            key = pack_key(OWNER, built.digest)
            data[key] = built.data
            declared.append(PackWrite(key, built.digest, len(built.data), tuple(built.frames)).to_json())
            pointers += [
                BlobRef(f.digest, key, f.offset, f.length, f.codec, f.raw_size) for f in built.frames
            ]
        return declared, data, pointers

    def prepare(self, packs: list[dict[str, Any]], reused: list[tuple[str, str]], client: Any = None) -> Any:
        body = {
            "owner_id": OWNER,
            "workflow_id": "wf",
            "execution_id": "e1",
            "parents": list(reversed(self.history[-self.limits["PARENTS"] :])),
            "packs": packs,
            "reused": [list(pair) for pair in reused],
            "upload": "direct",
        }
        return self.post("/transactions", body, client)

    def upload(self, data: dict[str, bytes]) -> None:
        from statebag.services import statebag_store

        store = statebag_store()
        for key, content in data.items():
            store.put(key, content)

    def commit(self, txn_id: str, entries: dict[str, Any], cohort: dict[str, Any]) -> Any:
        answer = self.post(f"/transactions/{txn_id}/commit", {"entries": entries, "cohort": cohort})
        if answer.status_code == 200:
            self.history.append(answer.json()["hash"])
        return answer

    def version(self, packs: int, frames: int, entries: dict[str, Any] | None = None) -> list[Any]:
        """One prepare-upload-commit; returns the new frames' pointers."""
        declared, data, pointers = self.packs(packs, frames) if frames else ([], {}, [])
        prepared = self.prepare(declared, [])
        assert prepared.status_code == 201, prepared.content[:300]
        self.upload(data)
        fields = entries if entries is not None else self.entries(pointers, self.limits["ENTRIES"])
        committed = self.commit(prepared.json()["txn_id"], fields, {})
        assert committed.status_code == 200, committed.content[:300]
        self.stored += [(p.key, p.digest) for p in pointers]
        return pointers

    # Bodies at the limits --------------------------------------------------------------
    @staticmethod
    def entries(pointers: list[Any], fields: int) -> dict[str, Any]:
        """``fields`` entries naming every pointer: one blob pointer each while there are
        fields enough, else lists of chunks (as the SDK stores a long list)."""
        if len(pointers) <= fields:
            entries: dict[str, Any] = {f"f{i}": p.to_json() for i, p in enumerate(pointers)}
            entries.update({f"i{i}": i for i in range(fields - len(pointers))})
            return entries
        per_list = -(-len(pointers) // fields)
        lists = [pointers[i : i + per_list] for i in range(0, len(pointers), per_list)]
        return {
            f"l{i}": {
                "$sb": "list",
                "v": 1,
                "len": len(chunks),
                "chunks": [
                    {**{k: v for k, v in p.to_json().items() if k not in ("$sb", "v")}, "i": 1}
                    for p in chunks
                ],
                "tail": [],
            }
            for i, chunks in enumerate(lists)
        }

    def cohort(self) -> dict[str, Any]:
        return {f"flag_{i}": i for i in range(self.limits["COHORT"])}

    def inline_entries(self) -> dict[str, Any]:
        """As many fields as allowed, with inline values filling the entries to their limit."""
        count = self.limits["ENTRIES"]
        room = min(self.limits["ENTRY_BYTES"], self.body_bytes - 4096) - count * 16  # the field names
        text = "y" * max(1, room // count - 8)
        return {f"g{i}": text for i in range(count)}


def measure(clock: TransactionClock, name: str, send: Any, *args: Any) -> tuple[dict[str, Any], Any]:
    """Send one request; its longest transaction, its time, and its answer."""
    clock.start()
    started = time.perf_counter()
    answer = send(*args)
    elapsed = time.perf_counter() - started
    assert answer.status_code < 300, (name, answer.status_code, answer.content[:300])
    spans = clock.spans()
    sample = {"request": name, "txn_ms": max(spans) * 1000 if spans else 0.0, "request_ms": elapsed * 1000}
    return sample, answer


def run_rounds(work: Workload, clock: TransactionClock, rounds: int) -> list[dict[str, Any]]:
    limits = work.limits
    samples = []
    for _ in range(rounds):
        declared, data, pointers = work.packs(limits["PACKS"], limits["FRAMES"])
        sample, prepared = measure(clock, "prepare", work.prepare, declared, work.stored[-limits["REUSED"] :])
        samples.append(sample)
        work.upload(data)
        entries = work.entries(pointers[: limits["POINTERS"]], limits["ENTRIES"])
        txn = prepared.json()["txn_id"]
        samples.append(measure(clock, "commit", work.commit, txn, entries, work.cohort())[0])
        work.stored += [(p.key, p.digest) for p in pointers]
        small = work.prepare([], [])
        assert small.status_code == 201, small.content[:300]
        inline = work.inline_entries()
        samples.append(
            measure(clock, "commit_inline", work.commit, small.json()["txn_id"], inline, work.cohort())[0]
        )
    return samples


def contention(work: Workload, writers: int, per_writer: int) -> dict[str, Any]:
    """``writers`` processes send prepares at the limits all at once while one more sends small
    prepares (processes, as web workers are: threads would share one interpreter lock)."""
    import multiprocessing

    from django.db import connections

    limits = work.limits
    bodies = [
        [work.packs(limits["PACKS"], limits["FRAMES"])[0] for _ in range(per_writer)] for _ in range(writers)
    ]
    connections.close_all()  # each process opens its own
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    done = context.Event()

    def writer(mine: list[list[dict[str, Any]]]) -> None:
        client = work.client_class()
        results.put(("writer", [work.prepare(packs, [], client).status_code for packs in mine], []))

    def probe() -> None:
        client = work.client_class()
        statuses, waits = [], []
        while not done.is_set():
            started = time.perf_counter()
            statuses.append(work.prepare([], [], client).status_code)
            waits.append((time.perf_counter() - started) * 1000)
            time.sleep(0.01)
        results.put(("probe", statuses, waits))

    prober = context.Process(target=probe)
    workers = [context.Process(target=writer, args=(mine,)) for mine in bodies]
    started = time.perf_counter()
    prober.start()
    time.sleep(0.2)  # the probe's first requests see an idle database
    for process in workers:
        process.start()
    answers = [results.get(timeout=600) for _ in workers]
    elapsed = time.perf_counter() - started
    done.set()
    answers.append(results.get(timeout=60))
    for process in [*workers, prober]:
        process.join()
    statuses = [status for _, found, _ in answers for status in found]
    waits = [wait for kind, _, found in answers if kind == "probe" for wait in found]
    return {
        "writers": writers,
        "prepares_at_limits": writers * per_writer,
        "seconds": round(elapsed, 2),
        "probe_requests": len(waits),
        "probe_p50_ms": round(statistics.median(waits), 1) if waits else None,
        "probe_p90_ms": round(statistics.quantiles(waits, n=10)[-1], 1) if len(waits) > 1 else None,
        "probe_max_ms": round(max(waits), 1) if waits else None,
        "server_errors": sum(1 for status in statuses if status >= 500),
    }


def worker(url: str, rounds: int, parallel: int) -> dict[str, Any]:
    os.environ["ANALEMMA_TEST_DATABASE_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = "analemma.settings.test"
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from statebag.schemas import LIMITS

    call_command("migrate", verbosity=0)
    clock = TransactionClock()
    work = Workload(dict(LIMITS), settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
    # History to build on: enough versions to name every parent, and blobs to reuse.
    for _ in range(LIMITS["PARENTS"]):
        work.version(0, 0, entries={"step": len(work.history)})
    while len(work.stored) < LIMITS["REUSED"]:
        work.version(LIMITS["PACKS"], LIMITS["FRAMES"])
    samples = run_rounds(work, clock, rounds)
    by_request: dict[str, dict[str, float]] = {}
    for name in ("prepare", "commit", "commit_inline"):
        txn = [s["txn_ms"] for s in samples if s["request"] == name]
        total = [s["request_ms"] for s in samples if s["request"] == name]
        by_request[name] = {
            "txn_median_ms": round(statistics.median(txn), 1),
            "txn_max_ms": round(max(txn), 1),
            "request_median_ms": round(statistics.median(total), 1),
        }
    return {
        "vendor": connection.vendor,
        "rounds": rounds,
        "requests": by_request,
        "contention": contention(work, parallel, 3) if parallel else None,
    }


# In the main process ----------------------------------------------------------------------
def run_worker(url: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as blobs:
        env = {**os.environ, "STATEBAG_LOCAL_ROOT": blobs}
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--worker",
                url,
                "--rounds",
                str(args.rounds),
                "--parallel",
                str(args.parallel),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise SystemExit(f"the {url.split(':')[0]} run failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--parallel", type=int, default=4, help="clients at the limits at once (0: skip)")
    parser.add_argument("--postgres", default="", help="a throwaway database's URL, or auto")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.rounds, args.parallel)))
        return
    results: dict[str, Any] = {}
    with ExitStack() as stack:
        folder = stack.enter_context(tempfile.TemporaryDirectory())
        results["sqlite"] = run_worker(f"sqlite:///{folder}/bench.sqlite3", args)
        if args.postgres:
            url = args.postgres
            if url == "auto":
                from tests.servers import postgres_server

                url = stack.enter_context(postgres_server())
            results["postgres"] = run_worker(url, args)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "analemma.settings.test")
    import django

    django.setup()
    from django.conf import settings

    from statebag.schemas import LIMITS

    rows = []
    for backend, result in results.items():
        for name, figures in result["requests"].items():
            rows.append(
                [
                    backend,
                    name,
                    figures["txn_median_ms"],
                    figures["txn_max_ms"],
                    figures["request_median_ms"],
                    "yes" if figures["txn_max_ms"] <= TARGET_MS else "NO",
                ]
            )
    print(f"limits: {LIMITS}, body {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes; {args.rounds} rounds")
    print_table(["db", "request", "txn p50 ms", "txn max ms", "request p50 ms", "<= 100 ms"], rows)
    contended = [[b, *r["contention"].values()] for b, r in results.items() if r["contention"]]
    if contended:
        print()
        print_table(
            ["db", "writers", "prepares", "seconds", "probes", "probe p50 ms", "p90 ms", "max ms", "5xx"],
            contended,
        )
    emit_json(
        {
            "target_ms": TARGET_MS,
            "limits": LIMITS,
            "body_bytes": settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
            "backends": results,
            "within_target": all(row[5] == "yes" for row in rows),
        }
    )


if __name__ == "__main__":
    main()
