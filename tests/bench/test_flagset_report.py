"""The flag-set benchmark reads wrk's report correctly and picks the median run."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from flagset_endpoint import median_run, parse_wrk

WRK_OUTPUT = """Running 10s test @ http://127.0.0.1:8000/api/v1/flagset
  1 threads and 50 connections
  Latency Distribution
     50%    4.73ms
     75%    5.90ms
     90%    7.10ms
     99%  812.00us
  88726 requests in 10.00s, 20.1MB read
  Non-2xx or 3xx responses: 3
Requests/sec:   8872.61
"""


def test_parse_wrk__reads_rate_latencies_in_any_unit_and_errors():
    assert parse_wrk(WRK_OUTPUT) == {"rps": 8872.61, "p50_ms": 4.73, "p99_ms": 0.812, "errors": 3}


def test_median_run__is_the_run_with_the_middle_p99():
    runs = [{"p99_ms": 11.0, "rps": 1}, {"p99_ms": 8.6, "rps": 2}, {"p99_ms": 9.3, "rps": 3}]
    assert median_run(runs)["rps"] == 3
