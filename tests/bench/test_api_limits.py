"""The limits benchmark runs end to end (with small limits, so it is quick) and reports every
request it promises. Its timings are only printed, never asserted: the README reports a run at
the real limits."""

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
SMALL = {
    "STATEBAG_API_MAX_PACKS": "4",
    "STATEBAG_API_MAX_FRAMES": "32",
    "STATEBAG_API_MAX_REUSED": "32",
    "STATEBAG_API_MAX_PARENTS": "3",
    "STATEBAG_API_MAX_ENTRIES": "16",
    "STATEBAG_API_MAX_POINTERS": "32",
    "API_MAX_BODY_BYTES": "65536",
}


def test_api_limits__small_limits__every_request_measured_no_server_error():
    done = subprocess.run(
        [sys.executable, "api_limits.py", "--rounds", "2", "--parallel", "2"],
        cwd=BENCH,
        env={**os.environ, **SMALL},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["limits"]["FRAMES"] == 32 and report["body_bytes"] == 65536
    sqlite = report["backends"]["sqlite"]
    assert set(sqlite["requests"]) == {"prepare", "commit", "commit_inline"}
    for figures in sqlite["requests"].values():
        assert 0 < figures["txn_median_ms"] <= figures["txn_max_ms"]
    assert sqlite["contention"]["server_errors"] == 0
    assert sqlite["contention"]["prepares_at_limits"] == 6
