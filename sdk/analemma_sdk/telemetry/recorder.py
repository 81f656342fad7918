"""The in-memory recorder: what happened since the last batch, in bounded memory.

Most evaluations are counted where they happen, in the compiled flag's per-outcome tallies
(``flags.tally``: a counter call, and the unit's bucketing hash into a sketch); a batch takes
them (``tallies``, the flag client's compiled flags). The rest (an unknown flag, a type
mismatch, a stale document, ``evaluation()``) are one ``list.append`` each of (flag, (value,
variant, reason), bucketing text of the unit): atomic under the GIL, no lock, no hashing.
Every ``FOLD_AT`` of those, and when a batch is taken, the log is counted at C speed
(``_collections._count_elements``, what ``Counter`` counts with) into per-(flag, variant,
value, reason) counts, and each key's units are hashed into its sketch (version 2, see
``hll``), once per distinct unit.

Hydrator cohorts keep counters and log2 latency histograms. The engine's process warnings
(``statebag.metrics``: 2PC, zstd or the flag set unavailable) ride with the cohort that was
busiest in the batch's window (with one hydrator per process, its own). Past the caps
(distinct keys, cohorts) an event is not kept but counted in ``dropped``, which the next batch
reports.
"""

from __future__ import annotations

import _thread
import sys
import time

from ..bucketing import bucket_hashes, sketch_add
from .hll import M, merge_into
from .wire import (
    MAX_COHORT_KEYS,
    MAX_COUNTER,
    SDK_NAME,
    WIRE_VERSION,
    batch_id,
    cohort_item,
    evaluation_items,
    json_key,
    tag_problem,
)

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

__all__ = ["Cohort", "Recorder", "latency_bucket"]

MAX_EVALUATION_KEYS = 512  # the wire's limit per batch
MAX_COHORTS = 64  # the wire's limit per batch
FOLD_AT = 256  # logged evaluations counted at once (see above: short beats long here)
LATENCY_BUCKETS = 17  # upper bounds 1, 2, 4, ... 65536 ms
_count_elements: Any = __import__("_collections")._count_elements  # what Counter counts with


def latency_bucket(ns: int) -> int:
    """Index of the log2 bucket that holds a duration: bucket i holds ``<= 2**i`` ms (the
    first also everything under 1 ms, the last everything over 32 s)."""
    ms = -(-ns // 1_000_000)  # whole milliseconds, rounded up
    return min((ms - 1).bit_length(), LATENCY_BUCKETS - 1) if ms > 1 else 0


class Cohort:
    """One hydrator configuration's counters and latency histograms, bumped by the hydrator
    under the recorder's lock. A batch takes its dicts and leaves empty ones; the entry itself
    stays, so a hydrator keeps its reference."""

    __slots__ = ("cohort", "counters", "latency", "lock", "overflow")

    def __init__(self, cohort: dict[str, Any], lock: Any, overflow: bool = False) -> None:
        self.cohort = cohort
        self.counters: dict[str, int] = {}
        self.latency: dict[str, list[int]] = {}
        self.lock = lock
        self.overflow = overflow  # past the cohort cap: counted, then reported as dropped

    def add(self, name: str, amount: int = 1) -> None:
        with self.lock:
            counters = self.counters
            counters[name] = counters.get(name, 0) + amount

    def add2(self, name: str, amount: int, other: str, other_amount: int) -> None:
        with self.lock:
            counters = self.counters
            counters[name] = counters.get(name, 0) + amount
            counters[other] = counters.get(other, 0) + other_amount

    def observe(self, name: str, ns: int) -> None:
        with self.lock:
            histogram = self.latency.get(name)
            if histogram is None:
                histogram = self.latency[name] = [0] * LATENCY_BUCKETS
            histogram[latency_bucket(ns)] += 1


def _cohort_key(cohort: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The cohort as the wire carries it: a tag the service would refuse (and with it the
    whole batch, every flag evaluation included) is left out, with a warning; a value of
    another type is reported as its text."""
    flat: dict[str, Any] = {}
    for name, value in cohort.items():
        if not (value is None or isinstance(value, bool | int | str)):
            value = str(value)
        problem = tag_problem(name, value)
        if problem is not None:
            _warn_tag(name, problem)
        elif len(flat) < MAX_COHORT_KEYS:
            flat[name] = value
    return tuple(sorted(flat.items()))


_warned: set[str] = set()


def _warn_tag(name: Any, problem: str) -> None:
    """Say once per tag name (a hydrator's cohort is keyed again each time it is built)."""
    label = repr(name)[:80]
    if label in _warned or len(_warned) >= 64:
        return
    _warned.add(label)
    import logging  # only when there is something to say

    logging.getLogger("analemma_sdk.telemetry").warning(
        "cohort tag %s left out of telemetry: %s", label, problem
    )


class Recorder:
    """Thread-safe; ``snapshot_and_reset()`` takes everything recorded as one wire body."""

    def __init__(
        self,
        *,
        units: bool = True,
        max_keys: int = MAX_EVALUATION_KEYS,
        max_cohorts: int = MAX_COHORTS,
        fold_at: int = FOLD_AT,
        sdk_version: str = "",
        log: list[tuple[Any, ...]] | None = None,
        tallies: Callable[[], list[Any]] | None = None,
    ) -> None:
        """``log``: the list evaluations are appended to (the flag client's own, which it
        fills before this module is loaded). ``tallies``: the compiled flags
        (``flags.document.CompiledFlag``) whose tallies a batch takes, called once per batch."""
        self._lock = _thread.allocate_lock()
        self.track_units = bool(units)
        self.max_keys = max_keys
        self.max_cohorts = max_cohorts
        self.fold_at = fold_at
        self.log: list[tuple[Any, ...]] = log if log is not None else []
        self._tallies = tallies
        self.sdk_version = sdk_version
        self._counts: dict[tuple[Any, ...], int] = {}
        self._sketches: dict[tuple[Any, ...], bytearray] = {}
        self._cohorts: dict[tuple[tuple[str, Any], ...], Cohort] = {}
        self._overflow = Cohort({}, self._lock, overflow=True)
        self.dropped = 0
        self._started: float | None = None

    # Evaluations ---------------------------------------------------------------------
    def evaluation(self, flag: str, variant: str | None, value: Any, reason: str, unit: str | None) -> None:
        """Count one evaluation of ``flag`` (a flag with no salt nor seed, for the sketch)."""
        log = self.log
        text = f"{flag}..{unit}" if unit is not None and self.track_units else None
        log.append((flag, (value, variant, reason), text))
        if len(log) >= self.fold_at:
            self.fold()

    def fold(self, *, tallies: bool = False) -> None:
        """Count the logged evaluations, and hash their units into their keys' sketches.
        Evaluations logged meanwhile stay in the log for the next fold. ``tallies``: take the
        compiled flags' tallies too."""
        with self._lock:
            self._fold()
            if tallies:
                self._harvest()

    def add_dropped(self, n: int) -> None:
        """Count ``n`` events as dropped (the sender, for a batch it could not deliver)."""
        with self._lock:
            self.dropped += n

    def _keep(self, key: tuple[Any, ...], n: int) -> bool:
        """Add ``n`` evaluations to ``key``; False when the key is over the cap (dropped)."""
        counts = self._counts
        count = counts.get(key)
        if count is None:
            if len(counts) >= self.max_keys:
                self.dropped += n
                return False
            self.touch()
            count = 0
        counts[key] = count + n
        return True

    def _registers(self, key: tuple[Any, ...]) -> bytearray:
        registers = self._sketches.get(key)
        if registers is None:
            registers = self._sketches[key] = bytearray(M)
        return registers

    def _fold(self) -> None:
        log = self.log
        if not log:
            return
        events = log.copy()
        del log[: len(events)]  # not log.clear(): what was appended since the copy stays
        by_key: dict[tuple[Any, ...], list[str]] = {}
        tally, unfit = _tally(events)
        self.dropped += unfit
        for event, n in tally.items():
            outcome = event[1]
            key = (event[0], outcome[1], outcome[0], outcome[2])
            if self._keep(key, n) and event[2] is not None:
                by_key.setdefault(key, []).append(event[2])
        for key, texts in by_key.items():
            sketch_add(self._registers(key), bucket_hashes(texts))

    def _harvest(self) -> None:
        """Take the compiled flags' tallies into the counts and sketches."""
        if self._tallies is None:
            return
        # Tallies keep no time: the window opens when their counts are first taken (``_keep``
        # touches it), not at the last harvest, which may be hours ago in an idle process.
        for flag in self._tallies():
            for tally in flag.tallies:
                n, registers = tally.take()
                if not n:
                    continue
                value, variant, reason = tally.outcome
                if isinstance(value, dict | list):
                    value = json_key(value)
                key = (flag.key, variant, value, reason)
                if self._keep(key, n) and registers is not None:
                    mine = self._sketches.get(key)
                    if mine is None:
                        self._sketches[key] = registers
                    else:
                        merge_into(mine, registers)

    # Cohorts -------------------------------------------------------------------------
    def cohort(self, cohort: Mapping[str, Any]) -> Cohort:
        """The entry of one configuration cohort; past the cap, the overflow entry (its events
        are reported as dropped)."""
        key = _cohort_key(cohort)
        with self._lock:
            entry = self._cohorts.get(key)
            if entry is None:
                if len(self._cohorts) >= self.max_cohorts:
                    return self._overflow
                entry = self._cohorts[key] = Cohort(dict(key), self._lock)
            return entry

    def touch(self) -> None:
        """Mark the window open (the first event after a batch was taken)."""
        if self._started is None:
            self._started = time.time()

    # Batches -------------------------------------------------------------------------
    def snapshot_and_reset(self) -> dict[str, Any] | None:
        """Everything recorded since the last call, as a wire body (v1); None when there is
        nothing to report. Counters start again from zero."""
        with self._lock:
            self._fold()
            self._harvest()
            counts, self._counts = self._counts, {}
            sketches, self._sketches = self._sketches, {}
            dropped, self.dropped = self.dropped, 0
            started, self._started = self._started, None
            cohorts = []
            for entry in self._cohorts.values():
                if entry.counters or entry.latency:
                    cohorts.append((entry.cohort, entry.counters, entry.latency))
                    entry.counters, entry.latency = {}, {}
            overflow = self._overflow
            dropped += _events(overflow.counters)
            overflow.counters, overflow.latency = {}, {}
            self._add_warnings(cohorts)
        if not counts and not cohorts and not dropped:
            return None
        evaluations, unfit = evaluation_items(counts, sketches)
        now = time.time()
        return {
            "v": WIRE_VERSION,
            "batch": batch_id(),
            "sent_at": now,
            "window": [min(started, now) if started is not None else now, now],
            "sdk": {"name": SDK_NAME, "version": self.sdk_version},
            "dropped": min(dropped + unfit, MAX_COUNTER),
            "evaluations": evaluations,
            "statebag": [cohort_item(*cohort) for cohort in cohorts],
        }

    def _add_warnings(self, cohorts: list[tuple[dict[str, Any], dict[str, int], Any]]) -> None:
        """File the engine's warnings since the last batch under the busiest cohort of this
        one (or the only cohort this recorder knows); with none, they wait for a batch that
        has one (another sink's, a write key's, may)."""
        metrics = sys.modules.get("analemma_sdk.statebag.metrics")  # not loaded: nothing to say
        if metrics is None:
            return
        warnings = metrics.take_unreported()
        if not warnings:
            return
        if not cohorts and len(self._cohorts) == 1:
            (entry,) = self._cohorts.values()
            cohorts.append((entry.cohort, {}, {}))
        if not cohorts:
            metrics.untake(warnings)
            return
        counters = max(cohorts, key=lambda cohort: cohort[1].get("executions", 0))[1]
        for name, amount in warnings.items():
            counters[name] = counters.get(name, 0) + amount

    def restore(self, body: Mapping[str, Any]) -> None:
        """Put an undelivered batch's counts back, to go out with the next one. The caps hold:
        what no longer fits is counted as dropped. The window is the next batch's own: the old
        start would age the new counts (the service files a batch by its window's end anyway)."""
        with self._lock:
            self.touch()
            self.dropped += int(body.get("dropped") or 0)
            for item in body.get("evaluations") or ():
                self._restore_evaluation(item)
            for item in body.get("statebag") or ():
                self._restore_cohort(item)

    def _restore_evaluation(self, item: Mapping[str, Any]) -> None:
        value = item["value"]
        key = (
            item["flag"],
            item["variant"],
            json_key(value) if isinstance(value, dict | list) else value,
            item["reason"],
        )
        counts = self._counts
        if key not in counts and len(counts) >= self.max_keys:
            self.dropped += item["count"]
            return
        counts[key] = counts.get(key, 0) + item["count"]
        if item.get("units"):
            import binascii  # builtin

            # This recorder's own batch: a version byte (2), then the registers.
            merge_into(self._registers(key), binascii.a2b_base64(item["units"])[1:])

    def _restore_cohort(self, item: Mapping[str, Any]) -> None:
        key = _cohort_key(item["cohort"])
        entry = self._cohorts.get(key)
        if entry is None:
            if len(self._cohorts) >= self.max_cohorts:
                self.dropped += _events(item["counters"])
                return
            entry = self._cohorts[key] = Cohort(dict(key), self._lock)
        for name, amount in item["counters"].items():
            if amount:
                entry.counters[name] = entry.counters.get(name, 0) + amount
        for name, pairs in (item.get("latency_ms") or {}).items():
            histogram = entry.latency.setdefault(name, [0] * LATENCY_BUCKETS)
            for bound, n in pairs:
                histogram[min(int(bound).bit_length() - 1, LATENCY_BUCKETS - 1)] += n

    def forget(self) -> None:
        """Drop everything recorded, with fresh locks: a forked child's copy belongs to its
        parent, which reports it (and a lock held at the fork would stay held)."""
        self._lock = _thread.allocate_lock()
        del self.log[:]
        self._counts, self._sketches = {}, {}
        self.dropped = 0
        self._started = None
        for entry in (*self._cohorts.values(), self._overflow):
            entry.lock = self._lock
            entry.counters, entry.latency = {}, {}

    def __len__(self) -> int:
        """Distinct evaluation keys held now."""
        return len(self._counts)


def _tally(events: list[tuple[Any, ...]]) -> tuple[dict[tuple[Any, ...], int], int]:
    """How many times each logged evaluation occurs (at C speed; repeats cost one entry), and
    how many could not be counted (an unhashable value that is not JSON: dropped)."""
    tally: dict[tuple[Any, ...], int] = {}
    unfit = 0
    try:
        _count_elements(tally, events)
    except TypeError:  # an unhashable (JSON object or list) value: count those by encoding
        tally = {}
        for event in events:
            try:
                hash(event)
            except TypeError:
                value, variant, reason = event[1]
                try:
                    event = (event[0], (json_key(value), variant, reason), event[2])
                except (TypeError, ValueError, RecursionError):
                    unfit += 1  # not a JSON value: nothing the wire can carry
                    continue
            tally[event] = tally.get(event, 0) + 1
    return tally, unfit


def _events(counters: Mapping[str, int]) -> int:
    """How many hydrator events a cohort's counters stand for (hydrations and dehydrations)."""
    return int(counters.get("hydrations", 0)) + int(counters.get("dehydrations", 0))
