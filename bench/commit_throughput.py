"""Commits per second through the HTTP API, against a trivial JSON view on the same server.

    python bench/commit_throughput.py [--seconds 10] [--clients 8 32] [--workers 4]
        [--worker-class sync] [--threads 1] [--conn-max-age 60] [--database URL]

A Distributed Map fans one workflow out to thousands of Lambdas that each commit a state
version. This runs the service as production does (gunicorn, production settings, blobs in a
local folder, no Redis) against PostgreSQL (a throwaway cluster started the way the test
suite starts one: fsync off, so a commit costs less there than on a durable server; or
``--database URL``), creates a write key, then drives it with real HTTP clients (processes of
threads, one keep-alive ``http.client`` connection each, one execution each) in a closed loop:

* ``livez``: the trivial JSON view (``GET /livez``), through the same middleware: what a
  request costs at all on this server. Every other figure is compared with it, in the same run.
* ``2pc``: a step with new data: prepare (one new pack of two frames, the blobs it keeps
  pinned), the pack written to the service's folder (direct upload: the client has store
  access), commit. One commit = two HTTP requests.
* ``record``: a step with nothing to upload (its state rides in the payload; it keeps stored
  blobs): one ``POST /api/v1/statebag/manifests``. A service without that endpoint gets the
  same step as prepare + commit, as the SDK sent it before (reported as ``record(2pc)``).

Before the measured runs, every scenario runs unmeasured for ``--warmup`` seconds and the
database is ANALYZEd, as a database in service has its statistics (an empty one plans as if
each table held a row). Each (clients, scenario) is measured ``--repeat`` times, the scenarios
interleaved so that a change in the machine's load touches them alike; the median run is
reported, with the median over the rounds of ``x livez`` (each round's divided by the
livez run of the same round).

``web cpu ms`` and ``db cpu ms`` are the CPU time the gunicorn workers and PostgreSQL spent per
operation during the measured run (from /proc; the database's only with the throwaway
cluster): 1000 divided by them is how many operations one core of each serves a second,
whatever else shares the machine.

SQL statements per request are counted in a separate process on the same database with
Django's test client (``CaptureQueriesContext``, which also sees BEGIN and COMMIT), with the
write key's cache cold (its lookup included) and warm. Prints a table, then JSON as the last
line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from _common import ROOT, emit_json, print_table
from _load import closed_loop, postmaster, wait_http

from analemma_sdk.statebag.canonical import canonical_json, sha256_hex
from analemma_sdk.statebag.codec import RAW, Encoded
from analemma_sdk.statebag.keys import pack_key
from analemma_sdk.statebag.manifests import PackWrite
from analemma_sdk.statebag.packs import build_pack
from analemma_sdk.statebag.pointers import BlobRef
from analemma_sdk.statebag.stores import LocalFolderStore

OWNER = "bench"
API = "/api/v1/statebag"
KEEP = 6  # stored blobs a step keeps (pins at prepare, pointers in its entries)


# One client: one execution, one connection ------------------------------------------------------
class Client:
    def __init__(self, port: int, key: str, store_root: str, name: str) -> None:
        self.port = port
        self.headers = {
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "X-Forwarded-Proto": "https",  # behind its TLS proxy, as production runs
        }
        self.store = LocalFolderStore(store_root)
        self.execution = name
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.head: str | None = None
        self.kept: list[dict[str, Any]] = []  # pointers to stored blobs
        self.step = 0
        self.record_endpoint = True

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        for attempt in (1, 2):
            try:
                self.connection.request(method, path, data, self.headers)
                response = self.connection.getresponse()
                payload = response.read()
                break
            except (http.client.HTTPException, ConnectionError):
                self.connection.close()  # the server closed a kept-alive connection: once more
                if attempt == 2:
                    raise
        return response.status, (json.loads(payload) if payload else None)

    def expect(self, wanted: int, method: str, path: str, body: Any = None) -> Any:
        status, answer = self.call(method, path, body)
        if status != wanted:
            raise RuntimeError(f"{method} {path}: HTTP {status} {str(answer)[:300]}")
        return answer

    # What a step sends ---------------------------------------------------------------------
    def _ids(self) -> dict[str, Any]:
        return {"owner_id": OWNER, "workflow_id": "fanout", "execution_id": self.execution}

    def _entries(self, pointers: list[dict[str, Any]]) -> dict[str, Any]:
        entries: dict[str, Any] = {f"kept{i}": p for i, p in enumerate(self.kept)}
        entries.update({f"new{i}": p for i, p in enumerate(pointers)})
        # Inline values, keys deliberately unsorted: they are stored as sent.
        entries["status"] = {"step": self.step, "phase": "running", "attempt": 1}
        entries["route"] = {"to": "next", "from": "previous", "score": 0.5}
        return entries

    def _advance(self, answer: dict[str, Any], pointers: list[dict[str, Any]]) -> None:
        self.head = answer["hash"]
        self.kept = (self.kept + pointers)[-KEEP:]
        self.step += 1

    def livez(self) -> None:
        self.expect(200, "GET", "/livez")

    def two_phase(self) -> None:
        """prepare -> direct upload -> commit, with one new pack."""
        blobs = []
        for part in range(2):
            raw = canonical_json(
                {"execution": self.execution, "step": self.step, "part": part, "text": "x" * 1500}
            )
            blobs.append((sha256_hex(raw), len(raw), Encoded(RAW, raw)))
        built = build_pack(blobs)
        key = pack_key(OWNER, built.digest)
        declared = PackWrite(key, built.digest, len(built.data), tuple(built.frames)).to_json()
        prepared = self.expect(
            201,
            "POST",
            f"{API}/transactions",
            {
                **self._ids(),
                "parents": [self.head] if self.head else [],
                "packs": [declared],
                "reused": [[p["k"], p["d"]] for p in self.kept],
                "idempotency_key": f"{self.execution}-{self.step}",
            },
        )
        self.store.put(key, built.data)
        pointers = [
            BlobRef(f.digest, key, f.offset, f.length, f.codec, f.raw_size).to_json() for f in built.frames
        ]
        answer = self.expect(
            200,
            "POST",
            f"{API}/transactions/{prepared['txn_id']}/commit",
            {"entries": self._entries(pointers), "cohort": {"use_2pc": True}},
        )
        self._advance(answer, pointers)

    def record(self) -> None:
        """A step with nothing to upload: one call (or prepare + commit on an older service)."""
        entries = self._entries([])
        body = {
            **self._ids(),
            "parents": [self.head] if self.head else [],
            "entries": entries,
            "cohort": {"use_2pc": True},
            "idempotency_key": f"{self.execution}-{self.step}",
        }
        if self.record_endpoint:
            status, answer = self.call("POST", f"{API}/manifests", body)
            if status in (200, 201):
                self._advance(answer, [])
                return
            if status not in (404, 405):
                raise RuntimeError(f"POST {API}/manifests: HTTP {status} {str(answer)[:300]}")
            self.record_endpoint = False
        prepared = self.expect(
            201,
            "POST",
            f"{API}/transactions",
            {
                **self._ids(),
                "parents": body["parents"],
                "reused": [[p["k"], p["d"]] for p in self.kept],
                "idempotency_key": body["idempotency_key"],
            },
        )
        answer = self.expect(
            200,
            "POST",
            f"{API}/transactions/{prepared['txn_id']}/commit",
            {"entries": entries, "cohort": body["cohort"]},
        )
        self._advance(answer, [])


def operation_for(port: int, key: str, store_root: str, scenario: str) -> Callable[[str], Callable[[], str]]:
    """What one client of ``scenario`` repeats, labelled with the path it took."""

    def make(name: str) -> Callable[[], str]:
        client = Client(port, key, store_root, f"{scenario}-{name}")
        if scenario == "record":
            client.two_phase()  # stored blobs to keep

        def operation() -> str:
            if scenario == "livez":
                client.livez()
            elif scenario == "2pc":
                client.two_phase()
            else:
                client.record()
                return "record" if client.record_endpoint else "record(2pc)"
            return scenario

        return operation

    return make


# The processes whose CPU time is counted per operation: (gunicorn master, postmaster or None).
SERVERS: dict[str, int | None] = {}


def drive(
    port: int, key: str, store_root: str, scenario: str, clients: int, processes: int, seconds: float
) -> dict[str, Any]:
    run = closed_loop(
        operation_for(port, key, store_root, scenario),
        clients=clients,
        processes=processes,
        seconds=seconds,
        servers=SERVERS,
    )
    labels, done, per_s = run.pop("labels"), run.pop("done"), run.pop("per_s")
    # Against a service without the one-call endpoint, a record step is prepare + commit.
    named = "record(2pc)" if "record(2pc)" in labels else scenario
    return {"scenario": named, "ops": done, "ops_per_s": per_s, **run}


# Statement counts, in a process of its own ----------------------------------------------------
COUNT_STATEMENTS = r"""
import json, sys
import django
django.setup()
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
sys.path.insert(0, sys.argv[3])
from commit_throughput import Client as BenchClient, OWNER
from keys import services as key_services

class Counting(BenchClient):
    # The same bodies as the load, through Django's test client, counting statements.
    def __init__(self, key, store_root, name):
        super().__init__(0, key, store_root, name)
        self.django = Client(HTTP_AUTHORIZATION="Bearer " + key, HTTP_X_FORWARDED_PROTO="https")
        self.counts = []
        self.cold = True

    def call(self, method, path, body=None):
        if self.cold:
            cache.clear()
            getattr(key_services, "_memo", {}).clear()
        send = self.django.post if method == "POST" else self.django.get
        data = json.dumps(body) if body is not None else None
        with CaptureQueriesContext(connection) as captured:
            if data is None:
                response = send(path, HTTP_HOST="127.0.0.1")
            else:
                response = send(path, data, content_type="application/json", HTTP_HOST="127.0.0.1")
        self.counts.append((path.rsplit("/", 1)[-1] if "transactions/" in path else path.rsplit("/", 1)[-1], len(captured)))
        return response.status_code, (response.json() if response.content else None)

out = {}
for cold in (True, False):
    client = Counting(sys.argv[1], sys.argv[2], f"count-{'cold' if cold else 'warm'}")
    client.cold = cold
    client.two_phase()  # the first version (creates the execution)
    client.counts.clear()
    client.two_phase()
    out[f"2pc_{'cold' if cold else 'warm'}"] = [n for _, n in client.counts]
    client.counts.clear()
    client.record()
    out[f"record_{'cold' if cold else 'warm'}"] = [n for _, n in client.counts]
print(json.dumps(out))
"""


def count_statements(env: dict[str, str], key: str, store_root: str) -> dict[str, list[int]]:
    done = subprocess.run(
        [sys.executable, "-c", COUNT_STATEMENTS, key, store_root, str(ROOT / "bench")],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT / "sdk")},
        check=True,
        capture_output=True,
        text=True,
    )
    counts: dict[str, list[int]] = json.loads(done.stdout.strip().splitlines()[-1])
    return counts


ANALYZE = """
import django
django.setup()
from django.db import connection
with connection.cursor() as cursor:
    cursor.execute("ANALYZE")
"""


def measure(
    args: argparse.Namespace, port: int, key: str, store_root: str, env: dict[str, str]
) -> list[dict[str, Any]]:
    """Warm up, ANALYZE, then the measured rounds; the median run of each (clients, scenario)."""
    for scenario in args.scenarios:
        if args.warmup > 0:
            drive(port, key, store_root, scenario, max(args.clients), args.client_processes, args.warmup)
    subprocess.run([sys.executable, "-c", ANALYZE], cwd=ROOT, env=env, check=True)
    rounds = []
    for _ in range(args.repeat):
        for clients in args.clients:
            measured = {
                scenario: drive(port, key, store_root, scenario, clients, args.client_processes, args.seconds)
                for scenario in args.scenarios
            }
            baseline = measured.get("livez", {}).get("ops_per_s")
            for run in measured.values():
                run["vs_livez"] = run["ops_per_s"] / baseline if baseline else None
            rounds.append(measured)
    runs = []
    for clients in args.clients:
        for scenario in args.scenarios:
            repeats = sorted(
                (r[scenario] for r in rounds if r[scenario]["clients"] == clients),
                key=lambda run: run["ops_per_s"],
            )
            median = dict(repeats[len(repeats) // 2])
            median["repeats_ops_per_s"] = [run["ops_per_s"] for run in repeats]
            median["repeats_vs_livez"] = sorted(run["vs_livez"] for run in repeats if run["vs_livez"])
            # The ratio is taken within each round: its median over the rounds.
            if median["repeats_vs_livez"]:
                median["vs_livez"] = statistics.median(median["repeats_vs_livez"])
            runs.append(median)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--scenarios", nargs="+", default=["livez", "2pc", "record"])
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--worker-class", default="sync", help="gunicorn worker class")
    parser.add_argument("--threads", type=int, default=1, help="threads per gunicorn worker")
    parser.add_argument("--client-processes", type=int, default=4, help="processes the clients run in")
    parser.add_argument(
        "--conn-max-age", type=int, default=60, help="DB_CONN_MAX_AGE: seconds a worker keeps its connection"
    )
    parser.add_argument("--database", default="", help="a PostgreSQL URL (default: a throwaway cluster)")
    parser.add_argument("--repeat", type=int, default=3, help="measured runs per (clients, scenario)")
    parser.add_argument("--warmup", type=float, default=3, help="unmeasured seconds per scenario first")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.servers import listening_socket, postgres_server

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        (tmp / "static").mkdir()
        store_root = tmp / "blobs"
        database = args.database or stack.enter_context(postgres_server())
        env = {
            **{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")},
            "DJANGO_SETTINGS_MODULE": "analemma.settings.production",
            "SECRET_KEY": secrets.token_urlsafe(64),
            "ALLOWED_HOSTS": "127.0.0.1",
            "SECURE_SSL_REDIRECT": "false",
            "DATABASE_URL": database,
            "DB_CONN_MAX_AGE": str(args.conn_max_age),
            "ANALEMMA_VAR_DIR": str(tmp),
            "STATIC_ROOT": str(tmp / "static"),
            "STATEBAG_LOCAL_ROOT": str(store_root),
            "LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT / "sdk"),  # this checkout's SDK, whatever the environment has
        }
        python = sys.executable
        subprocess.run([python, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        key = subprocess.run(
            [python, "manage.py", "write_key", "create", "--owner", OWNER],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        statements = count_statements(env, key, str(store_root))
        listener = stack.enter_context(listening_socket())
        port = listener.getsockname()[1]
        command = [python, "-m", "gunicorn", "analemma.wsgi", "--bind", f"fd://{listener.fileno()}"]
        command += ["--workers", str(args.workers), "--worker-class", args.worker_class]
        command += ["--threads", str(args.threads), "--log-level", "warning"]
        server = subprocess.Popen(command, cwd=ROOT, env=env, pass_fds=(listener.fileno(),))
        SERVERS.update(web=server.pid, db=postmaster(database))
        stack.callback(server.wait, 20)
        stack.callback(server.terminate)
        wait_http(port)
        load = [os.getloadavg()[0]]
        runs = measure(args, port, key, str(store_root), env)
        load.append(os.getloadavg()[0])
    print(
        f"gunicorn {args.workers} {args.worker_class} workers x {args.threads} threads, "
        f"DB_CONN_MAX_AGE={args.conn_max_age}, PostgreSQL; clients in {args.client_processes} processes, "
        f"{args.seconds:g} s per run, {args.repeat} runs each (median shown); load average "
        f"{load[0]:.1f} before, {load[1]:.1f} after"
    )
    print_table(
        [
            "scenario",
            "clients",
            "ops/s",
            "x livez",
            "x livez (runs)",
            "p50 ms",
            "p99 ms",
            "web cpu ms",
            "db cpu ms",
            "errors",
        ],
        [
            [
                r["scenario"],
                r["clients"],
                r["ops_per_s"],
                r["vs_livez"] if r["vs_livez"] is not None else "-",
                " ".join(f"{x:.3f}" for x in r["repeats_vs_livez"]),
                r["p50_ms"],
                r["p99_ms"],
                r["web_cpu_ms"] if r["web_cpu_ms"] is not None else "-",
                r["db_cpu_ms"] if r["db_cpu_ms"] is not None else "-",
                len(r["errors"]),
            ]
            for r in runs
        ],
    )
    for r in runs:
        for error in r["errors"]:
            print(f"{r['scenario']} x{r['clients']}: {error}")
    print("SQL statements per request (prepare, commit | record):")
    for name, counts in statements.items():
        print(f"  {name}: {counts} = {sum(counts)}")
    emit_json(
        {
            "gunicorn": {"workers": args.workers, "worker_class": args.worker_class, "threads": args.threads},
            "conn_max_age": args.conn_max_age,
            "seconds": args.seconds,
            "repeat": args.repeat,
            "load_average": load,
            "runs": runs,
            "statements": statements,
        }
    )


if __name__ == "__main__":
    main()
