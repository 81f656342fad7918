"""`manage.py rollout rollback` puts one flag back by default (--flag), restores a whole
environment only when asked (--whole-environment), always shows the change first and applies
it only with --yes; `manage.py rollout plan` acts as a Django user who needs the flag right."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from audit.actors import os_user
from audit.models import AuditEntry
from rollout import services
from rollout.models import Environment, Flag, FlagState, Revision, RolloutPlan

from ..factories import UserFactory

pytestmark = pytest.mark.django_db


def run(*args):
    out, err = StringIO(), StringIO()
    call_command("rollout", *args, stdout=out, stderr=err)
    return out.getvalue()


@pytest.fixture
def prod():
    return Environment.objects.get(key="prod")


@pytest.fixture
def ramped(prod):
    """r(start): everything off; then use_zstd ramped to 5 % and, by someone else, use_2pc on."""
    start = prod.revisions.order_by("-number").first().number
    for key in ("use_zstd", "use_2pc"):
        services.flag_state_update(
            flag=Flag.objects.get(key=key),
            environment=prod,
            actor="ops",
            enabled=True,
            value=True,
            percentage="5",
        )
    return start


def enabled(key):
    return FlagState.objects.get(flag__key=key, environment__key="prod").enabled


def test_cli_rollback__one_flag__only_that_flag_goes_back(prod, ramped):
    out = run("rollback", "--env", "prod", "--to-revision", str(ramped), "--flag", "use_zstd", "--yes")
    assert "use_zstd enabled: true -> false" in out and "use_2pc" not in out.split("rolled back")[0]
    assert not enabled("use_zstd") and enabled("use_2pc")
    latest = prod.revisions.order_by("-number").first()
    assert latest.rolled_back_to == ramped and {c["flag"] for c in latest.diff} == {"use_zstd"}
    entry = AuditEntry.objects.get(action="flag.rollback")
    assert (entry.actor, entry.target) == (f"cli:{os_user()}", "use_zstd")


def test_cli_rollback__whole_environment__every_flag_goes_back(prod, ramped):
    out = run("rollback", "--env", "prod", "--to-revision", str(ramped), "--whole-environment", "--yes")
    assert "use_zstd enabled" in out and "use_2pc enabled" in out
    assert not enabled("use_zstd") and not enabled("use_2pc")


def test_cli_rollback__dry_run__preview_only(prod, ramped):
    revisions = Revision.objects.count()
    out = run("rollback", "--env", "prod", "--to-revision", str(ramped), "--flag", "use_zstd", "--dry-run")
    assert "use_zstd percentage: 5.0 -> 100.0" in out and "nothing changed" in out
    assert Revision.objects.count() == revisions and enabled("use_zstd")


def test_cli_rollback__without_yes_and_no_terminal__preview_then_refused(prod, ramped, capsys):
    revisions = Revision.objects.count()
    with pytest.raises(CommandError, match="give --yes to apply it"):
        run("rollback", "--env", "prod", "--to-revision", str(ramped), "--flag", "use_zstd")
    assert Revision.objects.count() == revisions and enabled("use_zstd")


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ((), "one of the arguments --flag --whole-environment is required"),
        (("--flag", "use_zstd", "--whole-environment"), "not allowed with argument"),
        (("--flag", "nope"), "no flag 'nope'"),
        (("--flag", "use_zstd", "--yes", "--dry-run"), "not allowed with argument"),
    ],
)
def test_cli_rollback__what_to_roll_back_unclear__command_error(prod, ramped, args, problem):
    revisions = Revision.objects.count()
    with pytest.raises(CommandError, match=problem):
        run("rollback", "--env", "prod", "--to-revision", str(ramped), *args)
    assert Revision.objects.count() == revisions


def test_cli_rollback__nothing_to_undo__says_so_and_no_revision(prod, ramped):
    revisions = Revision.objects.count()
    out = run("rollback", "--env", "prod", "--to-revision", str(ramped + 2), "--flag", "use_zstd", "--yes")
    assert "nothing to roll back" in out and Revision.objects.count() == revisions


@pytest.fixture
def plan():
    return services.plan_create(
        name="zstd",
        flag=Flag.objects.get(key="use_zstd"),
        value=True,
        steps=[{"environment": Environment.objects.get(key="prod"), "percentage": 5}],
        actor="ops",
    )


def test_cli_plan_start__as_a_user_with_the_flag_right__started_for_them(plan):
    alice = UserFactory(username="alice", permissions=["rollout.change_flagstate"])
    out = run("plan", "start", "zstd", "--user", "alice", "--actor", "release-bot")
    plan.refresh_from_db()
    assert (plan.status, plan.started_by) == (RolloutPlan.Status.RUNNING, alice) and "running" in out
    assert enabled("use_zstd")
    entry = AuditEntry.objects.get(action="plan.start")
    assert entry.actor == f"cli:{os_user()} (claims: release-bot)" and entry.detail["operator"] == "alice"
    run("plan", "abort", str(plan.pk), "--user", "alice", "--reason", "error rate")
    plan.refresh_from_db()
    assert (plan.status, plan.reason) == (RolloutPlan.Status.ABORTED, "error rate") and not enabled(
        "use_zstd"
    )


@pytest.mark.parametrize(
    ("user_args", "problem"),
    [
        (("--user", "viewer"), "needs the right to change flag states"),
        (("--user", "ghost"), "no active user 'ghost'"),
        ((), "no active user"),  # nobody named like the OS user
    ],
)
def test_cli_plan_start__user_without_the_right__command_error_and_nothing_changes(plan, user_args, problem):
    UserFactory(username="viewer", permissions=["rollout.change_rolloutplan"])
    revisions = Revision.objects.count()
    with pytest.raises(CommandError, match=problem):
        run("plan", "start", "zstd", *user_args)
    plan.refresh_from_db()
    assert plan.status == RolloutPlan.Status.DRAFT and Revision.objects.count() == revisions


def test_cli_plan_start__defaults_to_the_user_named_like_the_os_user(plan):
    UserFactory(username=os_user(), permissions=["rollout.change_flagstate"])
    run("plan", "start", "zstd")
    plan.refresh_from_db()
    assert plan.started_by.username == os_user()


def test_cli_plan__unknown_or_ambiguous__command_error(plan):
    with pytest.raises(CommandError, match="no plan 'nope'"):
        run("plan", "start", "nope")
    services.plan_create(name="zstd", flag=plan.flag, value=True, steps=[], actor="ops")
    with pytest.raises(CommandError, match="2 plans are named 'zstd'"):
        run("plan", "start", "zstd")
    assert "zstd" in run("plan", "list")


def test_cli_plan_pause__no_django_user_needed__audited_as_the_os_user(plan):
    services.plan_start(
        plan=plan, user=UserFactory(username="alice", permissions=["rollout.change_flagstate"])
    )
    run("plan", "pause", "zstd")
    plan.refresh_from_db()
    assert plan.status == RolloutPlan.Status.PAUSED
    assert AuditEntry.objects.get(action="plan.pause").actor == f"cli:{os_user()}"
