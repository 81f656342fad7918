"""Process-local counters the engine bumps on events an operator should see (fallbacks,
refused guarantees). Export them with whatever metrics system the caller runs.

Also the engine's logger, loaded when there is first something to say: ``logging`` (with
traceback, string and threading) is several milliseconds of a cold start that logs nothing."""

from __future__ import annotations

import _thread

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    import logging

LOGGER_NAME = "analemma_sdk.statebag"
_lock = _thread.allocate_lock()


class Counts(dict[str, int]):
    """A name's count, 0 when never bumped (``collections.Counter`` would import the whole
    ``collections`` package at cold start for this)."""

    def __missing__(self, name: str) -> int:
        return 0


counters = Counts()


def increment(name: str, amount: int = 1) -> None:
    with _lock:
        counters[name] += amount


def logger() -> logging.Logger:
    """The engine's logger (``analemma_sdk.statebag``)."""
    import logging

    return logging.getLogger(LOGGER_NAME)
