"""Find (and optionally delete) objects under a store prefix that the database does not know."""

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from analemma_sdk.statebag import InvalidKeyError
from statebag.services.store_audit import store_audit


class Command(BaseCommand):
    help = "List a store prefix and report objects no pack row knows; --delete removes those past the grace period."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--prefix", default="o/", help="store prefix to audit (default: o/)")
        parser.add_argument("--delete", action="store_true", help="delete unknown objects (default: dry run)")
        parser.add_argument("--grace-seconds", type=int, default=None, help="only objects older than this")

    def handle(self, *args: Any, **options: Any) -> None:
        grace = options["grace_seconds"]
        try:
            report = store_audit(
                prefix=options["prefix"],
                delete=options["delete"],
                grace=timedelta(seconds=grace) if grace is not None else None,
            )
        except InvalidKeyError as exc:
            raise CommandError(str(exc)) from exc
        mode = "deleted" if options["delete"] else "would delete (dry run)"
        self.stdout.write(f"listed {report.listed} objects, {len(report.unknown)} unknown to the database")
        for key in report.unknown:
            state = "kept: too young or age unknown" if key in report.too_young else mode
            self.stdout.write(f"  {key}  [{state}]")
