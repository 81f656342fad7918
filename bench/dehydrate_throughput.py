"""Dehydration throughput on large fields, as a fraction of zstd-3's on the same bytes.

    python bench/dehydrate_throughput.py [--sizes 1 2 8] [--reps 7] [--corpus DIR]
                                         [--field NAME ...] [--search walk] [--json-only]
                                         [--clock cpu|wall]

Fields (each the value of one state field):
* ``airline``: whole agent conversations of the corpus (``{task_id, reward, info, traj,
  trial}`` documents) in a list, up to about N MB of value JSON. Their tool calls carry nulls,
  so the encoder's NaN/Infinity search always runs. The development corpus holds 2 MB: larger
  fields repeat it, which zstd compresses faster, so the ratio is harder to reach there.
* ``numeric``: sensor rows (``{t, v, q: [4 floats], ok}``, one value in ten a null) from a
  seeded random, about 2 MB: random-looking floats, slow for zstd and for the search.

Programs, timed on the same field in turn (single thread, several repetitions, the median):
* ``zstd-3``: ``ZstdCompressor(level=3).compress`` of the field's value JSON, already encoded.
* ``core``: what a dehydration has to do per byte of a new large value: ``value_json``
  (including the NaN/Infinity search), its sha256, the zstd-3 frame (``Compressor``), the pack,
  written to the store.
  ``core, walk``: the same with the search the encoder had before, the pure-Python walk.
* ``dehydrate <name>``: ``StateHydrator(use_batching=True, use_zstd=True,
  store=LocalFolderStore(tmp)).dehydrate`` of ``{<name>: field, "step": i}`` on a hydrator that
  has not stored the value yet (so the value is encoded, hashed, compressed and written).
  ``messages`` is one of the data-plane fields, ``document`` is not: the two take different
  planning paths.
* ``search`` and ``walk``: the NaN/Infinity search ``value_json`` runs on a value whose JSON
  holds a null, and the pure-Python walk it falls back to, alone.
* ``encode`` and ``sha256``: the encoder alone (orjson's ``dumps``, or the standard library's
  when orjson is hidden), and the digest of the encoded bytes alone: with ``search`` and
  zstd-3, the parts a dehydration cannot skip, so the table shows where the rest goes.

Each program runs once untimed before each timed run, so each is measured with its own data in
the caches, as a dehydration right after a step built its state would be; ``core`` and
``dehydrate`` write into an empty folder each time (a new pack, not one written over itself).
Times are the thread's CPU time (``--clock cpu``, the default: on a shared machine, time spent
waiting for a core is not the program's cost, and wall time then varies several-fold between
runs) or wall time (``--clock wall``). Ratios are throughput over zstd-3's from the same
repetitions (the JSON also has them from the fastest runs, less disturbed by other load). The
whole is run twice: with orjson, and in a child process with orjson hidden (the standard
library only). Prints a table, then JSON as the
last line. ``--search walk`` makes ``value_json`` use the walk alone everywhere (the
``dehydrate`` rows too), as it did before the fast search.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import DEFAULT_CORPUS, emit_json, load_corpus, print_table

IDS = {"owner_id": "bench", "workflow_id": "dehydrate", "execution_id": "throughput"}


def airline_field(docs: list[dict[str, Any]], megabytes: float) -> list[dict[str, Any]]:
    from analemma_sdk.statebag.canonical import value_json

    field: list[dict[str, Any]] = []
    size = 0
    while size < megabytes * 1e6:
        doc = docs[len(field) % len(docs)]
        field.append(doc)
        size += len(value_json(doc)) + 1
    return field


def numeric_field(megabytes: float) -> dict[str, Any]:
    rng = random.Random(2026)
    rows: list[dict[str, Any]] = []
    size = 0
    while size < megabytes * 1e6:
        t = len(rows)
        row = {
            "t": t,
            "v": None if rng.random() < 0.1 else round(rng.gauss(20.0, 5.0), 6),
            "q": [rng.random() for _ in range(4)],
            "ok": rng.random() < 0.9,
        }
        rows.append(row)
        size += 110
    return {"sensor": "bench-1", "unit": "C", "rows": rows}


CLOCKS = {"cpu": time.thread_time, "wall": time.perf_counter}
clock = CLOCKS["cpu"]


def timed(run: Callable[[], object], prepare: Callable[[], object] | None = None) -> float:
    """One warm-up run, then one timed run (``prepare`` before each, untimed)."""
    if prepare is not None:
        prepare()
    run()
    if prepare is not None:
        prepare()
    started = clock()
    run()
    return clock() - started


def measure_field(value: Any, fields: list[str], reps: int, store_root: Path) -> dict[str, Any]:
    import zstandard

    from analemma_sdk.statebag import LocalFolderStore, StateHydrator, canonical
    from analemma_sdk.statebag.codec import ZSTD, Compressor
    from analemma_sdk.statebag.keys import pack_key
    from analemma_sdk.statebag.packs import build_pack

    raw = canonical.value_json(value)
    zstd3 = zstandard.ZstdCompressor(level=3, write_content_size=True)
    compressor = Compressor(ZSTD, 3)
    has_null = b"null" in raw
    stores: list[LocalFolderStore] = []

    def fresh_store() -> None:
        # A folder of its own for each run: a pack written over an earlier copy of itself
        # costs a file system flush (ext4 replace-by-rename) that a new pack does not.
        shutil.rmtree(store_root, ignore_errors=True)
        stores[:] = [LocalFolderStore(store_root)]

    def core() -> None:
        encoded = canonical.value_json(value)
        digest = canonical.sha256_hex(encoded)
        pack = build_pack([(digest, len(encoded), compressor.encode(encoded))])
        stores[0].put(pack_key(IDS["owner_id"], pack.digest), pack.data)

    search = canonical._has_non_finite
    orjson = canonical._load_orjson()
    encode: Callable[[], object] = (
        (lambda: orjson.dumps(value)) if orjson is not None else (lambda: canonical.value_json(value))
    )

    def core_walk() -> None:
        canonical._has_non_finite = canonical._walk_non_finite  # type: ignore[assignment]  # same signature
        try:
            core()
        finally:
            canonical._has_non_finite = search  # type: ignore[assignment]  # see above

    hydrators: list[StateHydrator] = []

    def fresh_hydrator() -> None:
        # Nothing remembered as stored: the value is written again, as a new value would be.
        fresh_store()
        hydrators[:] = [StateHydrator(use_batching=True, use_zstd=True, store=stores[0])]

    def dehydrate(name: str) -> Callable[[], None]:
        def run() -> None:
            hydrators[0].dehydrate({name: value, "step": 1}, **IDS)

        return run

    programs: dict[str, tuple[Callable[[], object], Callable[[], object] | None]] = {
        "zstd-3": (lambda: zstd3.compress(raw), None),
        "core": (core, fresh_store),
        "core, walk": (core_walk, fresh_store),
        **{f"dehydrate {name}": (dehydrate(name), fresh_hydrator) for name in fields},
        "search": (lambda: canonical._has_non_finite(value), None),
        "walk": (lambda: canonical._walk_non_finite(value), None),
        "encode": (encode, None),
        "sha256": (lambda: canonical.sha256_hex(raw), None),
    }
    times: dict[str, list[float]] = {name: [] for name in programs}
    for _ in range(reps):
        for name, (run, prepare) in programs.items():  # interleaved: drift hits all alike
            times[name].append(timed(run, prepare))
    medians = {name: statistics.median(values) for name, values in times.items()}
    fastest = {name: min(values) for name, values in times.items()}
    zstd_s = medians["zstd-3"]
    return {
        "mb": round(len(raw) / 1e6, 2),
        "null_in_json": has_null,
        "zstd3_mb_s": round(len(raw) / zstd_s / 1e6, 1),
        # Throughput over zstd-3's: zstd's time over the program's (medians; and the fastest
        # runs', less disturbed by other load on the machine).
        "ratio": {name: round(zstd_s / seconds, 3) for name, seconds in medians.items() if name != "zstd-3"},
        "ratio_fastest": {
            name: round(fastest["zstd-3"] / seconds, 3)
            for name, seconds in fastest.items()
            if name != "zstd-3"
        },
        "mb_s": {name: round(len(raw) / seconds / 1e6, 1) for name, seconds in medians.items()},
    }


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    docs = load_corpus(args.corpus)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for megabytes in args.sizes:
            results[f"airline {megabytes:g} MB"] = measure_field(
                airline_field(docs, megabytes), args.field, args.reps, Path(tmp) / "store"
            )
        results["numeric 2 MB"] = measure_field(numeric_field(2), args.field, args.reps, Path(tmp) / "store")
    return results


def stdlib_only() -> None:
    """Hide orjson from the engine, as on an install without the ``fast`` extra."""
    from analemma_sdk.statebag import canonical

    sys.modules["orjson"] = None  # type: ignore[assignment]  # import fails as if not installed
    canonical._orjson, canonical._orjson_checked = None, True


def walk_only() -> None:
    """The NaN/Infinity search as it was: the pure-Python walk on every value with a null."""
    from analemma_sdk.statebag import canonical

    canonical._has_non_finite = canonical._walk_non_finite  # type: ignore[assignment]  # same signature


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", type=float, nargs="+", default=[1.0, 2.0, 8.0], help="airline field sizes, MB"
    )
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--field", nargs="+", default=["messages", "document"], help="state field names")
    parser.add_argument("--stdlib", action="store_true", help="the standard library only (no orjson)")
    parser.add_argument("--search", choices=["fast", "walk"], default="fast", help="walk: the search before")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    parser.add_argument(
        "--clock", choices=sorted(CLOCKS), default="cpu", help="the thread's CPU time, or wall"
    )
    parser.add_argument("--no-stdlib-run", action="store_true", help="skip the standard-library child run")
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]

    if args.search == "walk":
        walk_only()
    if args.stdlib:
        stdlib_only()
        print(json.dumps(run_all(args), sort_keys=True))
        return
    encoders = {"orjson": run_all(args)}
    if not args.no_stdlib_run:
        child = [
            sys.executable,
            __file__,
            "--stdlib",
            "--reps",
            str(max(3, args.reps // 2)),
            "--clock",
            args.clock,
        ]
        child += ["--sizes", *map(str, args.sizes), "--corpus", str(args.corpus), "--field", *args.field]
        done = subprocess.run(child, capture_output=True, text=True, check=True, env=dict(os.environ))
        encoders["stdlib"] = json.loads(done.stdout.strip().splitlines()[-1])

    if not args.json_only:
        print(
            f"median of {args.reps} interleaved runs each, single thread, {args.clock} time, {sys.executable}"
        )
        programs = ["core", "core, walk", *(f"dehydrate {name}" for name in args.field), "search", "walk"]
        programs += ["encode", "sha256"]
        rows = []
        for encoder, results in encoders.items():
            for field, result in results.items():
                rows.append(
                    [
                        encoder,
                        field,
                        result["mb"],
                        result["zstd3_mb_s"],
                        *(result["ratio"][p] for p in programs),
                    ]
                )
        print_table(["encoder", "field", "MB", "zstd-3 MB/s", *(f"{p} / zstd" for p in programs)], rows)
        print(
            "x / zstd: throughput of x over zstd-3's on the same bytes "
            "(search, walk, encode, sha256: that part alone)"
        )
    emit_json({"reps": args.reps, "search": args.search, "clock": args.clock, "encoders": encoders})


if __name__ == "__main__":
    main()
