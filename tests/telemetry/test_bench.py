"""bench/telemetry_ingest.py runs end to end over real HTTP (gunicorn, production settings,
PostgreSQL, Redis) and reports what it promises: every batch accepted, the rollup over at
least the batches asked for. Speed figures are printed, never asserted."""

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_telemetry_ingest_bench__short_run__every_batch_accepted_and_rolled_up():
    done = subprocess.run(
        [sys.executable, "telemetry_ingest.py", "--seconds", "1", "--warmup", "0", "--clients", "2",
         "--workers", "2", "--client-processes", "1", "--aggregate-batches", "300"],
        cwd=BENCH, capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    report = json.loads(done.stdout.strip().splitlines()[-1])
    telemetry = next(run for run in report["runs"] if run["scenario"] == "telemetry")
    assert telemetry["requests"] > 0 and set(telemetry["statuses"]) == {"202"} and not telemetry["errors"]
    assert report["rollup"]["batches"] >= 300 and report["rollup"]["evaluation_rollups"] > 0
    assert report["redis"] is True and report["body_bytes"] < 64 * 1024
