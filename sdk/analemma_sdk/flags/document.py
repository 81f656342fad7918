"""The flag-set document an SDK evaluates: checked once when it arrives, compiled into flags
that evaluate in about a microsecond, with the same bucketing as the server.

Evaluation of one flag for a unit (an execution id by default) and its attributes:

1. off (the kill switch) -> the flag's default, reason ``off``;
2. a unit listed in a target -> the target's value, reason ``targeted``;
3. the first attribute rule that matches -> the rule's value, reason ``targeted``;
4. weighted variants -> the variant holding the unit's bucket, reason ``rollout``;
5. a percentage -> the flag's value when the bucket is below it, reason ``rollout``;
   otherwise the default, reason ``default``.

The bucketing key is the attribute named by ``bucket_by``; ``execution_id`` (the default) is
the ``unit`` argument. With no bucketing key a unit is only in a 100 % rollout. A boolean flag
switched on with no value serves ``True``.
"""

from __future__ import annotations

import _thread
from collections.abc import Mapping

from ..bucketing import bucket_hash, sketch_add, variant_index

# DOCUMENT_FORMAT, KINDS and RULE_OPS were defined here before spec.py owned them.
from .spec import DOCUMENT_FORMAT, KINDS, RULE_OPS, UNIT_ATTRIBUTE, InvalidDocumentError, check_document
from .tally import Tally, rank_table

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "DOCUMENT_FORMAT",
    "KINDS",
    "RULE_OPS",
    "CompiledFlag",
    "FlagDetails",
    "FlagSet",
    "InvalidDocumentError",
]

OFF = "off"
TARGETED = "targeted"
ROLLOUT = "rollout"
DEFAULT = "default"
ERROR = "error"
STALE = "stale"

# Error codes, as OpenFeature names them.
FLAG_NOT_FOUND = "FLAG_NOT_FOUND"
TYPE_MISMATCH = "TYPE_MISMATCH"
PROVIDER_NOT_READY = "PROVIDER_NOT_READY"
GENERAL = "GENERAL"

_LONG_SCALE = float(0xFFFFFFFFFFFFFFF)  # bucketing's: bucket_hash / this = bucket_value
_RANKS = b""  # tally.rank_table(), made when a flag is first compiled with the unit sketch
_compiling = _thread.allocate_lock()  # two threads' first counted evaluations make one set


class FlagDetails:
    """What one evaluation returned and why. ``variant`` is the index of the A/B variant
    served (as a string), when there was one; ``error`` is an error code with reason
    ``error``."""

    __slots__ = ("key", "value", "variant", "reason", "revision", "error")

    def __init__(
        self,
        key: str,
        value: Any,
        reason: str,
        revision: int | None,
        variant: str | None = None,
        error: str | None = None,
    ) -> None:
        self.key = key
        self.value = value
        self.variant = variant
        self.reason = reason
        self.revision = revision
        self.error = error

    def _fields(self) -> tuple[Any, ...]:
        return (self.key, self.value, self.variant, self.reason, self.revision, self.error)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FlagDetails) and self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable value

    def __repr__(self) -> str:
        return (
            f"FlagDetails(key={self.key!r}, value={self.value!r}, variant={self.variant!r}, "
            f"reason={self.reason!r}, revision={self.revision!r}, error={self.error!r})"
        )


def _matches(op: str, actual: Any, values: list[Any]) -> bool:
    if op == "in":
        return actual in values
    if op == "not_in":
        return actual not in values
    if not isinstance(actual, str):
        return False
    if op == "starts_with":
        return any(isinstance(v, str) and actual.startswith(v) for v in values)
    if op == "ends_with":
        return any(isinstance(v, str) and actual.endswith(v) for v in values)
    return any(isinstance(v, str) and v in actual for v in values)  # contains


class CompiledFlag:
    """One flag, compiled for evaluation from a spec ``spec.check_flag`` has accepted."""

    __slots__ = (
        "key",
        "kind",
        "default",
        "enabled",
        "value",
        "fraction",
        "weights",
        "variant_values",
        "targets",
        "rules",
        "bucket_by",
        "salt",
        "seed",
        "_off",
        "_on",
        "_default",
        "_variants",
        "tallies",
        "_units",
        "_tally_of",
        "_on_tally",
        "_default_tally",
        "_variant_tallies",
        "_bucketed",
    )

    def __init__(self, key: str, spec: Mapping[str, Any], telemetry: str | None = None) -> None:
        """``telemetry``: None counts nothing; ``"counts"`` or ``"units"`` keeps a tally per
        outcome (``tally.Tally``) that ``counted()`` adds to, with the unit sketch or without."""
        self.key = key
        self.kind = spec["kind"]
        self.default = spec["default"]
        self.enabled = spec["enabled"]
        value = spec.get("value")
        if value is None:
            value = True if self.kind == "boolean" else self.default
        self.value = value
        self.fraction = spec.get("percentage", 100) / 100.0
        variants = spec.get("variants") or []
        self.weights = tuple(v["weight"] for v in variants)
        self.variant_values = tuple(v["value"] for v in variants)
        # Each outcome is one tuple, made here and handed out by evaluate(): an evaluation
        # allocates none, and telemetry counts identical objects (compared by identity).
        self._off = (self.default, None, OFF)
        self._on = (self.value, None, ROLLOUT)
        self._default = (self.default, None, DEFAULT)
        self._variants = tuple((v, str(i), ROLLOUT) for i, v in enumerate(self.variant_values))
        self.targets: dict[str, tuple[Any, None, str]] = {}  # unit -> its outcome
        for target in spec.get("targets") or []:
            outcome = (target["value"], None, TARGETED)
            for unit in target["units"]:
                self.targets.setdefault(str(unit), outcome)  # the first target wins
        self.rules = tuple(
            (rule["attribute"], rule["op"], list(rule["values"]), (rule["value"], None, TARGETED))
            for rule in spec.get("rules") or []
        )
        self.bucket_by = spec.get("bucket_by") or UNIT_ATTRIBUTE
        self.salt = spec.get("salt") or ""
        self.seed = spec.get("seed")
        self.tallies: tuple[Tally, ...] = ()
        self._units = telemetry == "units"
        self._tally_of: dict[int, Tally] | None = None  # made by the first counted()
        self._bucketed = False

    def _compile_tallies(self) -> None:
        """The tallies, once (the flag's first counted evaluation, whichever thread)."""
        global _RANKS
        with _compiling:
            if self._tally_of is not None:
                return
            if self._units and not _RANKS:
                _RANKS = rank_table()
            self._make_tallies(self._units)

    def _make_tallies(self, units: bool) -> None:
        prefix = f"{self.seed}." if self.seed is not None else f"{self.key}.{self.salt}."
        outcomes = [self._off, self._on, self._default, *self._variants, *self.targets.values()]
        outcomes += [rule[3] for rule in self.rules]
        tally_of = {id(o): Tally(o, prefix, units) for o in outcomes}
        self.tallies = tuple(tally_of.values())
        self._on_tally = tally_of[id(self._on)]
        self._default_tally = tally_of[id(self._default)]
        self._variant_tallies = tuple(tally_of[id(o)] for o in self._variants)
        # Set last, in this order: a thread that sees either finds the tallies it needs.
        self._tally_of = tally_of
        # Whether counted() may bucket by itself: the unit is the bucketing key and nothing
        # (the kill switch, targets, rules) comes before the bucketing.
        self._bucketed = (
            self.enabled and not self.targets and not self.rules and self.bucket_by == UNIT_ATTRIBUTE
        )

    def counted(self, unit: str | None, attributes: Mapping[str, Any] | None) -> tuple[Any, str | None, str]:
        """``evaluate()``, counted into the outcome's tally (made by the flag's first counted
        evaluation: a flag set compiles as fast with telemetry as without, and a cold start
        evaluates few of its flags). A bucketed unit's hash feeds the sketch as it is."""
        if not self._bucketed or unit is None:
            tally_of = self._tally_of
            if tally_of is None:
                self._compile_tallies()
                return self.counted(unit, attributes)
            outcome = self.evaluate(unit, attributes)
            tally_of[id(outcome)].add(unit)
            return outcome
        h = bucket_hash(self.key, self.salt, unit, self.seed)
        if self.weights:
            index = variant_index(h / _LONG_SCALE, self.weights)
            outcome, tally = self._variants[index], self._variant_tallies[index]
        elif h / _LONG_SCALE < self.fraction:
            outcome, tally = self._on, self._on_tally
        else:
            outcome, tally = self._default, self._default_tally
        next(tally.count)
        registers = tally.registers
        if registers is not None:  # bucketing.sketch_add, inline: register h & 255, rank by table
            low = h & 0xFFFF
            rank = _RANKS[low]
            if rank > registers[low & 255]:
                registers[low & 255] = rank
            elif not rank:  # bits 8-15 all zero (1 in 256): a rank over 8
                sketch_add(registers, (h,))
        elif tally.units:
            tally.start(h)
        return outcome

    def evaluate(self, unit: str | None, attributes: Mapping[str, Any] | None) -> tuple[Any, str | None, str]:
        """(value, variant, reason) for this unit."""
        if not self.enabled:
            return self._off
        if self.targets and unit is not None and unit in self.targets:
            return self.targets[unit]
        if self.rules:
            for attribute, op, values, outcome in self.rules:
                actual = _attribute(attribute, unit, attributes)
                if actual is not None and _matches(op, actual, values):
                    return outcome
        key = unit if self.bucket_by == UNIT_ATTRIBUTE else _attribute(self.bucket_by, unit, attributes)
        if key is None:
            if not self.weights and self.fraction >= 1.0:
                return self._on
            return self._default
        bucket = bucket_hash(self.key, self.salt, str(key), self.seed) / _LONG_SCALE  # bucket_value
        if self.weights:
            return self._variants[variant_index(bucket, self.weights)]
        if bucket < self.fraction:
            return self._on
        return self._default


def _attribute(name: str, unit: str | None, attributes: Mapping[str, Any] | None) -> Any:
    if attributes is not None and name in attributes:
        return attributes[name]
    return unit if name == UNIT_ATTRIBUTE else None


class FlagSet:
    """A checked, compiled document: one environment's revision."""

    __slots__ = ("environment", "revision", "flags", "raw")

    def __init__(
        self, document: Any, *, environment: str | None = None, telemetry: str | None = None
    ) -> None:
        """``telemetry``: None, ``"counts"`` or ``"units"`` (see ``CompiledFlag``)."""
        check_document(document, environment=environment)
        self.environment = document["environment"]
        self.revision = document["revision"]
        self.flags = {
            str(key): CompiledFlag(str(key), spec, telemetry) for key, spec in document["flags"].items()
        }
        self.raw = document
