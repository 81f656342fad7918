"""Failpoints: named places in the commit protocol where a test can inject a crash.

Production code calls ``checkpoint(name)``; it does nothing unless a hook is installed (the
fault-injection harness) or STATEBAG_FAILPOINTS names the point (for tests that kill a real
worker: ``STATEBAG_FAILPOINTS="job.uploaded=sleep:30"``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

Hook = Callable[[str], None]
_hook: Hook | None = None


class InjectedFault(Exception):
    """Raised by a failpoint to simulate a crash at that step."""


def install(hook: Hook | None) -> None:
    global _hook
    _hook = hook


def _from_environment(name: str) -> None:
    spec = os.environ.get("STATEBAG_FAILPOINTS", "")
    for item in filter(None, (part.strip() for part in spec.split(","))):
        point, _, action = item.partition("=")
        if point != name:
            continue
        if action.startswith("sleep:"):
            time.sleep(float(action.split(":", 1)[1]))
        elif action == "raise":
            raise InjectedFault(name)


def checkpoint(name: str) -> None:
    if _hook is not None:
        _hook(name)
    elif "STATEBAG_FAILPOINTS" in os.environ:
        _from_environment(name)
