"""Write keys for clients that commit state versions over HTTP (Lambdas), one owner each.

manage.py write_key create --owner acme [--name lambda]    (prints the key once)
manage.py write_key revoke PREFIX
manage.py write_key list [--owner acme]

Creations and revocations are audited as ``cli:<os user>``; ``--actor LABEL`` adds
``(claims: LABEL)``, recorded as said, not verified.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from audit.actors import cli_actor
from keys.services import key_create, key_find, key_revoke
from statebag.models import WriteKey


class Command(BaseCommand):
    help = "Create, revoke or list owner-scoped write keys for statebag commits over HTTP."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("action", choices=["create", "revoke", "list"])
        parser.add_argument("prefix", nargs="?")
        parser.add_argument("--owner")
        parser.add_argument("--name", default="")
        parser.add_argument(
            "--actor",
            default="",
            help="a name to record beside the OS user in the audit log (a claim, not verified)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        try:
            actor = cli_actor(claimed=options["actor"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if action == "create":
            if not options["owner"]:
                raise CommandError("--owner is required")
            key = WriteKey(owner_id=options["owner"], name=options["name"])
            try:
                raw = key_create(key=key, actor=actor)
            except ValidationError as exc:
                raise CommandError("; ".join(exc.messages)) from exc
            self.stderr.write(f"write key {key.prefix}… for owner {key.owner_id}; it will not be shown again")
            self.stdout.write(raw)
        elif action == "revoke":
            try:
                found = key_find(model=WriteKey, text=options["prefix"] or "")
            except LookupError as exc:
                raise CommandError(str(exc)) from exc
            key_revoke(key=found, actor=actor)
            self.stdout.write(f"revoked {found.prefix}")
        else:
            keys = WriteKey.objects.all()
            if options["owner"]:
                keys = keys.filter(owner_id=options["owner"])
            for row in keys:
                state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
                self.stdout.write(f"{row.prefix}  {row.owner_id}  {row.name or '-'}  {state}")
