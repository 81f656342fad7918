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

from collections.abc import Mapping

from ..bucketing import TOTAL_WEIGHT, bucket_value, variant_index

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    from typing import Any

DOCUMENT_FORMAT = 1
KINDS = frozenset({"boolean", "string", "number", "json"})
RULE_OPS = frozenset({"in", "not_in", "starts_with", "ends_with", "contains"})
UNIT_ATTRIBUTE = "execution_id"

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


class InvalidDocumentError(ValueError):
    """A flag-set document that cannot be evaluated: wrong shape, format or environment."""


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
    )

    def __init__(self, key: str, spec: Mapping[str, Any]) -> None:
        if not isinstance(spec, Mapping):
            raise InvalidDocumentError(f"flag {key!r} is not an object")
        try:
            self.key = key
            self.kind = spec["kind"]
            if self.kind not in KINDS:
                raise InvalidDocumentError(f"flag {key!r} has unknown kind {self.kind!r}")
            self.default = spec["default"]
            self.enabled = spec["enabled"] is True
            value = spec.get("value")
            if value is None:
                value = True if self.kind == "boolean" else self.default
            self.value = value
            self.fraction = _fraction(key, spec.get("percentage", 100))
            self.weights, self.variant_values = _variants(key, spec.get("variants") or [])
            self.targets = _targets(spec.get("targets") or [])
            self.rules = _rules(key, spec.get("rules") or [])
            self.bucket_by = str(spec.get("bucket_by") or UNIT_ATTRIBUTE)
            self.salt = str(spec.get("salt") or "")
            self.seed = _seed(key, spec.get("seed"))
        except InvalidDocumentError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidDocumentError(f"flag {key!r} is malformed: {exc!r}") from None

    def evaluate(self, unit: str | None, attributes: Mapping[str, Any] | None) -> tuple[Any, str | None, str]:
        """(value, variant, reason) for this unit."""
        if not self.enabled:
            return self.default, None, OFF
        if self.targets and unit is not None and unit in self.targets:
            return self.targets[unit], None, TARGETED
        if self.rules:
            for attribute, op, values, value in self.rules:
                actual = _attribute(attribute, unit, attributes)
                if actual is not None and _matches(op, actual, values):
                    return value, None, TARGETED
        key = unit if self.bucket_by == UNIT_ATTRIBUTE else _attribute(self.bucket_by, unit, attributes)
        if key is None:
            if not self.weights and self.fraction >= 1.0:
                return self.value, None, ROLLOUT
            return self.default, None, DEFAULT
        bucket = bucket_value(self.key, self.salt, str(key), self.seed)
        if self.weights:
            index = variant_index(bucket, self.weights)
            return self.variant_values[index], str(index), ROLLOUT
        if bucket < self.fraction:
            return self.value, None, ROLLOUT
        return self.default, None, DEFAULT


def _fraction(key: str, percentage: Any) -> float:
    if isinstance(percentage, bool) or not isinstance(percentage, int | float):
        raise InvalidDocumentError(f"flag {key!r} has a non-numeric percentage")
    if not 0 <= percentage <= 100:
        raise InvalidDocumentError(f"flag {key!r} has percentage {percentage} outside 0-100")
    return percentage / 100.0


def _variants(key: str, variants: list[Any]) -> tuple[tuple[int, ...], tuple[Any, ...]]:
    weights = tuple(int(v["weight"]) for v in variants)
    if variants and (sum(weights) != TOTAL_WEIGHT or min(weights) < 0):
        raise InvalidDocumentError(f"flag {key!r} has variant weights not summing to {TOTAL_WEIGHT}")
    return weights, tuple(v["value"] for v in variants)


def _targets(targets: list[Any]) -> dict[str, Any]:
    by_unit: dict[str, Any] = {}
    for target in targets:
        for unit in target["units"]:
            by_unit.setdefault(str(unit), target["value"])  # the first target wins
    return by_unit


def _rules(key: str, rules: list[Any]) -> tuple[tuple[str, str, list[Any], Any], ...]:
    compiled = tuple((rule["attribute"], rule["op"], list(rule["values"]), rule["value"]) for rule in rules)
    if any(op not in RULE_OPS or not isinstance(attribute, str) for attribute, op, _, _ in compiled):
        raise InvalidDocumentError(f"flag {key!r} has a rule with an unknown operator")
    return compiled


def _seed(key: str, seed: Any) -> int | None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InvalidDocumentError(f"flag {key!r} has a non-integer seed")
    return seed


def _attribute(name: str, unit: str | None, attributes: Mapping[str, Any] | None) -> Any:
    if attributes is not None and name in attributes:
        return attributes[name]
    return unit if name == UNIT_ATTRIBUTE else None


class FlagSet:
    """A checked, compiled document: one environment's revision."""

    __slots__ = ("environment", "revision", "flags", "raw")

    def __init__(self, document: Any, *, environment: str | None = None) -> None:
        if not isinstance(document, Mapping):
            raise InvalidDocumentError("the flag-set document is not a JSON object")
        if document.get("format") != DOCUMENT_FORMAT:
            raise InvalidDocumentError(f"unsupported flag-set format {document.get('format')!r}")
        revision = document.get("revision")
        if isinstance(revision, bool) or not isinstance(revision, int) or revision < 0:
            raise InvalidDocumentError("the flag-set document has no revision number")
        served_for = document.get("environment")
        if not isinstance(served_for, str):
            raise InvalidDocumentError("the flag-set document names no environment")
        if environment is not None and served_for != environment:
            raise InvalidDocumentError(
                f"the flag-set document is for environment {served_for!r}, not {environment!r}"
            )
        flags = document.get("flags")
        if not isinstance(flags, Mapping):
            raise InvalidDocumentError("the flag-set document has no flags object")
        self.environment = served_for
        self.revision = revision
        self.flags = {str(key): CompiledFlag(str(key), spec) for key, spec in flags.items()}
        self.raw = document
