"""Telemetry from the command line.

manage.py telemetry metrics FLAG --env prod [--since 1h] [--json]
    exposures per value/variant (evaluations, distinct units) and, for the statebag's own
    flags (analemma_sdk.flags.spec.SDK_FLAGS), the cohort metrics side by side: treatment
    (the flag on, or each value) against control.
manage.py telemetry aggregate
    roll raw batches up now and apply retention (what the periodic task does).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from telemetry import cli
from telemetry.services import telemetry_aggregate, telemetry_prune


class Command(BaseCommand):
    help = "Telemetry: a flag's exposures and cohort metrics; roll up now."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        metrics = sub.add_parser("metrics", help="a flag's exposures and, for statebag flags, cohort metrics")
        metrics.add_argument("flag")
        metrics.add_argument("--env", required=True)
        metrics.add_argument("--since", default="1h", help="how far back: 15m, 1h, 2d (default 1h)")
        metrics.add_argument("--json", action="store_true", help="print JSON instead of tables")
        sub.add_parser("aggregate", help="roll raw batches up now and apply retention")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "aggregate":
            result = {**asdict(telemetry_aggregate()), **asdict(telemetry_prune())}
            self.stdout.write(json.dumps(result, sort_keys=True))
            return
        cli.metrics(
            flag=options["flag"],
            environment=options["env"],
            since=options["since"],
            as_json=options["json"],
            write=self.stdout.write,
        )
