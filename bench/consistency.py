"""Fault injection for the two-phase commit: crash at every store call and database step in
turn, with concurrent dehydrations, GC, retention and reaping; then check the invariants.

    python bench/consistency.py --schedules N [--db postgres|sqlite] [--seed S]

Each schedule picks one crash point (a store call or a named database step, and which
occurrence of it) and runs several executions step by step in threads while another thread
runs retention (keep 1), GC (zero grace) and the reaper (as if every transaction had expired,
so slow commits race it too). A crashed step is retried the way a redelivered job is: a fresh
hydrator, the same idempotency key. Some schedules kill a forked process at the crash point
instead of raising. After the run: reap, collect with zero grace, and check

* dangling — every retained manifest hydrates fully, every digest and hash verifies;
* ghosts — every object in the store belongs to a retained manifest (no transaction is live);
* lost — every acknowledged commit is still there, and the retained ones read back exactly;
* double commits — every execution has exactly one version per step.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from datetime import timedelta
from typing import Any

from _common import ROOT, emit_json, print_table

DB_POINTS = (
    "prepare.recorded",
    "prepare.pinned",
    "commit.locked",
    "commit.manifest",
    "gc.marked",
    "gc.object_deleted",
    "reap.aborted",
)
STORE_POINTS = ("store.put", "store.get", "store.delete")
WORKERS, EXECUTIONS_PER_WORKER, STEPS = 3, 2, 3
EXECUTIONS = WORKERS * EXECUTIONS_PER_WORKER


def setup_django(db: str, stack: ExitStack) -> None:
    if db == "postgres":
        from tests.servers import postgres_server

        url = os.environ.get("CONSISTENCY_DATABASE_URL") or stack.enter_context(postgres_server())
    else:
        url = f"sqlite:///{stack.enter_context(tempfile.TemporaryDirectory())}/consistency.sqlite3"
    os.environ["ANALEMMA_TEST_DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "analemma.settings.test")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


class Crash(BaseException):
    """The injected crash. BaseException, so no `except Exception` in the code under test
    can swallow it: it behaves like the process dying."""


class Injector:
    """Counts hits of every crash point and fires once at the chosen (point, occurrence)."""

    def __init__(self, target: tuple[str, int] | None, kill: bool) -> None:
        self.target, self.kill = target, kill
        self.hits: dict[str, int] = {}
        self.fired = False
        self.lock = threading.Lock()
        self.in_child = False
        self.adversary: Any = None

    def __call__(self, point: str) -> None:
        if point == "commit.manifest" and self.adversary is not None:
            self.adversary()
        with self.lock:
            self.hits[point] = self.hits.get(point, 0) + 1
            fire = not self.fired and self.target == (point, self.hits[point])
            if fire:
                self.fired = True
        if fire:
            if self.kill and self.in_child:
                os._exit(137)  # the process dies here: no rollback, no cleanup
            raise Crash(point)


class FaultyStore:
    def __init__(self, inner: Any, injector: Injector) -> None:
        self.inner, self.injector = inner, injector

    def put(self, key: str, data: bytes) -> None:
        self.injector("store.put")
        self.inner.put(key, data)

    def get(self, key: str) -> bytes:
        self.injector("store.get")
        return self.inner.get(key)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        self.injector("store.get")
        return self.inner.get_range(key, offset, length)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def delete(self, key: str) -> None:
        self.injector("store.delete")
        self.inner.delete(key)

    def list(self, prefix: str = "") -> Any:
        return self.inner.list(prefix)


def make_state(execution: str, step: int) -> dict[str, Any]:
    return {
        "step": step,
        "llm_response": {"text": f"exec {execution} answer {step} " * 120},
        "messages": [
            {"role": "user", "content": f"exec {execution} turn {i} " * 80} for i in range(step * 2)
        ],
        # Same in every execution of one worker: later executions reuse an earlier one's blob.
        "workflow_config": {"worker": execution.split("-")[1], "steps": [f"s{i}" for i in range(200)]},
    }


class Schedule:
    """One run: concurrent executions plus a collector, one crash, then the invariants."""

    def __init__(self, index: int, target: tuple[str, int] | None, kill: bool, seed: int) -> None:
        from analemma_sdk.statebag import LocalFolderStore

        self.rng = random.Random(seed)
        self.folder = tempfile.mkdtemp(prefix="consistency-")
        self.plain = LocalFolderStore(self.folder)
        self.injector = Injector(target, kill)
        self.store = FaultyStore(self.plain, self.injector)
        self.kill = kill
        self.owner = f"owner-{index}"
        # Every other schedule keeps values in the payload as inline frames, so versions that
        # upload nothing (one-call records) race GC, retention and the reaper too.
        self.inline_frames = index % 2 == 1
        self.acknowledged: dict[tuple[str, int], tuple[str, dict[str, Any]]] = {}
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.adversaries: list[threading.Thread] = []

    def hydrator(self) -> Any:
        from analemma_sdk.statebag import StateHydrator
        from statebag.services import StateVersioningService

        return StateHydrator(
            use_batching=True,
            use_zstd=True,
            use_2pc=True,
            inline_frames=self.inline_frames,
            store=self.store,
            manifest_store=StateVersioningService(use_2pc=True),
        )

    def one_step(self, hydrator: Any, execution: str, step: int, payload: dict[str, Any]) -> dict[str, Any]:
        bag = hydrator.hydrate(payload)
        for name, value in make_state(execution, step).items():
            bag[name] = value
        return hydrator.dehydrate(
            bag,
            owner_id=self.owner,
            workflow_id="wf",
            execution_id=execution,
            idempotency_key=f"job-{execution}-{step}",
        )

    def in_child(self, execution: str, step: int, payload: dict[str, Any]) -> None:
        from django.db import connections

        connections.close_all()
        pid = os.fork()
        if pid == 0:  # child: its own connections; dies at the crash point or exits cleanly
            self.injector.in_child = True
            code = 0
            try:
                self.one_step(self.hydrator(), execution, step, payload)
            except BaseException:
                code = 1
            finally:
                connections.close_all()
            os._exit(code)
        os.waitpid(pid, 0)

    def worker(self, number: int) -> None:
        """A warm container: one hydrator serves its executions one after the other, so later
        ones reuse blobs (workflow_config) of earlier, finished ones that GC may be collecting.
        A crashed step is retried in a fresh container."""
        from django.db import connections

        from statebag.services.collection import execution_finish

        warm = self.hydrator()
        for round_ in range(EXECUTIONS_PER_WORKER):
            execution = f"exec-{number}-{round_}"
            payload: dict[str, Any] = {}
            for step in range(1, STEPS + 1):
                for attempt in range(12):
                    try:
                        if self.kill and attempt == 0 and number == 0:
                            self.in_child(execution, step, payload)  # may die; the retry finishes it
                        hydrator = warm if attempt == 0 else self.hydrator()
                        payload = self.one_step(hydrator, execution, step, payload)
                        self.acknowledged[(execution, step)] = (
                            payload["__statebag__"]["manifest"],
                            make_state(execution, step),
                        )
                        break
                    except Crash:
                        continue
                    except Exception as exc:  # a typed refusal: retry like a redelivered job
                        if attempt == 11:
                            self.errors.append(f"{execution} step {step}: {type(exc).__name__}: {exc}")
                        time.sleep(self.rng.random() * 0.01)
            if round_ == EXECUTIONS_PER_WORKER - 1:
                break  # the last one keeps running: its versions must survive everything
            try:
                execution_finish(owner_id=self.owner, execution_id=execution)
            except Exception as exc:  # the execution may not exist if every step failed
                self.errors.append(f"finish {execution}: {exc}")
        connections.close_all()

    def collector(self) -> None:
        from django.db import connections
        from django.utils import timezone

        from statebag.services.collection import gc_sweep, retention_apply, transactions_reap

        sweeps = (
            # Finished executions are released at once: their packs race later reuse.
            lambda: retention_apply(keep_last=1, finished_ttl=timedelta(seconds=-1)),
            lambda: gc_sweep(grace=timedelta(0), store=self.store),
            # As if every transaction had expired: slow commits race the reaper.
            lambda: transactions_reap(now=timezone.now() + timedelta(hours=1), store=self.store),
        )
        while not self.stop.is_set():
            for sweep in sweeps:
                try:
                    sweep()
                except Crash:
                    pass
                except Exception as exc:  # lock contention etc.: next round
                    self.errors.append(f"collector: {type(exc).__name__}: {exc}")
            time.sleep(self.rng.random() * 0.02)
        connections.close_all()

    def adversarial_gc(self) -> None:
        """Run a whole GC pass while a commit holds its transaction open: the worst moment
        for it, since the new manifest's references are not visible to GC yet."""
        from django.db import connections

        from statebag.services.collection import gc_sweep, retention_apply

        def sweep() -> None:
            try:
                retention_apply(keep_last=1, finished_ttl=timedelta(seconds=-1))
                gc_sweep(grace=timedelta(0), store=self.plain)
            except Crash:
                pass  # the injected crash may land in this sweep too
            except Exception as exc:  # reported, not fatal
                self.errors.append(f"adversary: {exc}")
            finally:
                connections.close_all()

        thread = threading.Thread(target=sweep)
        thread.start()
        # GC may wait on a row lock this commit holds; let the commit go on after a moment.
        thread.join(timeout=0.5)
        self.adversaries.append(thread)

    def run(self) -> dict[str, Any]:
        from statebag import faults

        self.injector.adversary = self.adversarial_gc
        faults.install(self.injector)
        try:
            threads = [threading.Thread(target=self.worker, args=(w,)) for w in range(WORKERS)]
            gc_thread = threading.Thread(target=self.collector)
            for thread in [gc_thread, *threads]:
                thread.start()
            for thread in threads:
                thread.join()
            self.stop.set()
            gc_thread.join()
            for thread in self.adversaries:
                thread.join()
        finally:
            faults.install(None)
        return self.check()

    def check(self) -> dict[str, Any]:
        from django.utils import timezone

        from analemma_sdk.statebag import StateHydrator
        from statebag.models import CommitTransaction, Manifest, Pack
        from statebag.services import manifest_state, manifest_verify
        from statebag.services.collection import gc_sweep, transactions_reap

        # Settle: abort whatever is left, collect with zero grace (twice: DELETING leftovers).
        transactions_reap(now=timezone.now() + timedelta(hours=2), store=self.plain)
        for _ in range(2):
            gc_sweep(grace=timedelta(0), store=self.plain)
        reader = StateHydrator(use_batching=True, store=self.plain)
        retained = Manifest.objects.filter(execution__owner_id=self.owner, retained=True).select_related(
            "execution"
        )
        dangling = 0
        for manifest in retained:
            try:
                manifest_state(manifest, reader).to_dict()
                dangling += 0 if manifest_verify(manifest) else 1
            except Exception:  # any failure to read a committed version is dangling
                dangling += 1
        lost = EXECUTIONS * STEPS - len(self.acknowledged)
        for (_, step), (digest, expected) in self.acknowledged.items():
            row = Manifest.objects.filter(hash=digest).first()
            if row is None or row.version != step:
                lost += 1
            elif row.retained and manifest_state(row, reader).to_dict() != expected:
                lost += 1
        versions = list(
            Manifest.objects.filter(execution__owner_id=self.owner).values_list("execution_id", "version")
        )
        keep = set(Pack.objects.filter(blobs__manifests__in=retained).values_list("key", flat=True))
        return {
            "dangling": dangling,
            "ghosts": len([k for k in self.plain.list("") if k not in keep and not k.startswith("dicts/")]),
            "lost": lost,
            "double_commits": len(versions) - len(set(versions)) + max(0, len(versions) - EXECUTIONS * STEPS),
            "live_transactions": CommitTransaction.objects.filter(
                owner_id=self.owner, state="prepared"
            ).count(),
            "fired": self.injector.fired,
            "errors": self.errors,
            "hits": self.injector.hits,
        }


def crash_plan(dry: dict[str, Any], rng: random.Random) -> list[tuple[str, int]]:
    """The crash targets in the order schedules take them: the first hit of each point the dry
    run reached first (a short run then fires a crash in every schedule, however often timing
    lets a point be hit), then its later hits, then the points it never reached."""
    points = [(p, n) for p, count in dry["hits"].items() for n in range(1, count + 1)]
    rng.shuffle(points)
    points.sort(key=lambda point: point[1] > 1)
    unreached = [(p, 1) for p in DB_POINTS + STORE_POINTS if p not in dry["hits"]]
    rng.shuffle(unreached)
    return points + unreached


def run_schedule(index: int, target: tuple[str, int] | None, kill: bool, seed: int) -> dict[str, Any]:
    schedule = Schedule(index, target, kill, seed)
    try:
        return schedule.run()
    finally:
        shutil.rmtree(schedule.folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--schedules", type=int, default=50)
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    rng = random.Random(args.seed)
    totals = {"dangling": 0, "ghosts": 0, "lost": 0, "double_commits": 0}
    fired, crash_points, kills, error_count = 0, set(), 0, 0
    started = time.perf_counter()
    with ExitStack() as stack:
        setup_django(args.db, stack)
        # A dry schedule tells how often each point is hit: targets are drawn from that. Odd
        # schedules keep state in inline frames, even ones in packs, and the two reach different
        # points: each draws from a dry run of its own kind.
        plans = {parity: crash_plan(run_schedule(parity, None, False, args.seed), rng) for parity in (0, 1)}
        for index in range(1, args.schedules + 1):
            points = plans[index % 2]
            target = points[(index - 1) // 2 % len(points)]
            kill = index % 5 == 0 and args.db == "postgres"
            result = run_schedule(index, target, kill, args.seed + index)
            for key in totals:
                totals[key] += result[key]
            fired += result["fired"]
            kills += kill
            error_count += len(result["errors"])
            crash_points.add(target)
            if any(result[key] for key in totals):
                print(f"schedule {index} target {target}: {result}", file=sys.stderr)
    elapsed = time.perf_counter() - started
    print(
        f"{args.schedules} schedules on {args.db}, {len(crash_points)} distinct crash points, "
        f"{fired} crashes fired ({kills} schedules with a killed process), {elapsed:.1f} s"
    )
    print_table(["invariant", "violations"], [[k, v] for k, v in totals.items()])
    emit_json(
        {
            "schedules": args.schedules,
            **totals,
            "crash_points": len(crash_points),
            "crashes_fired": fired,
            "killed_processes": kills,
            "retried_errors": error_count,
            "db": args.db,
            "seconds": round(elapsed, 1),
        }
    )


if __name__ == "__main__":
    main()
