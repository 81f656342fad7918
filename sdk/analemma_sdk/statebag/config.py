"""Which configuration a hydrator runs with, and why.

For each of ``use_batching``, ``use_zstd``, ``zstd_level`` and ``use_2pc`` the first that
applies wins:

1. an explicit argument to ``get_hydrator``;
2. the environment variable (``USE_BATCHING``, ``USE_ZSTD``, ``ZSTD_LEVEL``, ``USE_2PC``) —
   the emergency override: set it on the function and every execution follows, whatever
   the flag set says;
3. the configuration the execution already runs with, recorded in its payload (the event
   form), so an execution keeps one configuration for its whole life even while a rollout
   moves;
4. the flag set, evaluated for the execution id (the unit);
5. the legacy defaults: off, level 3.

A flag client that fails, or zstd without the zstandard library, degrades to the legacy path
with a warning and a metric; nothing here raises.
"""

from __future__ import annotations

import os

from .._containers import Mapping
from ..flags.spec import SDK_FLAGS
from . import metrics
from .codec import validate_level, zstandard_installed

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    from typing import Any

# The configuration is the SDK's own flags; each has an environment variable of its name.
FIELDS = tuple(SDK_FLAGS)
ENV_NAMES = {name: name.upper() for name in FIELDS}
# Payloads written before the tag was keyed by name carry it as a list, in this order: pinned,
# whatever flags are added later.
POSITIONAL_TAG = ("use_batching", "use_zstd", "zstd_level", "use_2pc")
DEFAULTS: dict[str, Any] = {name: declared["default"] for name, declared in SDK_FLAGS.items()}
META_KEY = "__statebag__"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class HydratorConfig:
    """The resolved values, and for each the source that decided it (argument, env,
    execution, flags, default, fallback)."""

    __slots__ = ("use_batching", "use_zstd", "zstd_level", "use_2pc", "sources", "flags_revision")

    def __init__(
        self, values: Mapping[str, Any], sources: Mapping[str, str], flags_revision: int | None
    ) -> None:
        self.use_batching = bool(values["use_batching"])
        self.use_zstd = bool(values["use_zstd"])
        self.zstd_level = int(values["zstd_level"])
        self.use_2pc = bool(values["use_2pc"])
        self.sources = dict(sources)
        self.flags_revision = flags_revision

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELDS}

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r} ({self.sources[name]})" for name in FIELDS)
        return f"HydratorConfig({inner})"


def _parse(name: str, raw: str) -> Any:
    if name == "zstd_level":
        return validate_level(int(raw))
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(raw)


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    found = {}
    for name, variable in ENV_NAMES.items():
        raw = environ.get(variable)
        if raw is None or (name == "zstd_level" and not raw.strip()):
            continue
        try:
            found[name] = _parse(name, raw)
        except ValueError:
            metrics.logger().warning("ignoring %s=%r: not a valid %s", variable, raw, name)
    return found


def event_meta(event: Any) -> dict[str, Any]:
    """The state bag metadata a payload carries, in any of the three event shapes."""
    if not isinstance(event, Mapping):
        return {}
    candidates = [event]
    state_data = event.get("state_data")
    if isinstance(state_data, Mapping):
        candidates.append(state_data)
        if isinstance(state_data.get("bag"), Mapping):
            candidates.append(state_data["bag"])
    for candidate in reversed(candidates):
        meta = candidate.get(META_KEY)
        if isinstance(meta, Mapping):
            return dict(meta)
    return {}


def unit_from_event(event: Any) -> str | None:
    """The execution id of an event: from its payload metadata, else an ``execution_id``
    (or ``executionId``/``ExecutionId``) at the root or in ``state_data``."""
    execution = event_meta(event).get("execution")
    if isinstance(execution, str):
        return execution
    if not isinstance(event, Mapping):
        return None
    for where in (event, event.get("state_data")):
        if isinstance(where, Mapping):
            for name in ("execution_id", "executionId", "ExecutionId"):
                if isinstance(where.get(name), str) and where[name]:
                    return str(where[name])
    return None


def _checked(name: str, value: Any) -> Any:
    """A recorded or served value of one setting, as the hydrator takes it; ValueError else."""
    if name == "zstd_level":
        return validate_level(int(value))
    return bool(value)


def config_tag(values: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration as each payload records it (``meta["cfg"]``), keyed by field name."""
    return {name: values[name] for name in FIELDS}


def read_config_tag(tag: Any) -> dict[str, Any]:
    """The settings a payload recorded; a missing or malformed tag or entry records nothing.

    Payloads written before the tag was keyed carry it positionally as
    ``[batching, zstd, level, 2pc]`` (ints); executions still running then must keep their
    configuration, so that form is read too."""
    if isinstance(tag, list) and len(tag) == len(POSITIONAL_TAG):
        values: Mapping[str, Any] = dict(zip(POSITIONAL_TAG, tag, strict=True))
    elif isinstance(tag, Mapping):
        values = tag
    else:
        return {}
    recorded = {}
    for name in FIELDS:
        if name in values:
            try:
                recorded[name] = _checked(name, values[name])
            except (TypeError, ValueError):
                return {}  # a damaged tag: trust none of it
    return recorded


def _pinned(event: Any, unit: str | None) -> dict[str, Any]:
    meta = event_meta(event)
    if unit is None or meta.get("execution") != unit:
        return {}
    return read_config_tag(meta.get("cfg"))


def _from_flags(flags: Any, unit: str | None) -> tuple[dict[str, Any], int | None]:
    try:
        values = {}
        for name, declared in SDK_FLAGS.items():
            read = flags.number if declared["kind"] == "number" else flags.bool
            values[name] = _checked(name, read(name, unit=unit, default=declared["default"]))
        return values, getattr(flags, "revision", None)
    except Exception as exc:  # flags must never break a dehydration
        metrics.increment("statebag_flags_unavailable_total")
        metrics.logger().warning("flag set unusable (%s): using the legacy configuration", exc)
        return {}, None


def zstd_available() -> bool:
    """Whether zstandard is installed; it loads when a frame is first compressed."""
    return zstandard_installed()


def resolve_config(
    *,
    explicit: Mapping[str, Any] | None = None,
    flags: Any = None,
    unit: str | None = None,
    event: Any = None,
    environ: Mapping[str, str] | None = None,
) -> HydratorConfig:
    if unit is None and event is not None:
        unit = unit_from_event(event)
    layers: list[tuple[str, Mapping[str, Any]]] = [
        ("argument", {k: v for k, v in (explicit or {}).items() if v is not None}),
        ("env", _from_env(os.environ if environ is None else environ)),
        ("execution", _pinned(event, unit)),
    ]
    revision = None
    if flags is not None:
        from_flags, revision = _from_flags(flags, unit)
        layers.append(("flags", from_flags))
    layers.append(("default", DEFAULTS))
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in FIELDS:
        source, layer = next((source, layer) for source, layer in layers if name in layer)
        values[name], sources[name] = layer[name], source
    if values["use_zstd"] and not zstd_available():
        metrics.increment("statebag_zstd_unavailable_total")
        metrics.logger().warning(
            "use_zstd is on but the zstandard library is not installed: using the legacy path"
        )
        values.update(use_batching=False, use_zstd=False)
        sources.update(use_batching="fallback", use_zstd="fallback")
    return HydratorConfig(values, sources, revision)
