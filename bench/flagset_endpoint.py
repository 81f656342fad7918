"""The SDK endpoint under load: gunicorn on loopback, wrk at 50 connections, 304 and 200 paths.

    python bench/flagset_endpoint.py [--seconds 10] [--workers 2] [--repeat 3]

The service runs with its production settings on SQLite plus a real Redis (the distributed
cache); wrk (Debian package) generates the load. Database queries per request are counted in
process on the same code path. Prints a table, then JSON as the last line."""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from _common import ROOT, emit_json, print_table


def wait_http(url: str, headers: dict[str, str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=1)  # loopback
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def parse_wrk(output: str) -> dict[str, float]:
    def ms(text: str) -> float:
        number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
        return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    latency = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", output, re.M))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return {
        "rps": rps,
        "p50_ms": ms(latency["50"]),
        "p99_ms": ms(latency["99"]),
        "errors": int(non_2xx.group(1)) if non_2xx else 0,
    }


def median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    """The run whose p99 is the median of all runs (the upper one of an even count)."""
    return sorted(runs, key=lambda run: run["p99_ms"])[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--worker-class", default="sync", help="gunicorn worker class")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--wrk-threads", type=int, default=1, help="load generator threads (they share the cores)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per path; the median is reported")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    sys.path.insert(0, str(ROOT))
    from tests.servers import listening_socket, redis_server

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        (tmp / "static").mkdir()  # production serves collected static files from here
        redis_url = stack.enter_context(redis_server())
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "analemma.settings.production",
            "SECRET_KEY": secrets.token_urlsafe(64),
            "ALLOWED_HOSTS": "127.0.0.1",
            "SECURE_SSL_REDIRECT": "false",
            "DATABASE_URL": f"sqlite:///{tmp}/bench.sqlite3",
            "ANALEMMA_VAR_DIR": str(tmp),
            "REDIS_URL": redis_url,
            "LOG_LEVEL": "WARNING",
        }
        python = sys.executable
        subprocess.run([python, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        key = subprocess.run(
            [python, "manage.py", "rollout", "sdk-key", "create", "--env", "prod"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        queries = subprocess.run(
            [python, "-c", COUNT_QUERIES, key], cwd=ROOT, env=env, check=True, capture_output=True, text=True
        ).stdout.split()
        listener = stack.enter_context(listening_socket())  # gunicorn serves on this very socket
        port = listener.getsockname()[1]
        server = subprocess.Popen(
            [
                python,
                "-m",
                "gunicorn",
                "analemma.wsgi",
                "--bind",
                f"fd://{listener.fileno()}",
                "--workers",
                str(args.workers),
                "--worker-class",
                args.worker_class,
                "--threads",
                str(args.threads),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            pass_fds=(listener.fileno(),),
        )
        stack.callback(server.wait, 10)
        stack.callback(server.terminate)
        url = f"http://127.0.0.1:{port}/api/v1/flagset"
        auth = {"Authorization": f"Bearer {key}"}
        wait_http(url, auth)
        response = urllib.request.urlopen(urllib.request.Request(url, headers=auth))  # loopback
        etag = response.headers["ETag"]
        runs: dict[str, list[dict[str, float]]] = {"304": [], "200": []}
        for _ in range(args.repeat):
            for name, headers in (("304", {**auth, "If-None-Match": etag}), ("200", auth)):
                command = [
                    "wrk",
                    f"-t{args.wrk_threads}",
                    f"-c{args.connections}",
                    f"-d{args.seconds}s",
                    "--latency",
                    url,
                ]
                for header, value in headers.items():
                    command += ["-H", f"{header}: {value}"]
                runs[name].append(
                    parse_wrk(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
                )
    results = {name: median_run(measured) for name, measured in runs.items()}
    print(
        f"gunicorn {args.workers} {args.worker_class} workers x {args.threads} threads, wrk"
        f" {args.wrk_threads} thread(s) {args.connections} connections, {args.repeat} x {args.seconds}s per path"
    )
    print_table(
        ["path", "run", "req/s", "p50 ms", "p99 ms", "db queries", "errors"],
        [
            [
                p,
                "median" if r is results[p] else str(i + 1),
                r["rps"],
                r["p50_ms"],
                r["p99_ms"],
                int(q),
                r["errors"],
            ]
            for (p, measured), q in zip(runs.items(), queries, strict=True)
            for i, r in enumerate(measured)
        ],
    )
    emit_json(
        {
            "rps_304": results["304"]["rps"],
            "p50_ms_304": results["304"]["p50_ms"],
            "p99_ms_304": results["304"]["p99_ms"],
            "rps_200": results["200"]["rps"],
            "p50_ms_200": results["200"]["p50_ms"],
            "p99_ms_200": results["200"]["p99_ms"],
            "db_queries_304": int(queries[0]),
            "db_queries_200": int(queries[1]),
            "errors": sum(r["errors"] for measured in runs.values() for r in measured),
        }
    )


# Counts database queries of a warm 304 and a warm 200, in a process with the same settings.
COUNT_QUERIES = """
import sys, django
django.setup()
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
client = Client(HTTP_AUTHORIZATION="Bearer " + sys.argv[1])
etag = client.get("/api/v1/flagset", secure=True, HTTP_HOST="127.0.0.1")["ETag"]
counts = []
for headers in ({"HTTP_IF_NONE_MATCH": etag}, {}):
    with CaptureQueriesContext(connection) as captured:
        status = client.get("/api/v1/flagset", secure=True, HTTP_HOST="127.0.0.1", **headers).status_code
    assert status in (200, 304), status
    counts.append(len(captured))
print(*counts)
"""


if __name__ == "__main__":
    main()
