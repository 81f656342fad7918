"""A clock a test moves by hand, for code that takes one (``clock=``): waiting out a TTL or a
schedule is then a step, not a sleep."""

from __future__ import annotations


class SteppedClock:
    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
