"""Process-local counters the engine bumps on events an operator should see (fallbacks,
refused guarantees). Export them with whatever metrics system the caller runs."""

from __future__ import annotations

import threading
from collections import Counter

_lock = threading.Lock()
counters: Counter[str] = Counter()


def increment(name: str, amount: int = 1) -> None:
    with _lock:
        counters[name] += amount
