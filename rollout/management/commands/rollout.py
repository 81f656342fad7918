"""Scriptable rollout operations for pipelines; the same services the admin calls.

manage.py rollout set FLAG --env prod --percentage 5 [--on|--off] [--value JSON] [--reason ...]
manage.py rollout kill FLAG --env prod
manage.py rollout rollback --env prod --to-revision N
manage.py rollout sdk-key create --env prod [--name NAME]     (prints the key once)
manage.py rollout sdk-key revoke PREFIX
manage.py rollout show --env prod
"""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from keys.services import key_create, key_revoke
from rollout import services
from rollout.models import Environment, Flag, SdkKey
from rollout.selectors import revision_latest

ACTOR = "manage.py rollout"


class Command(BaseCommand):
    help = "Change flags, roll back, kill, manage SDK keys and show an environment's flag set."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        change = sub.add_parser("set", help="change a flag in one environment")
        change.add_argument("flag")
        change.add_argument("--env", required=True)
        change.add_argument("--percentage")
        change.add_argument("--value", help="JSON value served to units in the rollout")
        on_off = change.add_mutually_exclusive_group()
        on_off.add_argument("--on", dest="enabled", action="store_true", default=None)
        on_off.add_argument("--off", dest="enabled", action="store_false")
        change.add_argument("--reason", default="")
        kill = sub.add_parser("kill", help="turn a flag off in one environment")
        kill.add_argument("flag")
        kill.add_argument("--env", required=True)
        kill.add_argument("--reason", default="")
        rollback = sub.add_parser("rollback", help="a new revision equal to an earlier one")
        rollback.add_argument("--env", required=True)
        rollback.add_argument("--to-revision", type=int, required=True)
        rollback.add_argument("--reason", default="")
        keys = sub.add_parser("sdk-key", help="create or revoke SDK keys")
        keys.add_argument("key_action", choices=["create", "revoke"])
        keys.add_argument("prefix", nargs="?")
        keys.add_argument("--env")
        keys.add_argument("--name", default="")
        show = sub.add_parser("show", help="print the current flag-set document")
        show.add_argument("--env", required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            getattr(self, "_" + options["action"].replace("-", "_"))(options)
        except (services.InvalidDocumentError, services.UnknownRevision, ValueError) as exc:
            raise CommandError(str(exc)) from exc

    def _environment(self, key: str | None) -> Environment:
        environment = Environment.objects.filter(key=key).first()
        if environment is None:
            raise CommandError(f"no environment {key!r}")
        return environment

    def _flag(self, key: str) -> Flag:
        flag = Flag.objects.filter(key=key).first()
        if flag is None:
            raise CommandError(f"no flag {key!r}")
        return flag

    def _set(self, options: dict[str, Any]) -> None:
        changes: dict[str, Any] = {}
        if options["percentage"] is not None:
            changes["percentage"] = options["percentage"]
        if options["value"] is not None:
            try:
                changes["value"] = json.loads(options["value"])
            except ValueError as exc:
                raise CommandError(f"--value must be JSON: {exc}") from exc
        if options["enabled"] is not None:
            changes["enabled"] = options["enabled"]
        if not changes:
            raise CommandError("nothing to change: give --percentage, --value, --on or --off")
        revision = services.flag_state_update(
            flag=self._flag(options["flag"]),
            environment=self._environment(options["env"]),
            actor=ACTOR,
            reason=options["reason"],
            **changes,
        )
        self.stdout.write(f"{options['env']} is now at revision {revision.number}")

    def _kill(self, options: dict[str, Any]) -> None:
        revision = services.flag_kill(
            flag=self._flag(options["flag"]),
            environment=self._environment(options["env"]),
            actor=ACTOR,
            reason=options["reason"],
        )
        self.stdout.write(f"{options['flag']} is off in {options['env']} (revision {revision.number})")

    def _rollback(self, options: dict[str, Any]) -> None:
        revision = services.revision_rollback(
            environment=self._environment(options["env"]),
            number=options["to_revision"],
            actor=ACTOR,
            reason=options["reason"],
        )
        self.stdout.write(
            f"{options['env']} rolled back to r{options['to_revision']} as revision {revision.number}"
        )

    def _sdk_key(self, options: dict[str, Any]) -> None:
        if options["key_action"] == "create":
            key = SdkKey(environment=self._environment(options["env"]), name=options["name"])
            try:
                raw = key_create(key=key, actor=ACTOR)
            except ValidationError as exc:
                raise CommandError("; ".join(exc.messages)) from exc
            self.stdout.write(raw)
            self.stderr.write(f"SDK key {key.prefix}… for {key.environment}: shown once, stored hashed.")
            return
        matches = list(SdkKey.objects.filter(prefix=options["prefix"] or "", revoked_at__isnull=True))
        if len(matches) != 1:
            raise CommandError(
                f"{len(matches)} active keys have prefix {options['prefix']!r}; need exactly one"
            )
        key_revoke(key=matches[0], actor=ACTOR)
        self.stdout.write(f"revoked {matches[0].prefix}…")

    def _show(self, options: dict[str, Any]) -> None:
        revision = revision_latest(environment=self._environment(options["env"]))
        self.stdout.write(json.dumps(revision.document if revision else {}, indent=2, sort_keys=True))
