"""A flag's exposures and cohort metrics, printed: the body of ``manage.py telemetry metrics``
and of ``manage.py rollout metrics`` (which reaches it through the ROLLOUT_METRICS_COMMAND
setting, since rollout may not import telemetry).

Exposures per value/variant (evaluations, distinct units) and, for the statebag's own flags
(analemma_sdk.flags.spec.SDK_FLAGS), the cohort metrics side by side: treatment (the flag on,
or each value) against control.

``--env`` names an environment's key, or ``owner:<owner id>`` for what hydrators without a flag
client reported with that owner's write key (cohort metrics only: a write key evaluates no
flags)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from django.core.management.base import CommandError
from django.utils import timezone

from analemma_sdk.flags.spec import SDK_FLAGS
from rollout.models import Environment, Flag
from statebag.models import WriteKey
from telemetry import selectors
from telemetry.services import namespace_owner
from telemetry.sketch import STANDARD_ERROR

Write = Callable[[str], Any]

_DURATION = re.compile(r"(\d+)\s*([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
MAX_SINCE = timedelta(days=366)
# (label, summary key, format)
COHORT_ROWS = [
    ("executions", "executions", "{:,}"),
    ("requests per execution", "requests_per_execution", "{:.2f}"),
    ("bytes written", "bytes_written", "{:,}"),
    ("bytes written per execution", "bytes_written_per_execution", "{:,.0f}"),
    ("p95 hydrate (ms, at most)", "p95_hydrate_ms", "{}"),
    ("p95 dehydrate (ms, at most)", "p95_dehydrate_ms", "{}"),
    ("error rate", "error_rate", "{:.2%}"),
    ("degraded-to-legacy rate", "degraded_to_legacy_rate", "{:.2%}"),
]


def parse_since(text: str) -> timedelta:
    """``90s``, ``15m``, ``1h``, ``2d``, or a sum of them (``1h30m``)."""
    parts = _DURATION.findall(text.strip().lower())
    if not parts or _DURATION.sub("", text.strip().lower()).strip():
        raise CommandError(f"--since {text!r}: give a duration such as 15m, 1h, 2d or 1h30m")
    try:
        since = sum((timedelta(**{_UNITS[unit]: int(amount)}) for amount, unit in parts), timedelta())
    except (OverflowError, ValueError):  # e.g. 99999999999999999999h: past what timedelta can hold
        since = MAX_SINCE * 2
    if not timedelta(0) < since <= MAX_SINCE:
        raise CommandError(f"--since {text!r}: from 1s to {MAX_SINCE.days} days")
    return since


def _side_label(flag: str, side: str) -> str:
    if SDK_FLAGS.get(flag, {}).get("kind") == "boolean":
        return {"true": "treatment (on)", "false": "control (off)", "null": "not recorded"}.get(side, side)
    return f"{flag}={side}"


def _cell(value: Any, template: str) -> str:
    return "-" if value is None else template.format(value)


def metrics(*, flag: str, environment: str, since: str, as_json: bool, write: Write) -> None:
    """Print ``flag``'s report for ``environment`` over the last ``since`` (``1h``, ``15m``...)
    with ``write`` (one line a call), as tables or as one JSON document. Raises CommandError
    for an unknown environment or flag, or a duration it cannot read."""
    owner = namespace_owner(environment)
    if owner is not None:
        if not WriteKey.objects.filter(owner_id=owner).exists():
            raise CommandError(f"no write key of owner {owner!r} (--env owner:<owner id>)")
    elif not Environment.objects.filter(key=environment).exists():
        raise CommandError(f"no environment {environment!r} (or give owner:<owner id>)")
    if not Flag.objects.filter(key=flag).exists() and flag not in SDK_FLAGS:
        raise CommandError(f"no flag {flag!r}")
    until = timezone.now()
    start = until - parse_since(since)
    report = metrics_report(environment, flag, start, until)
    if as_json:
        write(json.dumps(report, default=str))
    else:
        _print(report, start, write)


def metrics_report(environment: str, flag: str, since: datetime, until: datetime) -> dict[str, Any]:
    exposures = selectors.exposures(environment=environment, flag=flag, since=since, until=until)
    ingested = selectors.ingestion(environment=environment, since=since, until=until)
    report: dict[str, Any] = {
        "environment": environment,
        "flag": flag,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "units_standard_error": round(STANDARD_ERROR, 4),
        "exposures": [
            {**asdict(exposure), "units": round(exposure.units) if exposure.units is not None else None}
            for exposure in exposures
        ],
        "ingestion": {
            name: sum(getattr(point, name) for point in ingested)
            for name in ("batches", "evaluations", "dropped", "refused", "duplicates")
        },
    }
    if flag in SDK_FLAGS:
        split = selectors.cohort_split(environment=environment, flag=flag, since=since, until=until)
        # Treatment first: the side the flag turns on, then control, then cohorts without it.
        order = {"true": 0, "false": 1, "null": 2}
        sides = sorted(split, key=lambda side: (order.get(side, 0), side))
        report["cohorts"] = {side: split[side].summary() for side in sides}
    return report


def _print(report: dict[str, Any], since: datetime, write: Write) -> None:
    write(f"{report['flag']} in {report['environment']} since {since:%Y-%m-%d %H:%M} UTC")
    write("")
    rows = [["variant", "value", "evaluations", "distinct units", "reasons"]]
    for exposure in report["exposures"]:
        rows.append(
            [
                "-" if exposure["variant"] is None else str(exposure["variant"]),
                json.dumps(exposure["value"]),
                f"{exposure['evaluations']:,}",
                "-" if exposure["units"] is None else f"~{exposure['units']:,}",
                " ".join(f"{reason}={count:,}" for reason, count in exposure["by_reason"].items()),
            ]
        )
    if len(rows) == 1:
        write("no evaluations reported")
    else:
        _table(write, rows)
        write(f"distinct units are estimates (standard error {report['units_standard_error']:.1%})")
    if "cohorts" in report:
        write("")
        sides = report["cohorts"]
        if not sides:
            write("no statebag cohort reports")
        else:
            header = ["cohort metric", *(_side_label(report["flag"], side) for side in sides)]
            table = [header]
            for label, key, template in COHORT_ROWS:
                table.append([label, *(_cell(summary[key], template) for summary in sides.values())])
            _table(write, table)
    ingestion = report["ingestion"]
    write("")
    write(
        "batches {batches:,}, dropped by SDKs {dropped:,}, refused over the limit {refused:,}, "
        "sent again {duplicates:,}".format(**ingestion)
    )


def _table(write: Write, rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            write("  ".join("-" * width for width in widths))
