"""Write keys for clients that commit state versions over HTTP (Lambdas), one owner each.

manage.py write_key create --owner acme [--name lambda]    (prints the key once)
manage.py write_key revoke PREFIX
manage.py write_key list [--owner acme]
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from analemma_sdk.statebag import InvalidKeyError
from statebag.models import WriteKey
from statebag.services.write_keys import write_key_create, write_key_revoke

ACTOR = "manage.py write_key"


class Command(BaseCommand):
    help = "Create, revoke or list owner-scoped write keys for statebag commits over HTTP."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]  # Django's signature
        parser.add_argument("action", choices=["create", "revoke", "list"])
        parser.add_argument("prefix", nargs="?")
        parser.add_argument("--owner")
        parser.add_argument("--name", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "create":
            if not options["owner"]:
                raise CommandError("--owner is required")
            try:
                key, raw = write_key_create(owner_id=options["owner"], actor=ACTOR, name=options["name"])
            except InvalidKeyError as exc:
                raise CommandError(str(exc)) from exc
            self.stderr.write(f"write key {key.prefix}… for owner {key.owner_id}; it will not be shown again")
            self.stdout.write(raw)
        elif action == "revoke":
            key = WriteKey.objects.filter(prefix=options["prefix"] or "").first()
            if key is None:
                raise CommandError(f"no write key with prefix {options['prefix']!r}")
            write_key_revoke(key=key, actor=ACTOR)
            self.stdout.write(f"revoked {key.prefix}")
        else:
            keys = WriteKey.objects.all()
            if options["owner"]:
                keys = keys.filter(owner_id=options["owner"])
            for key in keys:
                state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
                self.stdout.write(f"{key.prefix}  {key.owner_id}  {key.name or '-'}  {state}")
