"""How long a committed change takes to reach every server process.

    python bench/propagation.py [--changes 5] [--shapes embedded gunicorn gunicorn+redis]

Each shape runs the service in its own processes on a SQLite file: "embedded" as `make run`
does (local settings, one process, no shared cache), "gunicorn" with the production settings
and two workers and no Redis (each worker caches in its own memory), "gunicorn+redis" the same
with a real Redis as the shared cache. ``manage.py rollout set`` from another process changes
a flag, then ``manage.py rollout sdk-key revoke`` revokes a key; the poller asks the flag-set
endpoint continuously from the moment the command starts (not after it exits: an interpreter
takes a while to shut down). Latency = the time of the first answer from which 12 answers in a
row show the change (so both workers have), minus the commit time the database recorded. The
target is under 1 s in every shape. Prints a table, then JSON as the last line."""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

from _common import ROOT, emit_json, print_table

from tests.servers import redis_server, service_process

STREAK = 12


def committed_at(database: Path, query: str, *params: Any) -> float:
    with sqlite3.connect(database) as connection:
        (value,) = connection.execute(query, params).fetchone()
    stamp = datetime.fromisoformat(value if "+" in value else value + "+00:00")
    return stamp.timestamp()


def changed_by(service: Any, command: list[str], key: str, wanted: Any) -> float:
    """Run ``manage.py *command`` in another process while polling; the settle time."""
    import subprocess

    process = subprocess.Popen(
        [sys.executable, "manage.py", *command], cwd=ROOT, env=service.env, stdout=subprocess.DEVNULL
    )
    try:
        return settle(service, key, wanted, timeout=60.0)
    finally:
        if process.wait(timeout=60) != 0:
            raise SystemExit(f"manage.py {' '.join(command)} failed")


def settle(service: Any, key: str, wanted: Any, timeout: float = 20.0) -> float:
    """Wall time of the first answer of the first streak of STREAK answers ``wanted`` accepts."""
    deadline, streak, first = time.monotonic() + timeout, 0, 0.0
    while time.monotonic() < deadline:
        seen = time.time()
        status, body = service.get("/api/v1/flagset", {"Authorization": f"Bearer {key}"})
        if wanted(status, body):
            first, streak = (first if streak else seen), streak + 1
            if streak >= STREAK:
                return first
        else:
            streak = 0
    raise SystemExit("the change never reached every process")


def measure(shape: str, changes: int) -> dict[str, Any]:
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        redis_url = stack.enter_context(redis_server()) if shape.endswith("+redis") else ""
        service = stack.enter_context(service_process(shape.split("+")[0], folder, redis_url))
        database = folder / "analemma.sqlite3"
        flag_latency, revoke_latency = [], []
        for index in range(changes):
            key = service.manage("rollout", "sdk-key", "create", "--env", "prod").strip()
            settle(service, key, lambda status, body: status == 200)
            percentage = str(10 + index)

            def changed(status: int, body: bytes, percentage: str = percentage) -> bool:
                spec = json.loads(body)["flags"]["use_batching"] if status == 200 else {}
                return bool(spec.get("percentage") == float(percentage))

            command = ["rollout", "set", "use_batching", "--env", "prod", "--on", "--percentage", percentage]
            seen = changed_by(service, command, key, changed)
            at = committed_at(
                database,
                "SELECT r.created_at FROM rollout_revision r JOIN rollout_environment e "
                "ON e.id = r.environment_id WHERE e.key = 'prod' ORDER BY r.number DESC LIMIT 1",
            )
            flag_latency.append(seen - at)
            prefix = key[: len("ask_prod_") + 6]
            seen = changed_by(service, ["rollout", "sdk-key", "revoke", prefix], key, lambda st, _: st == 401)
            at = committed_at(database, "SELECT revoked_at FROM rollout_sdkkey WHERE prefix = ?", prefix)
            revoke_latency.append(seen - at)
    return {
        "flag_change_s": {"median": statistics.median(flag_latency), "max": max(flag_latency)},
        "key_revocation_s": {"median": statistics.median(revoke_latency), "max": max(revoke_latency)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--changes", type=int, default=5)
    parser.add_argument("--shapes", nargs="+", default=["embedded", "gunicorn", "gunicorn+redis"])
    args = parser.parse_args()
    results = {shape: measure(shape, args.changes) for shape in args.shapes}
    rows = [
        [
            shape,
            figures["flag_change_s"]["median"],
            figures["flag_change_s"]["max"],
            figures["key_revocation_s"]["median"],
            figures["key_revocation_s"]["max"],
        ]
        for shape, figures in results.items()
    ]
    print_table(["shape", "flag median s", "flag max s", "revoke median s", "revoke max s"], rows)
    emit_json({"changes": args.changes, "target_s": 1.0, "shapes": results})


if __name__ == "__main__":
    main()
