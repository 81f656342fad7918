"""Telemetry batches per second through POST /api/v1/telemetry, and the rollup's cost.

    python bench/telemetry_ingest.py [--seconds 10] [--clients 16] [--workers 4]
        [--flags 4] [--cohorts 1] [--units 40] [--no-redis] [--aggregate-batches 10000] [--limit N]

A fleet shares one SDK key: 10,000 Lambdas each flushing every 30 s is ~333 batches/s for one
environment. This runs the service as production does (gunicorn, production settings,
PostgreSQL: a throwaway cluster started the way the test suite starts one, fsync off; Redis
for the cache, so the ingestion limit is counted across workers as in production, unless
--no-redis), creates an SDK key, and drives the endpoint with real HTTP clients (processes of
threads, one keep-alive connection each) in a closed loop, each sending Lambda-sized batches:
``--flags`` evaluation entries with a HyperLogLog sketch of ``--units`` execution ids each,
and ``--cohorts`` statebag cohort entries with the SDK's counters and two latency histograms.

Reported per run: batches/s, p50/p99 latency, the CPU the gunicorn workers and PostgreSQL spent
per batch (from /proc: 1000 / that = batches one core of each ingests a second, whatever else
shares the machine), and ``livez`` (a trivial view through the same stack) for scale. Then the
rollup: ``telemetry_aggregate`` over the stored batches (at least ``--aggregate-batches``), its
wall time and PostgreSQL CPU per 10,000 batches, and the raw row's size on disk. ``--limit 1``
makes nearly every batch a 429: what a refusal costs. Prints a table, then JSON as the last
line.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from _common import ROOT, emit_json, print_table
from _load import closed_loop, cpu_seconds, postmaster, wait_http

PATH = "/api/v1/telemetry"
SDK_FLAGS = ["use_batching", "use_zstd", "zstd_level", "use_2pc", "checkout_v2", "pricing", "search", "beta"]


def sketch(units: list[str]) -> str:
    sys.path.insert(0, str(ROOT))
    from telemetry.sketch import sketch_add, sketch_empty

    registers = sketch_empty()
    for unit in units:
        sketch_add(registers, unit)
    return base64.b64encode(bytes(registers)).decode()


def batch_body(flags: int, cohorts: int, sketches: list[str]) -> bytes:
    now = time.time()
    return json.dumps(
        {
            "v": 1,
            "batch": uuid.uuid4().hex,
            "sent_at": now,
            "window": [now - 30, now],
            "sdk": {"name": "analemma-python", "version": "0.9"},
            "dropped": 0,
            "evaluations": [
                {
                    "flag": SDK_FLAGS[i % len(SDK_FLAGS)],
                    "variant": None,
                    "value": i % 3 == 0,
                    "reason": "rollout",
                    "count": 40,
                    "units": sketches[i % len(sketches)],
                }
                for i in range(flags)
            ],
            "statebag": [
                {
                    "cohort": {"use_batching": True, "use_zstd": c % 2 == 0, "use_2pc": True},
                    "counters": {
                        "executions": 40,
                        "hydrations": 40,
                        "dehydrations": 40,
                        "requests_get": 12,
                        "requests_put": 8,
                        "requests_head": 0,
                        "requests_list": 0,
                        "requests_delete": 0,
                        "bytes_written": 123456,
                        "bytes_read": 67890,
                        "inline_bytes": 50000,
                        "offloaded_bytes": 70000,
                        "payload_bytes": 900000,
                        "cold_containers": 1,
                        "warm_containers": 39,
                        "errors": 0,
                        "degraded_to_legacy": 0,
                        "commits_2pc": 8,
                        "commits_record": 32,
                        "commits_failed": 0,
                    },  # fmt: skip
                    "latency_ms": {
                        "hydrate": [[1, 3], [2, 15], [4, 12], [8, 7], [16, 3]],
                        "dehydrate": [[4, 4], [8, 16], [16, 14], [32, 6]],
                    },
                }
                for c in range(cohorts)
            ],
        },
        separators=(",", ":"),
    ).encode()


def operation_for(port: int, key: str, scenario: str, shape: Any) -> Callable[[str], Callable[[], int]]:
    """What one client repeats: a batch (a new one each time) or ``GET /livez``, labelled by
    the answer's status."""

    def make(name: str) -> Callable[[], int]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "X-Forwarded-Proto": "https",
        }

        def operation() -> int:
            if scenario == "livez":
                connection.request("GET", "/livez", headers={"X-Forwarded-Proto": "https"})
            else:
                connection.request("POST", PATH, batch_body(*shape), headers)
            response = connection.getresponse()
            response.read()
            return response.status

        return operation

    return make


SERVERS: dict[str, int | None] = {}


def drive(
    port: int, key: str, scenario: str, clients: int, processes: int, seconds: float, shape: Any
) -> dict[str, Any]:
    run = closed_loop(
        operation_for(port, key, scenario, shape),
        clients=clients,
        processes=processes,
        seconds=seconds,
        servers=SERVERS,
    )
    statuses, done = run.pop("labels"), run.pop("done")
    return {"scenario": scenario, "requests": done, "statuses": statuses, **run}


AGGREGATE = r"""
import json, sys, time
import django
django.setup()
from django.db import connection
from telemetry.models import RawBatch
from telemetry.services import telemetry_aggregate
pending = RawBatch.objects.filter(aggregated_at__isnull=True).count()
with connection.cursor() as cursor:
    cursor.execute("SELECT pg_total_relation_size('telemetry_rawbatch'), (SELECT count(*) FROM telemetry_rawbatch)")
    size, rows = cursor.fetchone()
    cursor.execute("SELECT avg(octet_length(payload)) FROM telemetry_rawbatch")
    payload = float(cursor.fetchone()[0] or 0)
began = time.perf_counter()
result = telemetry_aggregate(max_seconds=600)
elapsed = time.perf_counter() - began
print(json.dumps({"pending": pending, "batches": result.batches, "chunks": result.chunks, "seconds": elapsed,
                  "evaluation_rollups": result.evaluation_rollups, "cohort_rollups": result.cohort_rollups,
                  "raw_bytes_per_batch": size / rows if rows else 0, "payload_bytes": payload}))
"""

FILL = r"""
import sys, time, uuid
import django
django.setup()
sys.path.insert(0, sys.argv[4])
from telemetry_ingest import batch_body
from telemetry.services import batch_ingest
from telemetry.wire import parse_batch
from django.utils import timezone
import json
flags, cohorts, missing = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
sketches = json.loads(sys.stdin.read())
for _ in range(missing):
    batch = parse_batch(json.loads(batch_body(flags, cohorts, sketches)), now=time.time())
    batch_ingest(environment="prod", batch=batch, received_at=timezone.now())
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, nargs="+", default=[16])
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--client-processes", type=int, default=4)
    parser.add_argument("--flags", type=int, default=4, help="evaluation entries per batch")
    parser.add_argument("--cohorts", type=int, default=1, help="statebag cohort entries per batch")
    parser.add_argument("--units", type=int, default=40, help="execution ids in each evaluation's sketch")
    parser.add_argument("--no-redis", action="store_true", help="process-memory cache (the limit per worker)")
    parser.add_argument("--aggregate-batches", type=int, default=10_000, help="at least this many to roll up")
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument(
        "--limit", type=int, default=1_000_000, help="TELEMETRY_MAX_BATCHES_PER_SECOND (small: measure 429s)"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.servers import listening_socket, postgres_server, redis_server

    sketches = [sketch([f"exec-{s}-{i}" for i in range(args.units)]) for s in range(8)]
    shape = (args.flags, args.cohorts, sketches)
    body_bytes = len(batch_body(*shape))
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        (tmp / "static").mkdir()
        database = stack.enter_context(postgres_server())
        redis = "" if args.no_redis else stack.enter_context(redis_server())
        env = {
            **{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")},
            "DJANGO_SETTINGS_MODULE": "analemma.settings.production",
            "SECRET_KEY": secrets.token_urlsafe(64),
            "ALLOWED_HOSTS": "127.0.0.1",
            "SECURE_SSL_REDIRECT": "false",
            "DATABASE_URL": database,
            "DB_CONN_MAX_AGE": "60",
            "ANALEMMA_VAR_DIR": str(tmp),
            "STATIC_ROOT": str(tmp / "static"),
            "STATEBAG_LOCAL_ROOT": str(tmp / "blobs"),
            "LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT / "sdk"),
            # By default far above what this machine serves: checked on every batch, never refusing.
            "TELEMETRY_MAX_BATCHES_PER_SECOND": str(args.limit),
            **({"REDIS_URL": redis} if redis else {}),
        }
        python = sys.executable
        subprocess.run([python, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        key = subprocess.run(
            [python, "manage.py", "rollout", "sdk-key", "create", "--env", "prod"],
            cwd=ROOT, env=env, check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        listener = stack.enter_context(listening_socket())
        port = listener.getsockname()[1]
        command = [python, "-m", "gunicorn", "analemma.wsgi", "--bind", f"fd://{listener.fileno()}"]
        command += ["--workers", str(args.workers), "--log-level", "warning"]
        server = subprocess.Popen(command, cwd=ROOT, env=env, pass_fds=(listener.fileno(),))
        SERVERS.update(web=server.pid, db=postmaster(database))
        stack.callback(server.wait, 20)
        stack.callback(server.terminate)
        wait_http(port)
        load = [os.getloadavg()[0]]
        if args.warmup > 0:
            drive(port, key, "telemetry", max(args.clients), args.client_processes, args.warmup, shape)
        runs = []
        for clients in args.clients:
            for scenario in ("livez", "telemetry"):
                runs.append(drive(port, key, scenario, clients, args.client_processes, args.seconds, shape))
        load.append(os.getloadavg()[0])
        # The rollup over what was stored (topped up to --aggregate-batches through the service).
        count = subprocess.run(
            [python, "-c", "import django; django.setup(); from telemetry.models import RawBatch; "
             "print(RawBatch.objects.filter(aggregated_at__isnull=True).count())"],
            cwd=ROOT, env=env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        missing = args.aggregate_batches - int(count.stdout.strip())
        if missing > 0:
            subprocess.run(
                [python, "-c", FILL, str(args.flags), str(args.cohorts), str(missing), str(ROOT / "bench")],
                cwd=ROOT, env=env, check=True, input=json.dumps(sketches), text=True,
            )  # fmt: skip
        db = SERVERS.get("db")
        db_before = cpu_seconds(db) if db else 0.0
        done = subprocess.run(
            [python, "-c", AGGREGATE], cwd=ROOT, env=env, check=True, capture_output=True, text=True
        )
        db_spent = (cpu_seconds(db) - db_before) if db else None
        rollup = json.loads(done.stdout.strip().splitlines()[-1])
        per_10k = 10_000 / rollup["batches"] if rollup["batches"] else 0.0
        rollup["seconds_per_10k"] = rollup["seconds"] * per_10k
        rollup["db_cpu_seconds_per_10k"] = db_spent * per_10k if db_spent is not None else None
    print(
        f"gunicorn {args.workers} sync workers, PostgreSQL, {'Redis' if redis else 'process-memory'} cache; "
        f"batch {body_bytes:,} bytes ({args.flags} evaluations with sketches, {args.cohorts} cohort); "
        f"{args.seconds:g} s per run; load average {load[0]:.1f} before, {load[1]:.1f} after; "
        f"{os.cpu_count()} cores"
    )
    print_table(
        ["scenario", "clients", "req/s", "p50 ms", "p99 ms", "web cpu ms", "db cpu ms", "statuses", "errors"],
        [
            [
                r["scenario"], r["clients"], r["per_s"], r["p50_ms"], r["p99_ms"],
                r["web_cpu_ms"] if r["web_cpu_ms"] is not None else "-",
                r["db_cpu_ms"] if r["db_cpu_ms"] is not None else "-",
                " ".join(f"{s}:{n}" for s, n in sorted(r["statuses"].items())), len(r["errors"]),
            ]
            for r in runs
        ],
    )  # fmt: skip
    for r in runs:
        for error in r["errors"]:
            print(f"{r['scenario']} x{r['clients']}: {error}")
    print(
        f"rollup: {rollup['batches']:,} batches in {rollup['seconds']:.2f} s ({rollup['chunks']} chunks) -> "
        f"{rollup['seconds_per_10k']:.2f} s and {rollup['db_cpu_seconds_per_10k'] or 0:.2f} s PostgreSQL CPU "
        f"per 10,000 batches; raw row {rollup['raw_bytes_per_batch']:,.0f} bytes on disk "
        f"(payload {rollup['payload_bytes']:,.0f})"
    )
    emit_json({"workers": args.workers, "body_bytes": body_bytes, "redis": bool(redis), "load_average": load,
               "runs": runs, "rollup": rollup, "cores": os.cpu_count()})  # fmt: skip


if __name__ == "__main__":
    main()
