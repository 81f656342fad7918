"""The telemetry wire format, version 1 (the shared contract, summarised in docs/telemetry-wire.md;
README "## Telemetry" for the endpoint): checking a batch the way the service accepts it, and
the compact form a stored batch keeps.

Every bound of the contract is checked here, each refusal a ``WireError`` whose message names
the field (``evaluations[3].count: ...``), so a malformed body is always a 400 and never
reaches the database. Standard library only: no ORM, no framework."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from .sketch import HISTOGRAM_BOUNDS, MAX_RANKS, REGISTERS, V1, V2

VERSION = 1
REASONS = frozenset({"off", "targeted", "rollout", "default", "error", "stale"})
MAX_EVALUATIONS = 512
MAX_COHORTS = 64
MAX_COHORT_KEYS = 16
MAX_COUNTERS = 64
MAX_HISTOGRAMS = 32  # latency names per cohort entry (the contract names two)
MAX_HISTOGRAM_ENTRIES = 32
MAX_VALUE_BYTES = 1024
MAX_COUNT = 10**9
MAX_COUNTER = 10**12
MAX_TEXT = 256  # variants, cohort string values, the SDK's name and version
MAX_INT = 2**63 - 1
FILING_WINDOW_SECONDS = 3600  # a batch is filed no earlier than this before now

_BATCH_ID = re.compile(r"[0-9a-f]{32}")
_FLAG_KEY = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_BOUNDS = frozenset(HISTOGRAM_BOUNDS)


class WireError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


@dataclass(frozen=True)
class Evaluation:
    flag: str
    variant: str | None
    value: str  # canonical JSON text: equal values merge whatever their key order
    reason: str
    count: int
    units: str | None  # the sketch as sent (base64), checked


@dataclass(frozen=True)
class CohortReport:
    cohort: str  # canonical JSON text of the flat cohort object
    counters: dict[str, int]
    latency: dict[str, dict[int, int]]


@dataclass(frozen=True)
class Batch:
    batch_id: str
    minute: int  # unix seconds at the start of the minute it is filed under
    dropped: int
    sdk: str
    evaluations: tuple[Evaluation, ...]
    cohorts: tuple[CohortReport, ...]

    def payload(self) -> str:
        """What a stored batch keeps: compact, already checked, read back by ``parse_payload``."""
        return json.dumps(
            {
                "e": [[e.flag, e.variant, e.value, e.reason, e.count, e.units] for e in self.evaluations],
                "s": [
                    [c.cohort, c.counters, {name: list(h.items()) for name, h in c.latency.items()}]
                    for c in self.cohorts
                ],
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )


def canonical(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    """A JSON number usable as unix seconds (an integer too large for a float is not)."""
    if _is_int(value):
        return bool(abs(value) <= MAX_INT)
    return isinstance(value, float) and math.isfinite(value)


def _int_in(field: str, value: Any, low: int, high: int) -> int:
    if not _is_int(value) or not low <= value <= high:
        raise WireError(field, f"must be an integer from {low} to {high}")
    return int(value)


def _encodes(text: str) -> bool:
    """Whether ``text`` is valid Unicode: JSON can escape a lone surrogate, UTF-8 (and so
    the database) cannot hold one."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _text(field: str, value: Any, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise WireError(field, f"must be a string of at most {limit} characters")
    if not _encodes(value):
        raise WireError(field, "is not valid Unicode (a lone surrogate)")
    return value


def _object(field: str, value: Any, limit: int) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise WireError(field, "must be an object")
    if len(value) > limit:
        raise WireError(field, f"has {len(value)} keys, at most {limit} are allowed")
    return value


def _list(field: str, value: Any, limit: int) -> list[Any]:
    if not isinstance(value, list):
        raise WireError(field, "must be a list")
    if len(value) > limit:
        raise WireError(field, f"has {len(value)} entries, at most {limit} are allowed")
    return value


def _name(field: str, value: Any) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise WireError(field, "must be a name of letters, digits, _ . : - (at most 64)")
    return value


def check_sketch(field: str, value: Any) -> str:
    """A distinct-unit sketch as SDKs send it: version 1, the 256 registers alone; version 2,
    a version byte (2) then the 256 registers (``telemetry.sketch``), in base64."""
    if not isinstance(value, str) or len(value) > 4 * REGISTERS:
        raise WireError(field, f"must be the base64 text of {REGISTERS} registers")
    try:
        registers = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise WireError(field, "is not valid base64") from None
    version = V1
    if len(registers) == REGISTERS + 1:
        version, registers = registers[0], registers[1:]
        if version != V2:
            raise WireError(field, f"has sketch version {version}; this service reads {V1} and {V2}")
    if len(registers) != REGISTERS:
        raise WireError(
            field, f"holds {len(registers)} registers, not {REGISTERS} (or a version byte and {REGISTERS})"
        )
    if max(registers) > MAX_RANKS[version]:
        raise WireError(field, f"has a register above {MAX_RANKS[version]} (sketch version {version})")
    return value


def _evaluation(field: str, entry: Any) -> Evaluation:
    entry = _object(field, entry, 6)
    unknown = set(entry) - {"flag", "variant", "value", "reason", "count", "units"}
    if unknown:
        raise WireError(field, f"unknown fields {sorted(unknown)}")
    flag = entry.get("flag")
    if not isinstance(flag, str) or not _FLAG_KEY.fullmatch(flag):
        raise WireError(f"{field}.flag", "must be a flag key (lowercase slug, at most 64 characters)")
    variant = entry.get("variant")
    if variant is not None:
        _text(f"{field}.variant", variant)
    if "value" not in entry:
        raise WireError(f"{field}.value", "is required (null is a value)")
    value = canonical(entry["value"])
    if not _encodes(value):
        raise WireError(f"{field}.value", "is not valid Unicode (a lone surrogate)")
    if len(value.encode()) > MAX_VALUE_BYTES:
        raise WireError(f"{field}.value", f"is over {MAX_VALUE_BYTES} bytes as JSON")
    reason = entry.get("reason")
    if not isinstance(reason, str) or reason not in REASONS:
        raise WireError(f"{field}.reason", f"must be one of {', '.join(sorted(REASONS))}")
    count = _int_in(f"{field}.count", entry.get("count"), 1, MAX_COUNT)
    units = entry.get("units")
    if units is not None:
        check_sketch(f"{field}.units", units)
    return Evaluation(flag, variant, value, str(reason), count, units)


def _histogram(field: str, value: Any) -> dict[int, int]:
    histogram: dict[int, int] = {}
    for index, pair in enumerate(_list(field, value, MAX_HISTOGRAM_ENTRIES)):
        where = f"{field}[{index}]"
        if not isinstance(pair, list) or len(pair) != 2:
            raise WireError(where, "must be [upper_bound_ms, count]")
        bound, count = pair
        if not _is_int(bound) or bound not in _BOUNDS:
            raise WireError(where, "the upper bound must be a power of two from 1 to 65536")
        histogram[bound] = histogram.get(bound, 0) + _int_in(where, count, 0, MAX_COUNTER)
    return histogram


def _cohort_report(field: str, entry: Any) -> CohortReport:
    entry = _object(field, entry, 3)
    unknown = set(entry) - {"cohort", "counters", "latency_ms"}
    if unknown:
        raise WireError(field, f"unknown fields {sorted(unknown)}")
    cohort = _object(f"{field}.cohort", entry.get("cohort"), MAX_COHORT_KEYS)
    for key, value in cohort.items():
        where = f"{field}.cohort.{_name(f'{field}.cohort', key)}"
        if isinstance(value, str):
            _text(where, value)
        elif not isinstance(value, bool) and not (_is_int(value) and abs(value) <= MAX_INT):
            raise WireError(where, "must be a boolean, a string or an integer")
    counters: dict[str, int] = {}
    for name, count in _object(f"{field}.counters", entry.get("counters", {}), MAX_COUNTERS).items():
        where = f"{field}.counters.{_name(f'{field}.counters', name)}"
        counters[name] = _int_in(where, count, 0, MAX_COUNTER)
    latency = {
        _name(f"{field}.latency_ms", name): _histogram(f"{field}.latency_ms.{name}", histogram)
        for name, histogram in _object(
            f"{field}.latency_ms", entry.get("latency_ms", {}), MAX_HISTOGRAMS
        ).items()
    }
    return CohortReport(canonical(cohort), counters, latency)


def parse_batch(body: dict[str, Any], *, now: float) -> Batch:
    """The batch ``body`` (a parsed JSON object) reports, filed by the service's clock ``now``
    (unix seconds); WireError when any part is outside the contract."""
    version = body.get("v")
    if not _is_int(version) or version != VERSION:
        raise WireError("v", f"must be {VERSION} (the only wire version this service reads)")
    batch_id = body.get("batch")
    if not isinstance(batch_id, str) or not _BATCH_ID.fullmatch(batch_id):
        raise WireError("batch", "must be 32 lowercase hex characters (uuid4().hex)")
    if not _number(body.get("sent_at")):
        raise WireError("sent_at", "must be a number (unix seconds)")
    window = body.get("window")
    if (
        not isinstance(window, list)
        or len(window) != 2
        or not all(_number(edge) for edge in window)
        or window[0] > window[1]
    ):
        raise WireError("window", "must be [first, last] event times in unix seconds, first <= last")
    sdk = body.get("sdk", {})
    sdk = _object("sdk", sdk, 2)
    sdk_name = _text("sdk.name", sdk.get("name", ""), 64)
    sdk_version = _text("sdk.version", sdk.get("version", ""), 64)
    dropped = _int_in("dropped", body.get("dropped", 0), 0, MAX_COUNTER)
    evaluations = tuple(
        _evaluation(f"evaluations[{index}]", entry)
        for index, entry in enumerate(_list("evaluations", body.get("evaluations", []), MAX_EVALUATIONS))
    )
    cohorts = tuple(
        _cohort_report(f"statebag[{index}]", entry)
        for index, entry in enumerate(_list("statebag", body.get("statebag", []), MAX_COHORTS))
    )
    filed = min(max(float(window[1]), now - FILING_WINDOW_SECONDS), now)
    return Batch(
        batch_id=batch_id,
        minute=int(filed // 60) * 60,
        dropped=dropped,
        sdk=f"{sdk_name}/{sdk_version}" if sdk_name or sdk_version else "",
        evaluations=evaluations,
        cohorts=cohorts,
    )


def parse_payload(payload: str) -> tuple[list[Evaluation], list[CohortReport]]:
    """A stored batch's reports (written by ``Batch.payload``, so trusted)."""
    data = json.loads(payload)
    evaluations = [Evaluation(*entry) for entry in data["e"]]
    cohorts = [
        CohortReport(
            cohort, counters, {name: {int(b): c for b, c in pairs} for name, pairs in latency.items()}
        )
        for cohort, counters, latency in data["s"]
    ]
    return evaluations, cohorts
