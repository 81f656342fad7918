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


def test_statebag_workload__quick__batched_zstd_saves_95_percent_of_requests(corpus_dir):
    report = run_bench("statebag_workload.py", "--quick", "--corpus", str(corpus_dir))
    modes = report["modes"]
    assert set(modes) == {"legacy", "batched", "batched_zstd", "batched_zstd_dict", "batched_zstd_cold"}
    for figures in modes.values():
        assert {
            "puts",
            "gets",
            "lists",
            "deletes",
            "requests",
            "raw_bytes",
            "stored_bytes",
            "payload_max_bytes",
            "dehydrate_mb_s",
            "hydrate_mb_s",
        } <= set(figures)
        assert figures["payload_max_bytes"] <= 16 * 1024
        assert figures["lists"] == 0
    assert modes["batched_zstd"]["requests"] <= 0.05 * modes["legacy"]["requests"]
    assert report["zstd_only_mb_s"] > 0


@pytest.mark.s3
def test_statebag_workload__s3_store__same_request_counts_as_local(corpus_dir, tmp_path):
    one = sorted(corpus_dir.glob("*.json"))[:8]
    for path in one:
        (tmp_path / path.name).write_bytes(path.read_bytes())
    local = run_bench("statebag_workload.py", "--corpus", str(tmp_path))
    s3 = run_bench("statebag_workload.py", "--corpus", str(tmp_path), "--store", "s3")
    for mode in ("legacy", "batched_zstd"):
        assert s3["modes"][mode]["requests"] == local["modes"][mode]["requests"]


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
    assert set(report) == {"ns_per_eval", "fraction_on"}
    assert abs(report["fraction_on"] - 0.25) <= 0.01
    assert report["ns_per_eval"] > 0


def test_sdk_coldstart__first_evaluation_comes_from_the_file_cache():
    # Each timed run asserts its evaluation came from the warm file cache (the server is gone).
    report = run_bench("sdk_coldstart.py", "--runs", "2")
    assert set(report) == {"python_ms", "import_ms", "first_eval_ms", "statebag_import_ms"}
    assert report["python_ms"] > 0
