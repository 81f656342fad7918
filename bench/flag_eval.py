"""Local evaluation speed: a 25 % rollout flag over 100,000 distinct unit ids, one thread,
with telemetry off and on in the same run.

    python bench/flag_eval.py [--units 100000] [--rounds 7]

Each round evaluates every unit once through ``FlagClient.bool`` (the public call, with its
freshness check) on three clients: telemetry off, telemetry on with counts only
(``telemetry_units=False``) and telemetry on with counts and the distinct-unit sketch (the
default). The clients take turns slice by slice within a round, so they share the machine's
load; the median round gives ns per evaluation, and each ratio is the median of the rounds'
on/off ratios (``*_min``: the best round's). Every unit here is new to its sketch in the first
round; the sketch takes each unit's bucketing hash, which the evaluation computed anyway.
``flush_us`` is what one flush costs without the network: taking the tallies, counting what is
logged, and encoding one batch of one round's evaluations. ``units_error`` is how far the
batch's distinct-unit estimates (rolled out and not, summed) are from the true count, as a
fraction (the standard error is 6.5 %). ``fraction_on`` is the share of units in the rollout.
Prints a table, then JSON as the last line."""

from __future__ import annotations

import argparse
import statistics
import time

from _common import emit_json, print_table

from analemma_sdk import FlagClient
from analemma_sdk.flags.spec import flag_set_document, flag_spec
from analemma_sdk.telemetry.hll import Sketch

FLAG = "new_checkout"


def document(percentage: float) -> dict:
    flag = flag_spec("boolean", False, enabled=True, value=True, percentage=percentage)
    return flag_set_document("prod", 1, {FLAG: flag})


def client(percentage: float, **telemetry: bool) -> FlagClient:
    return FlagClient(
        "http://127.0.0.1:9",  # never contacted: the bootstrap is fresh for the whole run
        "ask_prod_" + "x" * 43,
        ttl=3600,
        cache_path=None,
        bootstrap={"document": document(percentage), "fetched_at": time.time()},
        **telemetry,
    )


def one_round(
    clients: dict[str, FlagClient], units: list[str], turn: int, slices: int = 20
) -> dict[str, float]:
    """ns per evaluation of each client over every unit. The clients take turns slice by
    slice, so a burst of load elsewhere on the machine falls on all of them alike."""
    spent = dict.fromkeys(clients, 0)
    names = list(clients)
    size = -(-len(units) // slices)
    for index in range(slices):
        part = units[index * size : (index + 1) * size]
        shift = (turn + index) % len(names)
        for name in names[shift:] + names[:shift]:
            evaluate = clients[name].bool
            started = time.perf_counter_ns()
            for unit in part:
                evaluate(FLAG, unit=unit, default=False)
            spent[name] += time.perf_counter_ns() - started
    return {name: total / len(units) for name, total in spent.items()}


def flush_cost(percentage: float, units: list[str], repeat: int = 5) -> float:
    """Microseconds to turn one round's counted evaluations into an encoded batch (median)."""
    from analemma_sdk.telemetry.sender import split
    from analemma_sdk.telemetry.wire import encode

    costs = []
    for _ in range(repeat):
        measured = client(percentage, telemetry=True)
        for unit in units:
            measured.bool(FLAG, unit=unit, default=False)
        sink = measured.telemetry_sink()
        assert sink is not None
        started = time.perf_counter_ns()
        body = sink.recorder.snapshot_and_reset()
        assert body is not None
        for part in split(body):
            encode(part)
        costs.append((time.perf_counter_ns() - started) / 1000)
        assert sum(item["count"] for item in body["evaluations"]) == len(units)
    return statistics.median(costs)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--percentage", type=float, default=25.0)
    args = parser.parse_args()
    clients = {
        "off": client(args.percentage, telemetry=False),
        "counts_only": client(args.percentage, telemetry=True, telemetry_units=False),
        "on": client(args.percentage, telemetry=True, telemetry_units=True),
    }
    units = [f"exec-{i:08d}" for i in range(args.units)]
    rounds: dict[str, list[float]] = {name: [] for name in clients}
    for index in range(args.rounds):
        for name, ns_per_eval in one_round(clients, units, index).items():
            rounds[name].append(ns_per_eval)
    evaluate = clients["off"].bool
    on = sum(1 for unit in units if evaluate(FLAG, unit=unit, default=False))
    for each in clients.values():
        assert each.status.state == "ready", each.status
    sink = clients["on"].telemetry_sink()
    assert sink is not None and clients["off"].telemetry_sink() is None
    recorded = sink.recorder.snapshot_and_reset()
    assert (
        recorded is not None and sum(i["count"] for i in recorded["evaluations"]) == args.units * args.rounds
    )
    estimated = sum(Sketch.from_base64(item["units"]).estimate() for item in recorded["evaluations"])
    units_error = abs(estimated - args.units) / args.units
    ns = {name: statistics.median(values) for name, values in rounds.items()}

    def ratios(name: str) -> list[float]:
        return [a / b for a, b in zip(rounds[name], rounds["off"], strict=True)]

    def ratio(name: str) -> float:
        return statistics.median(ratios(name))

    flush_us = flush_cost(args.percentage, units)
    fraction = on / len(units)
    print(f"{args.units:,} distinct units, {args.rounds} rounds, {args.percentage}% rollout")
    print_table(
        ["measure", "value"],
        [
            ["ns per eval, telemetry off (median round)", round(ns["off"], 1)],
            ["ns per eval, telemetry off (best round)", round(min(rounds["off"]), 1)],
            ["ns per eval, telemetry counts only (median round)", round(ns["counts_only"], 1)],
            ["ns per eval, telemetry counts + units (median round)", round(ns["on"], 1)],
            [
                "telemetry counts only / off (median, min)",
                f"{ratio('counts_only'):.3f}, {min(ratios('counts_only')):.3f}",
            ],
            ["telemetry counts + units / off (median, min)", f"{ratio('on'):.3f}, {min(ratios('on')):.3f}"],
            [f"one flush of {args.units:,} evaluations, us (no network)", round(flush_us, 1)],
            ["distinct-unit estimate error", round(units_error, 4)],
            ["fraction on", round(fraction, 5)],
        ],
    )
    emit_json(
        {
            "ns_per_eval": round(ns["off"], 1),
            "ns_per_eval_telemetry": round(ns["on"], 1),
            "ns_per_eval_telemetry_counts_only": round(ns["counts_only"], 1),
            "telemetry_ratio": round(ratio("on"), 3),
            "telemetry_counts_only_ratio": round(ratio("counts_only"), 3),
            "telemetry_ratio_min": round(min(ratios("on")), 3),
            "telemetry_counts_only_ratio_min": round(min(ratios("counts_only")), 3),
            "flush_us": round(flush_us, 1),
            "units_error": round(units_error, 4),
            "fraction_on": round(fraction, 5),
        }
    )


if __name__ == "__main__":
    main()
