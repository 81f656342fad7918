"""What one flag change costs as the flag count grows: time of the change (the revision and
its publication) and bytes written to the database, against the document a whole-snapshot
revision would have stored (what every change wrote before revisions kept per-flag versions).

    python bench/revision_cost.py [--flags 250 1250 10000] [--changes 20] [--database-url URL]

Runs the service's own code in process on a fresh SQLite file (or the PostgreSQL database a
URL names; it must be empty), with flags of a typical size: a 5 % rollout with one rule and
a description. Prints a table, then JSON as the last line."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import emit_json, print_table


def setup(database_url: str, folder: Path) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "analemma.settings.local")
    os.environ["ANALEMMA_VAR_DIR"] = str(folder)
    os.environ["DATABASE_URL"] = database_url or f"sqlite:///{folder}/bench.sqlite3"
    os.environ["LOG_LEVEL"] = "WARNING"
    os.environ.pop("REDIS_URL", None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def grow_to(count: int) -> None:
    """Add flags of a typical size until there are ``count``, in one revision per environment."""
    from django.db import transaction

    from rollout.models import Environment, Flag, FlagState
    from rollout.services import revision_create

    have = Flag.objects.count()
    flags = Flag.objects.bulk_create(
        Flag(
            key=f"team-{i // 100:03d}-feature-{i:05d}",
            kind="boolean",
            default_value=False,
            description="Checkout redesign for the web shop, owned by the growth team.",
            owner="growth",
        )
        for i in range(have, count)
    )
    rule = [{"attribute": "region", "op": "in", "values": ["eu-west-1", "us-east-1"], "value": True}]
    with transaction.atomic():
        for environment in Environment.objects.all():
            FlagState.objects.bulk_create(
                FlagState(
                    flag=flag, environment=environment, enabled=True, value=True, percentage=5, rules=rule
                )
                for flag in flags
            )
            revision_create(environment=environment, actor="bench", reason=f"{count} flags")


def table_bytes() -> int:
    from django.db import connection

    from rollout.models import FlagVersion, Revision

    with connection.cursor() as cursor:
        total = 0
        for model, columns in (
            (Revision, ("snapshot", "diff", "etag", "reason")),
            (FlagVersion, ("spec", "flag_key")),
        ):
            expressions = " + ".join(f"COALESCE(LENGTH(CAST({c} AS TEXT)), 0)" for c in columns)
            cursor.execute(f"SELECT COALESCE(SUM({expressions}), 0) FROM {model._meta.db_table}")
            total += int(cursor.fetchone()[0])
    return total


def measure(count: int, changes: int) -> dict[str, Any]:
    from rollout.models import Environment, Flag
    from rollout.services import flag_state_update
    from rollout.services.documents import document_body

    grow_to(count)
    prod = Environment.objects.get(key="prod")
    flag = Flag.objects.order_by("key")[count // 2]
    before, seconds = table_bytes(), []
    for index in range(changes):
        started = time.perf_counter()
        revision = flag_state_update(flag=flag, environment=prod, actor="bench", percentage=10 + index)
        seconds.append(time.perf_counter() - started)
    written = (table_bytes() - before) / changes
    document = len(document_body(revision.document))
    return {
        "flags": count,
        "change_ms_median": statistics.median(seconds) * 1000,
        "change_ms_max": max(seconds) * 1000,
        "bytes_written_per_change": written,
        "whole_snapshot_bytes_per_change": document,
        "document_bytes": document,
        "document_fits_sdk_limit": document <= 4 * 1024 * 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--flags", type=int, nargs="+", default=[250, 1250, 10000])
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        setup(args.database_url, Path(folder))
        results = [measure(count, args.changes) for count in sorted(args.flags)]
    print_table(
        [
            "flags",
            "change ms (median)",
            "change ms (max)",
            "bytes written/change",
            "whole snapshot bytes",
            "document fits",
        ],
        [
            [
                r["flags"],
                r["change_ms_median"],
                r["change_ms_max"],
                int(r["bytes_written_per_change"]),
                r["whole_snapshot_bytes_per_change"],
                r["document_fits_sdk_limit"],
            ]
            for r in results
        ],
    )
    emit_json({"database": "postgresql" if args.database_url else "sqlite", "results": results})


if __name__ == "__main__":
    sys.exit(main())
