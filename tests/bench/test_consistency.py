"""The fault-injection harness runs in the suite with a few schedules (the README reports a
long run); its invariants must hold on PostgreSQL and SQLite."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.parametrize("db, schedules", [("postgres", 8), ("sqlite", 3)])
def test_consistency__crash_schedules__no_invariant_violated(db, schedules):
    done = subprocess.run(
        [sys.executable, "consistency.py", "--schedules", str(schedules), "--db", db, "--seed", "7"],
        cwd=BENCH,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["schedules"] == schedules
    assert report["crashes_fired"] >= 1
    assert (report["dangling"], report["ghosts"], report["lost"], report["double_commits"]) == (0, 0, 0, 0)
