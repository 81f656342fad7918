"""Analemma client SDK.

Importing this package loads only the standard library, and only what is used: ``FlagClient``
and the state bag engine load on first access. Optional libraries (zstandard, boto3, orjson)
are imported the first time a codec or store needs them.
"""

__version__ = "0.1.0"
__all__ = ["FlagClient", "FlagDetails"]

_ON = frozenset(("true", "1", "on", "yes", "enabled"))
_OFF = frozenset(("false", "0", "off", "no", "disabled"))


def telemetry_enabled(
    setting: bool | None = None, variable: str = "ANALEMMA_TELEMETRY", default: bool = True
) -> bool:
    """Whether telemetry is on: ``setting`` when given, else the environment ``variable`` (true,
    1, on, yes, enabled; false, 0, off, no, disabled), else ``default``: on, for a client that
    talks to a service. Here, so that deciding costs no telemetry module."""
    if setting is not None:
        return bool(setting)
    import os  # already loaded by the interpreter

    value = os.environ.get(variable, "").strip().lower()
    return True if value in _ON else False if value in _OFF else default


def __getattr__(name: str) -> object:
    # Lazy, so `import analemma_sdk` in a Lambda costs nothing it does not use.
    if name in __all__:
        from . import flags

        return getattr(flags, name)
    raise AttributeError(f"module 'analemma_sdk' has no attribute {name!r}")
