"""Scriptable rollout operations for pipelines; the same services the admin calls.

manage.py rollout set FLAG --env prod [--percentage 5] [--on|--off] [--value JSON] [--reason ...]
manage.py rollout kill FLAG --env prod
manage.py rollout rollback --env prod --to-revision N --flag FLAG [--dry-run | --yes]
manage.py rollout rollback --env prod --to-revision N --whole-environment [--dry-run | --yes]
manage.py rollout plan list
manage.py rollout plan start|pause|resume|abort PLAN [--user NAME] [--reason ...]
manage.py rollout sdk-key create --env prod [--name NAME]     (prints the key once)
manage.py rollout sdk-key list [--env prod]
manage.py rollout sdk-key revoke PREFIX          (as listed, or the whole key)
manage.py rollout show --env prod
manage.py rollout metrics FLAG --env prod [--since 1h] [--json]
    exposures per value/variant and, for the statebag's flags, cohorts side by side (the
    telemetry app's report, reached through settings.ROLLOUT_METRICS_COMMAND)

Every change is audited as ``cli:<os user>``; ``--actor LABEL`` adds ``(claims: LABEL)``,
recorded as said, not verified. Plan operations act as a Django user (``--user``, by default
the one named like the OS user), who needs the right to change flag states: a running plan
goes on acting for them.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from django.apps import apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.module_loading import import_string

from audit.actors import cli_actor, os_user
from keys.services import key_create, key_find, key_revoke
from rollout import services
from rollout.json_input import json_loads_finite, json_problem
from rollout.models import Environment, Flag, RolloutPlan, SdkKey
from rollout.selectors import revision_latest

CHANGES = ("set", "kill", "rollback", "plan", "sdk-key")


class Command(BaseCommand):
    help = "Change flags, roll back, run plans, manage SDK keys and show an environment's flag set."

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
        rollback = sub.add_parser(
            "rollback",
            help="one flag (--flag) or the whole environment (--whole-environment) back to a revision",
        )
        rollback.add_argument("--env", required=True)
        rollback.add_argument("--to-revision", type=int, required=True)
        what = rollback.add_mutually_exclusive_group(required=True)
        what.add_argument("--flag", help="the flag to put back as it was in that revision")
        what.add_argument(
            "--whole-environment",
            action="store_true",
            help="restore every flag of the environment to that revision",
        )
        confirm = rollback.add_mutually_exclusive_group()
        confirm.add_argument("--yes", action="store_true", help="apply without asking")
        confirm.add_argument("--dry-run", action="store_true", help="only print what would change")
        rollback.add_argument("--reason", default="")
        plan = sub.add_parser("plan", help="list rollout plans, or start, pause, resume or abort one")
        plan.add_argument("plan_action", choices=["list", "start", "pause", "resume", "abort"])
        plan.add_argument("plan", nargs="?", help="the plan's id or name")
        plan.add_argument(
            "--user", help="the Django user to act as (default: the one named like the OS user)"
        )
        plan.add_argument("--reason", default="aborted", help="why (abort)")
        keys = sub.add_parser("sdk-key", help="create, list or revoke SDK keys")
        keys.add_argument("key_action", choices=["create", "list", "revoke"])
        keys.add_argument("prefix", nargs="?", help="revoke: the key's prefix as listed, or the key")
        keys.add_argument("--env")
        keys.add_argument("--name", default="")
        for changing in (change, kill, rollback, plan, keys):
            changing.add_argument(
                "--actor",
                default="",
                help="a name to record beside the OS user in the audit log (a claim, not verified)",
            )
        show = sub.add_parser("show", help="print the current flag-set document")
        show.add_argument("--env", required=True)
        metrics = sub.add_parser("metrics", help="a flag's exposures and, for statebag flags, cohort metrics")
        metrics.add_argument("flag")
        metrics.add_argument("--env", required=True)
        metrics.add_argument("--since", default="1h", help="how far back: 15m, 1h, 2d (default 1h)")
        metrics.add_argument("--json", action="store_true", help="print JSON instead of tables")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["action"] in CHANGES:
                options["actor"] = cli_actor(claimed=options["actor"])
            getattr(self, "_" + options["action"].replace("-", "_"))(options)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        except (services.InvalidDocumentError, services.UnknownRevision, ValueError, PermissionDenied) as exc:
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
                changes["value"] = json_loads_finite(options["value"])
            except json.JSONDecodeError as exc:
                raise CommandError(f"--value must be JSON: {json_problem(exc)}") from exc
        if options["enabled"] is not None:
            changes["enabled"] = options["enabled"]
        if not changes:
            raise CommandError("nothing to change: give --percentage, --value, --on or --off")
        revision = services.flag_state_update(
            flag=self._flag(options["flag"]),
            environment=self._environment(options["env"]),
            actor=options["actor"],
            reason=options["reason"],
            **changes,
        )
        self.stdout.write(f"{options['env']} is now at revision {revision.number}")

    def _kill(self, options: dict[str, Any]) -> None:
        revision = services.flag_kill(
            flag=self._flag(options["flag"]),
            environment=self._environment(options["env"]),
            actor=options["actor"],
            reason=options["reason"],
        )
        self.stdout.write(f"{options['flag']} is off in {options['env']} (revision {revision.number})")

    def _rollback(self, options: dict[str, Any]) -> None:
        environment = self._environment(options["env"])
        number, flag_key = options["to_revision"], options["flag"]
        if flag_key is not None:
            self._flag(flag_key)
        preview = services.rollback_preview(environment=environment, number=number, flag_key=flag_key)
        what = f"{flag_key} in {environment}" if flag_key else f"every flag of {environment}"
        if not preview:
            self.stdout.write(f"nothing to roll back: {what} is as it was in r{number}")
            return
        self.stdout.write(f"rolling {what} back to r{number} changes:")
        for change in preview:
            before, after = json.dumps(change["before"]), json.dumps(change["after"])
            self.stdout.write(f"  {change['flag']} {change['field']}: {before} -> {after}")
        if options["dry_run"]:
            self.stdout.write("dry run: nothing changed")
            return
        if not options["yes"] and not self._confirmed():
            raise CommandError("not applied: give --yes to apply it, or --dry-run to only preview")
        if flag_key is not None:
            revision = services.flag_rollback(
                environment=environment,
                flag_key=flag_key,
                number=number,
                actor=options["actor"],
                reason=options["reason"],
            )
        else:
            revision = services.revision_rollback(
                environment=environment, number=number, actor=options["actor"], reason=options["reason"]
            )
        self.stdout.write(f"{what} rolled back to r{number} as revision {revision.number}")

    def _confirmed(self) -> bool:
        if not sys.stdin.isatty():
            return False
        return input("Apply? [y/N] ").strip().lower() in ("y", "yes")

    def _plan(self, options: dict[str, Any]) -> None:
        if options["plan_action"] == "list":
            for row in RolloutPlan.objects.select_related("flag", "started_by").order_by("pk"):
                operator = row.started_by.get_username() if row.started_by else "-"
                self.stdout.write(
                    f"{row.pk}  {row.name}  {row.flag}  {row.status}  operator: {operator}"
                    + (f"  ({row.reason})" if row.reason else "")
                )
            return
        plan = self._find_plan(options["plan"])
        action = options["plan_action"]
        # Pausing changes no flag: the OS user is enough. The others act as a Django user.
        user = None if action == "pause" and not options["user"] else self._user(options["user"])
        if action == "abort":
            plan = services.plan_abort(plan=plan, user=user, actor=options["actor"], reason=options["reason"])
        else:
            operation = {
                "start": services.plan_start,
                "pause": services.plan_pause,
                "resume": services.plan_resume,
            }
            plan = operation[action](plan=plan, user=user, actor=options["actor"])
        self.stdout.write(
            f"plan {plan.pk} {plan.name}: {plan.status}" + (f" ({plan.reason})" if plan.reason else "")
        )
        if plan.status == RolloutPlan.Status.FAILED:
            raise CommandError(f"plan {plan.name} failed: {plan.reason}")

    def _find_plan(self, ref: str | None) -> RolloutPlan:
        if not ref:
            raise CommandError("name the plan: its id or its name (see `rollout plan list`)")
        plans = list(
            RolloutPlan.objects.filter(pk=int(ref))
            if ref.isascii() and ref.isdigit()
            else RolloutPlan.objects.filter(name=ref)
        )
        if len(plans) != 1:
            raise CommandError(
                f"no plan {ref!r}" if not plans else f"{len(plans)} plans are named {ref!r}; give its id"
            )
        return plans[0]

    def _user(self, username: str | None) -> Any:
        name = username or os_user()
        user = get_user_model()._default_manager.filter(**{get_user_model().USERNAME_FIELD: name}).first()
        if user is None or not user.is_active:
            raise CommandError(
                f"no active user {name!r} to act as: give --user NAME (a Django user allowed to change flag states)"
            )
        return user

    def _sdk_key(self, options: dict[str, Any]) -> None:
        if options["key_action"] == "create":
            key = SdkKey(environment=self._environment(options["env"]), name=options["name"])
            raw = key_create(key=key, actor=options["actor"])
            self.stdout.write(raw)
            self.stderr.write(f"SDK key {key.prefix}… for {key.environment}: shown once, stored hashed.")
            return
        if options["key_action"] == "list":
            keys = SdkKey.objects.select_related("environment").order_by("environment_id", "created_at")
            if options["env"]:
                keys = keys.filter(environment=self._environment(options["env"]))
            for row in keys:
                state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
                used = f"used {row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "never used"
                self.stdout.write(f"{row.prefix}  {row.environment}  {row.name or '-'}  {state}  {used}")
            return
        try:
            found = key_find(model=SdkKey, text=options["prefix"] or "")
        except LookupError as exc:
            raise CommandError(str(exc)) from exc
        key_revoke(key=found, actor=options["actor"])
        self.stdout.write(f"revoked {found.prefix}…")

    def _show(self, options: dict[str, Any]) -> None:
        revision = revision_latest(environment=self._environment(options["env"]))
        self.stdout.write(json.dumps(revision.document if revision else {}, indent=2, sort_keys=True))

    def _metrics(self, options: dict[str, Any]) -> None:
        # Telemetry sits above rollout: its report is named by a setting, not imported.
        dotted = str(getattr(settings, "ROLLOUT_METRICS_COMMAND", "") or "")
        app = dotted.split(".", 1)[0]
        if not dotted or not apps.is_installed(app):
            raise CommandError(
                "rollout metrics needs the telemetry app: add it to INSTALLED_APPS and set "
                'ROLLOUT_METRICS_COMMAND (e.g. "telemetry.cli.metrics")'
            )
        try:
            report = import_string(dotted)
        except ImportError as exc:
            raise CommandError(f"ROLLOUT_METRICS_COMMAND {dotted!r} cannot be imported: {exc}") from exc
        report(
            flag=options["flag"],
            environment=options["env"],
            since=options["since"],
            as_json=options["json"],
            write=self.stdout.write,
        )
