"""Local evaluation speed: a 25 % rollout flag over 100,000 distinct unit ids, one thread.

    python bench/flag_eval.py [--units 100000] [--rounds 7]

Each round evaluates every unit once through ``FlagClient.bool`` (the public call, with its
freshness check); the median round gives ns per evaluation. ``fraction_on`` is the share of
units in the rollout. Prints a table, then JSON as the last line."""

from __future__ import annotations

import argparse
import statistics
import time

from _common import emit_json, print_table

from analemma_sdk import FlagClient
from analemma_sdk.flags.spec import flag_set_document, flag_spec


def document(percentage: float) -> dict:
    flag = flag_spec("boolean", False, enabled=True, value=True, percentage=percentage)
    return flag_set_document("prod", 1, {"new_checkout": flag})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--percentage", type=float, default=25.0)
    args = parser.parse_args()
    client = FlagClient(
        "http://127.0.0.1:9",  # never contacted: the bootstrap is fresh for the whole run
        "ask_prod_" + "x" * 43,
        ttl=3600,
        cache_path=None,
        bootstrap={"document": document(args.percentage), "fetched_at": time.time()},
    )
    units = [f"exec-{i:08d}" for i in range(args.units)]
    evaluate = client.bool
    rounds = []
    on = 0
    for _ in range(args.rounds):
        on = 0
        started = time.perf_counter_ns()
        for unit in units:
            if evaluate("new_checkout", unit=unit, default=False):
                on += 1
        rounds.append((time.perf_counter_ns() - started) / len(units))
    assert client.status.state == "ready", client.status
    ns = statistics.median(rounds)
    fraction = on / len(units)
    print(f"{args.units:,} distinct units, {args.rounds} rounds, {args.percentage}% rollout")
    print_table(
        ["measure", "value"],
        [
            ["ns per eval (median round)", round(ns, 1)],
            ["ns per eval (best round)", round(min(rounds), 1)],
            ["fraction on", round(fraction, 5)],
        ],
    )
    emit_json({"ns_per_eval": round(ns, 1), "fraction_on": round(fraction, 5)})


if __name__ == "__main__":
    main()
