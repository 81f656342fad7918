"""Analemma client SDK.

Importing this package loads only the standard library, and only what is used: ``FlagClient``
and the state bag engine load on first access. Optional libraries (zstandard, boto3, orjson)
are imported the first time a codec or store needs them.
"""

__version__ = "0.1.0"
__all__ = ["FlagClient", "FlagDetails"]


def __getattr__(name: str) -> object:
    # Lazy, so `import analemma_sdk` in a Lambda costs nothing it does not use.
    if name in __all__:
        from . import flags

        return getattr(flags, name)
    raise AttributeError(f"module 'analemma_sdk' has no attribute {name!r}")
