"""The benchmarks run end to end and report what they promise. Request counts are exact,
so the request target is checked here; speed figures are only printed, never asserted."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def run_bench(*args):
    done = subprocess.run(
        [sys.executable, *args], cwd=BENCH, capture_output=True, text=True, check=True, timeout=600
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def rows_of(report, workload):
    return {
        (row["mode"], row["containers"], row["commit"]): row for row in report["workloads"][workload]["rows"]
    }


def test_statebag_workload__quick__batched_beats_the_original_legacy_path(corpus_dir):
    report = run_bench(
        "statebag_workload.py",
        "--quick",
        "--corpus",
        str(corpus_dir),
        "--executions",
        "4",
        "--branches",
        "100",  # the fan-out width; small shared fields keep it quick
        "--query-mb",
        "0.2",
        "--no-latency",  # request counts are exact either way; the sleeps only cost time
    )
    assert all(check["matches"] for check in report["workloads"]["tau"]["legacy_matches_original"])
    tau, fanout = rows_of(report, "tau"), rows_of(report, "fanout")
    for containers in ("warm", "cold"):
        original_tau = tau[("original_legacy", containers, "direct")]
        original_fanout = fanout[("original_legacy", containers, "direct")]
        for commit in ("direct", "service"):
            row = tau[("batched_zstd", containers, commit)]
            assert row["error"] is None and row["lossless"]
            assert row["requests_per_execution_mean"] <= 0.2 * original_tau["requests_per_execution_mean"]
            assert row["payload_max_bytes"] <= 16 * 1024
            row = fanout[("batched_zstd", containers, commit)]
            assert row["error"] is None and row["lossless"]
            assert row["requests_per_execution_mean"] <= 0.5 * original_fanout["requests_per_execution_mean"]
            assert row["bytes_written"] <= 0.2 * original_fanout["bytes_written"]


@pytest.mark.s3
def test_statebag_workload__s3_store__same_request_counts_as_local(corpus_dir, tmp_path):
    one = sorted(corpus_dir.glob("*.json"))[:4]
    for path in one:
        (tmp_path / path.name).write_bytes(path.read_bytes())
    args = ("statebag_workload.py", "--corpus", str(tmp_path), "--workload", "tau", "--no-latency")
    local, s3 = run_bench(*args), run_bench(*args, "--store", "s3")
    for key, row in rows_of(local, "tau").items():
        assert rows_of(s3, "tau")[key]["requests_per_execution"] == row["requests_per_execution"]


def test_compression__disjoint_split__dictionary_beats_zstd_alone_clearly(corpus_dir, tmp_path):
    train, evaluate = tmp_path / "train", tmp_path / "eval"
    train.mkdir(), evaluate.mkdir()
    for index, path in enumerate(sorted(corpus_dir.glob("*.json"))):
        ((train if index % 2 else evaluate) / path.name).write_bytes(path.read_bytes())
    report = run_bench("compression.py", "--train", str(train), "--eval", str(evaluate))
    kept = {codec: figures["kept"] for codec, figures in report["eval"].items()}
    assert set(kept) == {"gzip-6", "zstd-3", "zstd-19", "zstd-3-dict"}
    # 16 training documents here; README's figure (8.8 %) is for the whole development corpus.
    assert kept["zstd-3-dict"] <= 0.7 * kept["zstd-3"]


def test_flag_eval__25_percent_rollout__fraction_within_a_point_of_a_quarter():
    report = run_bench("flag_eval.py", "--units", "20000", "--rounds", "2")
    assert {"ns_per_eval", "fraction_on", "ns_per_eval_telemetry", "telemetry_ratio", "flush_us"} <= set(
        report
    )
    assert abs(report["fraction_on"] - 0.25) <= 0.01
    assert report["ns_per_eval"] > 0 and report["ns_per_eval_telemetry"] > 0 and report["flush_us"] > 0


def test_sdk_coldstart__first_evaluation_comes_from_the_file_cache():
    # Each timed run asserts its evaluation came from the warm file cache (the server is gone).
    report = run_bench("sdk_coldstart.py", "--runs", "2")
    assert {
        "python_ms",
        "import_ms",
        "first_eval_ms",
        "statebag_import_ms",
        "first_hydrate_ms",
    } <= set(report)
    assert report["python_ms"] > 0
