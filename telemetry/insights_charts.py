"""Line charts the rollout admin draws as inline SVG (no script, no library), in the style of
the dashboard's bar charts: a fixed 300 x 80 viewBox stretched to the page's width, one
polyline per series, an optional band (a confidence interval) behind it, and a title on each
point for the figures.

Time windows are fixed choices, each cut into at most ``MAX_POINTS`` buckets of whole
minutes (rollups are per minute): 1 h of minutes, 24 h of 15 minutes, 7 d of 2 hours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

MAX_POINTS = 120
WIDTH, HEIGHT = 300, 80
SERIES_CLASSES = tuple(f"series-{index}" for index in range(6))


@dataclass(frozen=True)
class Window:
    key: str
    label: str
    span: timedelta
    bucket: timedelta

    @property
    def buckets(self) -> int:
        return int(self.span / self.bucket)

    def start(self, now: datetime) -> datetime:
        """The first bucket's start: the last bucket is the one ``now`` falls in."""
        minute = now.replace(second=0, microsecond=0)
        step = int(self.bucket.total_seconds() // 60)
        last = minute - timedelta(minutes=(minute.hour * 60 + minute.minute) % step)
        return last - self.bucket * (self.buckets - 1)

    def index(self, start: datetime, moment: datetime) -> int | None:
        """The bucket ``moment`` falls in, or None outside the window."""
        at = (moment - start) // self.bucket
        return at if 0 <= at < self.buckets else None


WINDOWS = {
    window.key: window
    for window in (
        Window("1h", "1 h", timedelta(hours=1), timedelta(minutes=1)),
        Window("24h", "24 h", timedelta(hours=24), timedelta(minutes=15)),
        Window("7d", "7 d", timedelta(days=7), timedelta(hours=2)),
    )
}
DEFAULT_WINDOW = "24h"
assert all(window.buckets <= MAX_POINTS for window in WINDOWS.values())


def window_of(key: str | None) -> Window:
    """The window asked for; the default one for anything else (a stale link, a typo)."""
    return WINDOWS.get(key or "", WINDOWS[DEFAULT_WINDOW])


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    title: str


@dataclass(frozen=True)
class Line:
    label: str
    css: str
    points: list[Point]
    band: str  # SVG polygon points of the interval, "" for none
    dashed: bool = False
    total: str = ""  # the legend's figure over the whole window

    @property
    def path(self) -> str:
        return " ".join(f"{p.x},{p.y}" for p in self.points)


@dataclass(frozen=True)
class LineChart:
    lines: list[Line]
    peak_label: str
    floor_label: str
    first_label: str
    last_label: str
    width: int = WIDTH
    height: int = HEIGHT

    @property
    def empty(self) -> bool:
        return not any(line.points for line in self.lines)


@dataclass
class SeriesData:
    """One series' values per bucket (None: nothing that bucket), with an optional interval."""

    label: str
    values: list[float | None]
    low: list[float | None] | None = None
    high: list[float | None] | None = None
    dashed: bool = False
    total: str = ""
    css: str = ""
    titles: list[str] | None = None


def _fmt(value: float) -> str:
    if value == int(value) and abs(value) >= 1:
        return f"{int(value):,}"
    return f"{value:.3g}"


def line_chart(
    series: Sequence[SeriesData],
    *,
    window: Window,
    start: datetime,
    zero_floor: bool = True,
) -> LineChart:
    """Scale every series (and its interval) into one viewBox: the y range spans every value
    and interval edge (from 0 when ``zero_floor``), the x range the window's buckets."""
    figures = [
        v for s in series for column in (s.values, s.low or [], s.high or []) for v in column if v is not None
    ]
    top = max(figures, default=0.0)
    bottom = min([*figures, 0.0] if zero_floor else figures, default=0.0)
    if top <= bottom:
        top = bottom + 1
    slot = WIDTH / window.buckets

    def x_of(index: int) -> float:
        return round(slot * index + slot / 2, 2)

    def y_of(value: float) -> float:
        return round(HEIGHT - (value - bottom) / (top - bottom) * (HEIGHT - 4) - 2, 2)

    lines = []
    for number, s in enumerate(series):
        points = []
        for index, value in enumerate(s.values):
            if value is None:
                continue
            at = start + window.bucket * index
            title = s.titles[index] if s.titles else f"{_fmt(value)}"
            points.append(Point(x_of(index), y_of(value), f"{at:%Y-%m-%d %H:%M} UTC: {s.label}: {title}"))
        band = ""
        if s.low is not None and s.high is not None:
            edges = [
                (index, low, high)
                for index, (low, high) in enumerate(zip(s.low, s.high, strict=True))
                if low is not None and high is not None
            ]
            if edges:
                upper = [f"{x_of(i)},{y_of(high)}" for i, _low, high in edges]
                lower = [f"{x_of(i)},{y_of(low)}" for i, low, _high in reversed(edges)]
                band = " ".join(upper + lower)
        css = s.css or SERIES_CLASSES[number % len(SERIES_CLASSES)]
        lines.append(Line(s.label, css, points, band, s.dashed, s.total))
    span = window.span
    first = f"{span.days} d ago" if span.days else f"{int(span.total_seconds() // 3600)} h ago"
    return LineChart(lines, _fmt(top), _fmt(bottom), first, "now")
