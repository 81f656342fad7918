"""The flag-set document, defined once: its shape, constants, limits, the SDK-key format, a
builder for flag specs, the checks, and the JSON Schema the API description is generated from.

The service builds every revision with ``flag_spec``/``flag_set_document`` and refuses to save
one that ``check_publishable`` rejects; SDKs accept a document only when ``check_document``
passes. Both sides import this module, so a flag set the service stores is one every SDK can
evaluate.

A document::

    {"format": 1, "environment": "prod", "revision": 12,
     "flags": {"use_zstd": {"kind": "boolean", "default": false, "enabled": true,
                            "value": true, "percentage": 5.0, "variants": [], "targets": [],
                            "rules": [], "bucket_by": "execution_id", "salt": "", "seed": null}}}

Standard library only.
"""

from __future__ import annotations

from .._containers import Mapping
from ..bucketing import TOTAL_WEIGHT

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

DOCUMENT_FORMAT = 1
KINDS = ("boolean", "string", "number", "json")
RULE_OPS = ("in", "not_in", "starts_with", "ends_with", "contains")
UNIT_ATTRIBUTE = "execution_id"
# A flag's configuration in one environment: every field of a flag spec but kind and default.
STATE_FIELDS = ("enabled", "value", "percentage", "variants", "targets", "rules", "bucket_by", "salt", "seed")

# Limits. An SDK refuses a document body larger than this, so the service refuses to save one.
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
MAX_KEY_LENGTH = 64
KEY_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}\Z"  # flag and environment keys
KEY_HELP = "lowercase letters, digits, _ . - (start with a letter or digit, at most 64)"

# SDK keys: ask_<environment>_<secret>; the SDK reads the environment a document must be for
# from its own key.
SDK_KEY_PREFIX = "ask"
SDK_KEY_SECRET_LENGTH = 43  # secrets.token_urlsafe(32)

# Flags the SDK itself reads: the state bag's configuration. The service creates them and
# refuses values outside these bounds, which the state bag engine would not run with.
ZSTD_LEVEL_MIN = 1
ZSTD_LEVEL_MAX = 22
ZSTD_LEVEL_DEFAULT = 3
SDK_FLAGS: dict[str, dict[str, Any]] = {
    "use_batching": {
        "kind": "boolean",
        "default": False,
        "description": "Pack changed fields by temperature group, with dedup.",
    },
    "use_zstd": {
        "kind": "boolean",
        "default": False,
        "description": "Compress frames with zstd instead of gzip.",
    },
    "zstd_level": {
        "kind": "number",
        "default": ZSTD_LEVEL_DEFAULT,
        "integer": True,
        "minimum": ZSTD_LEVEL_MIN,
        "maximum": ZSTD_LEVEL_MAX,
        "description": f"zstd compression level ({ZSTD_LEVEL_MIN}-{ZSTD_LEVEL_MAX}).",
    },
    "use_2pc": {
        "kind": "boolean",
        "default": False,
        "description": "Commit uploads and manifests with the two-phase commit.",
    },
}


class InvalidDocumentError(ValueError):
    """A flag-set document that cannot be evaluated: wrong shape, format or environment."""


class InvalidFlagError(InvalidDocumentError):
    """One flag's spec is wrong; ``flag`` names it."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"flag {flag!r}: {message}")
        self.flag = flag


# Builders ---------------------------------------------------------------------------------
def flag_spec(
    kind: str,
    default: Any,
    *,
    enabled: bool = False,
    value: Any = None,
    percentage: float = 100.0,
    variants: Any = (),
    targets: Any = (),
    rules: Any = (),
    bucket_by: str = UNIT_ATTRIBUTE,
    salt: str = "",
    seed: int | None = None,
) -> dict[str, Any]:
    """One flag as a document carries it. Nothing is checked here: ``check_flag`` does that."""
    return {
        "kind": kind,
        "default": default,
        "enabled": enabled,
        "value": value,
        "percentage": percentage if isinstance(percentage, bool) else _as_number(percentage),
        "variants": list(variants),
        "targets": list(targets),
        "rules": list(rules),
        "bucket_by": bucket_by,
        "salt": salt,
        "seed": seed,
    }


def flag_set_document(environment: str, revision: int, flags: Mapping[str, Any]) -> dict[str, Any]:
    return {"format": DOCUMENT_FORMAT, "environment": environment, "revision": revision, "flags": dict(flags)}


def _as_number(value: Any) -> Any:
    # Decimal percentages from the database become floats; anything else is left for the check.
    try:
        return float(value) if not isinstance(value, int | float) else value
    except (TypeError, ValueError):
        return value


# SDK keys ---------------------------------------------------------------------------------
def sdk_key_compose(environment: str, secret: str) -> str:
    return f"{SDK_KEY_PREFIX}_{environment}_{secret}"


def sdk_key_environment(sdk_key: str) -> str | None:
    """The environment an ``ask_<environment>_<secret>`` key reads, or None."""
    head = SDK_KEY_PREFIX + "_"
    if sdk_key.startswith(head) and len(sdk_key) > len(head) + SDK_KEY_SECRET_LENGTH + 1:
        environment = sdk_key[len(head) : -SDK_KEY_SECRET_LENGTH - 1]
        if sdk_key[-SDK_KEY_SECRET_LENGTH - 1] == "_" and environment:
            return environment
    return None


# Checks -----------------------------------------------------------------------------------
def _is_number(value: Any) -> bool:
    # Finite numbers only: NaN and infinities have no JSON form.
    return isinstance(value, int | float) and not isinstance(value, bool) and value - value == 0


def _is_json(value: Any) -> bool:
    """Any JSON value, numbers finite: NaN and infinities have no JSON form."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float) and item - item != 0:
            return False
        if isinstance(item, Mapping):
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return True


_KIND_CHECKS: dict[str, Callable[[Any], bool]] = {
    "boolean": lambda v: v is True or v is False,
    "string": lambda v: isinstance(v, str),
    "number": _is_number,
    "json": _is_json,
}


def _typed(key: str, kind: str, value: Any, what: str) -> None:
    if not _KIND_CHECKS[kind](value):
        raise InvalidFlagError(key, f"{what} of a {kind} flag cannot be {value!r}")


def check_flag(key: str, spec: Any) -> None:
    """Everything an SDK needs to evaluate the flag, with every value of the flag's kind."""
    if not isinstance(spec, Mapping):
        raise InvalidFlagError(key, "is not an object")
    kind = _check_basics(key, spec)
    percentage = spec.get("percentage", 100)
    if not _is_number(percentage) or not 0 <= percentage <= 100:
        raise InvalidFlagError(key, f"percentage must be a number from 0 to 100, not {percentage!r}")
    _check_variants(key, kind, spec.get("variants") or [])
    _check_targets(key, kind, spec.get("targets") or [])
    _check_rules(key, kind, spec.get("rules") or [])
    seed = spec.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InvalidFlagError(key, f"seed must be an integer or null, not {seed!r}")


def _check_basics(key: str, spec: Mapping[str, Any]) -> str:
    """Kind, default, on/off, value and the bucketing strings; returns the kind."""
    for field in ("kind", "default", "enabled"):
        if field not in spec:
            raise InvalidFlagError(key, f"has no {field}")
    kind = spec["kind"]
    if kind not in KINDS:
        raise InvalidFlagError(key, f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    _typed(key, kind, spec["default"], "the default")
    if not isinstance(spec["enabled"], bool):
        raise InvalidFlagError(key, "enabled must be true or false")
    if spec.get("value") is not None:
        _typed(key, kind, spec["value"], "the value")
    for field in ("bucket_by", "salt"):
        if not isinstance(spec.get(field, ""), str):
            raise InvalidFlagError(key, f"{field} must be a string")
    return str(kind)


def _check_variants(key: str, kind: str, variants: Any) -> None:
    if not isinstance(variants, list) or not all(
        isinstance(v, Mapping) and set(v) == {"value", "weight"} for v in variants
    ):
        raise InvalidFlagError(key, 'variants must be a list of {"value", "weight"}')
    if not variants:
        return
    weights = [v["weight"] for v in variants]
    if not all(isinstance(w, int) and not isinstance(w, bool) and w >= 0 for w in weights):
        raise InvalidFlagError(key, "variant weights must be non-negative integers")
    if sum(weights) != TOTAL_WEIGHT:
        raise InvalidFlagError(key, f"variant weights must sum to {TOTAL_WEIGHT}, not {sum(weights)}")
    for variant in variants:
        _typed(key, kind, variant["value"], "a variant's value")


def _check_targets(key: str, kind: str, targets: Any) -> None:
    if not isinstance(targets, list):
        raise InvalidFlagError(key, 'targets must be a list of {"units": [...], "value": ...}')
    for target in targets:
        # Unit ids are matched as text; numbers are taken as theirs (stored flag sets have them).
        if not (
            isinstance(target, Mapping)
            and isinstance(target.get("units"), list)
            and all(isinstance(unit, str) or _is_number(unit) for unit in target["units"])
            and "value" in target
        ):
            raise InvalidFlagError(key, 'targets must be a list of {"units": ["unit id", ...], "value": ...}')
        _typed(key, kind, target["value"], "a target's value")


def _check_rules(key: str, kind: str, rules: Any) -> None:
    if not isinstance(rules, list):
        raise InvalidFlagError(key, "rules must be a list")
    for rule in rules:
        if not (
            isinstance(rule, Mapping) and rule.get("op") in RULE_OPS and isinstance(rule.get("values"), list)
        ):
            raise InvalidFlagError(
                key, f"a rule's op must be one of {', '.join(RULE_OPS)}, with a values list"
            )
        if not isinstance(rule.get("attribute"), str) or "value" not in rule:
            raise InvalidFlagError(key, "a rule needs an attribute and a value")
        _typed(key, kind, rule["value"], "a rule's value")


def served_values(spec: Mapping[str, Any]) -> list[Any]:
    """Every value a flag can serve: its default, value, variants, targets and rules."""
    values = [spec["default"]]
    if spec.get("value") is not None:
        values.append(spec["value"])
    values += [v["value"] for v in spec.get("variants") or []]
    values += [t["value"] for t in spec.get("targets") or []]
    values += [r["value"] for r in spec.get("rules") or []]
    return values


def check_sdk_flag(key: str, spec: Mapping[str, Any]) -> None:
    """The bounds of a flag the SDK itself reads (``SDK_FLAGS``); other flags pass."""
    declared = SDK_FLAGS.get(key)
    if declared is None:
        return
    if spec["kind"] != declared["kind"]:
        raise InvalidFlagError(key, f"is read by the SDK as a {declared['kind']} flag, not {spec['kind']}")
    for value in served_values(spec):
        if declared.get("integer") and not (isinstance(value, int) or float(value).is_integer()):
            raise InvalidFlagError(key, f"must be a whole number, not {value!r}")
        low, high = declared.get("minimum"), declared.get("maximum")
        if low is not None and not low <= value <= high:
            raise InvalidFlagError(key, f"must be from {low} to {high}, not {value!r}")


def check_document(
    document: Any, *, environment: str | None = None, only: Iterable[str] | None = None
) -> None:
    """A document an SDK can evaluate; ``environment``, when given, must be the one it is for.
    ``only`` limits the flag checks to those keys (the others were checked before)."""
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
    for key in flags if only is None else [key for key in only if key in flags]:
        check_flag(str(key), flags[key])


def check_publishable(
    document: Mapping[str, Any], body: bytes, *, changed: Iterable[str] | None = None
) -> None:
    """What the service checks before it saves a revision: every SDK accepts the document
    (``body`` is its serialised form) and every flag the SDK reads is within its bounds.
    ``changed`` limits the flag checks to the flags the revision changes: the others passed
    them when they changed, a value stored before a check existed never blocks an unrelated
    change (the kill switch above all), and a change costs what it changes, not the flag
    count."""
    check_document(document, only=changed)
    flags = document["flags"]
    for key in flags if changed is None else [key for key in changed if key in flags]:
        check_sdk_flag(key, flags[key])
    if len(body) > MAX_DOCUMENT_BYTES:
        raise InvalidDocumentError(
            f"the flag set would be {len(body):,} bytes; SDKs accept at most {MAX_DOCUMENT_BYTES:,}"
        )


# Schema -----------------------------------------------------------------------------------
def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schemas of a flag and of the document, named ``Flag`` and ``FlagSet``, for the
    service's API description. ``$ref``s point at ``#/components/schemas/<name>``."""
    any_value: dict[str, Any] = {}
    flag = {
        "type": "object",
        "properties": {
            "kind": {"enum": list(KINDS)},
            "default": any_value,
            "enabled": {"type": "boolean"},
            "value": {
                "description": "Served to units in the rollout; null serves the default (true for boolean)."
            },
            "percentage": {"type": "number", "minimum": 0, "maximum": 100},
            "variants": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"value": any_value, "weight": {"type": "integer", "minimum": 0}},
                    "required": ["value", "weight"],
                },
                "description": f"Weights sum to {TOTAL_WEIGHT}.",
            },
            "targets": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "units": {"type": "array", "items": {"type": "string"}},
                        "value": any_value,
                    },
                    "required": ["units", "value"],
                },
            },
            "rules": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "attribute": {"type": "string"},
                        "op": {"enum": list(RULE_OPS)},
                        "values": {"type": "array"},
                        "value": any_value,
                    },
                    "required": ["attribute", "op", "values", "value"],
                },
            },
            "bucket_by": {"type": "string"},
            "salt": {"type": "string"},
            "seed": {"type": ["integer", "null"]},
        },
        "required": ["kind", "default", "enabled"],
    }
    flag_set = {
        "type": "object",
        "properties": {
            "format": {"const": DOCUMENT_FORMAT},
            "environment": {"type": "string"},
            "revision": {"type": "integer", "minimum": 0},
            "flags": {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/Flag"}},
        },
        "required": ["format", "environment", "revision", "flags"],
    }
    return {"Flag": flag, "FlagSet": flag_set}
