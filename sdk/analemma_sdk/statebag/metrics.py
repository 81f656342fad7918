"""Process-local counters the engine bumps on events an operator should see (fallbacks,
refused guarantees). Export them with whatever metrics system the caller runs; telemetry also
reports them (``take_unreported``) with the hydrator's cohort counters, so they reach the
service's rollups.

Also the engine's logger, loaded when there is first something to say: ``logging`` (with
traceback, string and threading) is several milliseconds of a cold start that logs nothing."""

from __future__ import annotations

import _thread
import os  # loaded with the interpreter: no cost

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


counters = Counts()  # since the process started
_unreported = Counts()  # since telemetry last took them: a few names, one per call site


def increment(name: str, amount: int = 1) -> None:
    with _lock:
        counters[name] += amount
        _unreported[name] += amount


def _after_fork_in_child() -> None:
    """A forked child starts with a fresh lock (one held by another thread at the fork stays
    held) and nothing unreported: its parent reports what was counted before the fork."""
    global _lock, _unreported
    _lock = _thread.allocate_lock()
    _unreported = Counts()


def take_unreported() -> dict[str, int]:
    """The counts bumped since the last call (for a telemetry batch), and from zero again."""
    global _unreported
    with _lock:
        taken, _unreported = _unreported, Counts()
    return dict(taken)


def untake(taken: dict[str, int]) -> None:
    """Give back counts a batch could not carry (no cohort to file them under)."""
    with _lock:
        for name, amount in taken.items():
            _unreported[name] += amount


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def logger() -> logging.Logger:
    """The engine's logger (``analemma_sdk.statebag``)."""
    import logging

    return logging.getLogger(LOGGER_NAME)
