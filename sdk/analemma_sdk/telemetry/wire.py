"""Telemetry wire format v1: the limits it sets and how a batch's parts are written.

See ``POST /api/v1/telemetry``: evaluations (flag, variant, value, reason, count, units: a
distinct-unit sketch, version 2 since this SDK takes units from their bucketing hash, see ``hll``),
statebag cohorts (counters, log2 latency histograms), ``dropped``, a batch id for idempotency.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

__all__ = [
    "KNOWN_COUNTERS",
    "WARNING_COUNTERS",
    "batch_id",
    "cohort_item",
    "encode",
    "evaluation_items",
    "json_key",
    "tag_problem",
]

WIRE_VERSION = 1
SDK_NAME = "analemma-python"
MAX_COUNTERS = 64  # per cohort, known names included
MAX_COUNT = 10**9
MAX_COUNTER = 10**12
MAX_VALUE_BYTES = 1024  # a value's canonical JSON text (unescaped non-ASCII), UTF-8 bytes
MAX_TEXT = 256  # variants and cohort string values, in characters
MAX_INT = 2**63 - 1  # cohort integer values, in absolute value
MAX_COHORT_KEYS = 16
# The bounds above restate the service's (``telemetry.wire`` there): a body outside them is
# refused whole (400), every other count with it, so the SDK checks each entry by the same
# measure and drops (and counts) only the one that does not fit. tests/sdk pins them.
REASONS = frozenset(("off", "targeted", "rollout", "default", "error", "stale"))
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.-")
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-")
KNOWN_COUNTERS = (
    "executions",
    "hydrations",
    "dehydrations",
    "requests_get",
    "requests_put",
    "requests_head",
    "requests_list",
    "requests_delete",
    "bytes_written",
    "bytes_read",
    "inline_bytes",
    "offloaded_bytes",
    "payload_bytes",
    "cold_containers",
    "warm_containers",
    "errors",
    "degraded_to_legacy",
    "commits_2pc",
    "commits_record",
    "commits_failed",
)
# The engine's process warnings (``statebag.metrics``), reported with a cohort when they
# happened; only when non-zero, and always with room kept for them under MAX_COUNTERS.
WARNING_COUNTERS = (
    "statebag_2pc_unavailable_total",
    "statebag_zstd_unavailable_total",
    "statebag_flags_unavailable_total",
)


class _Json(str):
    """An unhashable flag value (a JSON object or list), keyed by its canonical encoding."""

    __slots__ = ()


def json_key(value: Any) -> _Json:
    import json

    return _Json(json.dumps(value, sort_keys=True, separators=(",", ":")))


def _flag_key_ok(flag: Any) -> bool:
    return (
        isinstance(flag, str) and 0 < len(flag) <= 64 and flag[0] not in "_.-" and _KEY_CHARS.issuperset(flag)
    )


def _name_ok(name: Any) -> bool:
    """A cohort tag or counter name as the service reads one: a letter or digit, then letters,
    digits, ``_ . : -``, at most 64 characters."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= 64
        and name[0] not in "_.:-"
        and _NAME_CHARS.issuperset(name)
    )


def _encodes(text: str) -> bool:
    """Valid Unicode: JSON escapes a lone surrogate, the service's database cannot hold one."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def tag_problem(name: Any, value: Any) -> str | None:
    """Why the service would refuse the cohort tag ``name: value`` (None when it accepts it)."""
    if not _name_ok(name):
        return "the name must be letters, digits, _ . : - (at most 64, a letter or digit first)"
    if isinstance(value, str):
        if len(value) > MAX_TEXT or not _encodes(value):
            return f"a string value must be valid Unicode of at most {MAX_TEXT} characters"
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and abs(value) <= MAX_INT:
        return None
    return f"the value must be a boolean, a string or an integer within +-{MAX_INT}"


def evaluation_items(
    counts: Mapping[tuple[Any, ...], int], sketches: Mapping[tuple[Any, ...], bytearray]
) -> tuple[list[dict[str, Any]], int]:
    """The wire's evaluation entries, and how many evaluations the wire cannot carry (a
    malformed flag key, reason or variant, a value over 1 KiB as JSON, a value JSON cannot carry:
    NaN, a lone surrogate, an object of no JSON type)."""
    from .hll import encode_registers

    items = []
    unfit = 0
    for key, count in counts.items():
        flag, variant, value, reason = key
        if not _fits(flag, variant, value, reason):
            unfit += count
            continue
        item: dict[str, Any] = {
            "flag": flag,
            "variant": variant,
            "value": _decoded(value),
            "reason": reason,
            "count": min(count, MAX_COUNT),
        }
        registers = sketches.get(key)
        if registers is not None:
            item["units"] = encode_registers(registers)
        items.append(item)
    return items, unfit


def _fits(flag: Any, variant: Any, value: Any, reason: Any) -> bool:
    """Whether the service accepts this key: by its own measure (``canonical`` there)."""
    if not _flag_key_ok(flag) or reason not in REASONS:
        return False
    if variant is not None and not (
        isinstance(variant, str) and len(variant) <= MAX_TEXT and _encodes(variant)
    ):
        return False
    if value is None or value is True or value is False:
        return True
    import json

    try:  # a _Json key was written escaped: measure the decoded value as the service does
        text = json.dumps(
            _decoded(value), separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False
        )
        return len(text.encode()) <= MAX_VALUE_BYTES
    except (TypeError, ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        return False


def _decoded(value: Any) -> Any:
    if isinstance(value, _Json):
        import json

        return json.loads(value)
    return value


def cohort_item(
    cohort: dict[str, Any], counters: Mapping[str, int], latency: Mapping[str, list[int]]
) -> dict[str, Any]:
    names = dict.fromkeys(KNOWN_COUNTERS, 0)
    room = MAX_COUNTERS - len(WARNING_COUNTERS)
    for name, amount in counters.items():
        if not _name_ok(name):
            continue  # the service would refuse the whole body
        if name in names or name in WARNING_COUNTERS or len(names) < room:
            names[name] = min(names.get(name, 0) + amount, MAX_COUNTER)
    return {
        "cohort": cohort,
        "counters": names,
        "latency_ms": {
            name: [[1 << i, n] for i, n in enumerate(histogram) if n]
            for name, histogram in latency.items()
            if _name_ok(name)
        },
    }


def batch_id() -> str:
    """A uuid4 as 32 hex digits (without importing uuid, which loads platform modules)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


def encode(body: Mapping[str, Any]) -> bytes:
    import json

    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
