"""Bad input on the command line is a CommandError with a clear message and changes nothing;
every change a command makes is audited as the OS user, with a claimed name beside it."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from audit.actors import os_user
from audit.models import AuditEntry
from rollout import services
from rollout.models import Environment, Flag, FlagState, Revision
from statebag.models import WriteKey

from ..factories import sdk_key

pytestmark = pytest.mark.django_db


def run(command, *args):
    out, err = StringIO(), StringIO()
    call_command(command, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def snapshot():
    return (
        list(Revision.objects.order_by("pk").values_list("pk", flat=True)),
        list(AuditEntry.objects.order_by("pk").values_list("pk", flat=True)),
        list(FlagState.objects.order_by("pk").values()),
        list(WriteKey.objects.values_list("pk", flat=True)),
    )


@pytest.fixture
def settings_flag():
    return services.flag_create(key="settings", kind="json", default_value={"limit": 1}, actor="ops")


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("--percentage", "NaN"), "percentage must be a number"),
        (("--percentage", "sNaN"), "percentage must be a number"),
        (("--percentage", "Infinity"), "percentage must be 0-100"),
        (("--percentage", "1e400"), "percentage must be 0-100"),
        (("--percentage", "-0.5"), "percentage must be 0-100"),
        (("--value", "NaN"), "NaN is not a JSON number"),
        (("--value=-Infinity",), "-Infinity is not a JSON number"),
        (("--value", "1e400"), "1e400 is too large for a number"),
        (("--value", "1" * 400), "too large for a number"),
        (("--value", '"3"'), "cannot be '3'"),
        (("--value", "40"), "from 1 to 22"),
    ],
)
def test_cli_set__number_flag_bad_input__command_error_and_nothing_changes(args, problem):
    before = snapshot()
    with pytest.raises(CommandError, match=problem):
        run("rollout", "set", "zstd_level", "--env", "prod", "--on", *args)
    assert snapshot() == before


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ('{"limit": NaN}', "NaN is not a JSON number"),
        ('{"limit": Infinity}', "Infinity is not a JSON number"),
        ('{"limit": 1e400}', "1e400 is too large"),
        ("[1, 2", "--value must be JSON"),
    ],
)
def test_cli_set__json_flag_value_without_a_json_form__command_error_and_nothing_changes(
    settings_flag, value, problem
):
    before = snapshot()
    with pytest.raises(CommandError, match=problem):
        run("rollout", "set", "settings", "--env", "prod", "--on", "--value", value)
    assert snapshot() == before


@pytest.mark.parametrize("owner", ["..", ".", "../acme", "a/b", "-x", ""])
def test_cli_write_key__owner_not_an_id__command_error_and_no_key(owner):
    before = snapshot()
    with pytest.raises(CommandError):
        run("write_key", "create", "--owner", owner)
    assert snapshot() == before


def test_cli_set__audited_as_the_os_user():
    run("rollout", "set", "use_zstd", "--env", "prod", "--on", "--value", "true", "--percentage", "5")
    entry = AuditEntry.objects.get(action="flag.update")
    assert entry.actor == f"cli:{os_user()}"
    assert Revision.objects.filter(environment__key="prod").latest("number").created_by == f"cli:{os_user()}"


def test_cli__actor_label__recorded_as_a_claim_beside_the_os_user():
    run("rollout", "kill", "use_zstd", "--env", "prod", "--actor", "alice")
    run("write_key", "create", "--owner", "acme", "--actor", "alice")
    claimed = f"cli:{os_user()} (claims: alice)"
    assert AuditEntry.objects.get(action="flag.kill").actor == claimed
    assert AuditEntry.objects.get(action="write_key.create").actor == claimed
    assert WriteKey.objects.get().created_by == claimed


def test_cli_sdk_key_revoke__audited_as_the_os_user():
    key, _ = sdk_key("prod")
    run("rollout", "sdk-key", "revoke", key.prefix)
    assert AuditEntry.objects.get(action="sdk_key.revoke").actor == f"cli:{os_user()}"


@pytest.mark.parametrize("label", ["x" * 65, "alice\nbob", "\x1b[31mred"])
def test_cli__actor_label_too_long_or_with_control_characters__command_error(label):
    before = snapshot()
    with pytest.raises(CommandError, match="--actor must be at most 64 printable characters"):
        run("rollout", "kill", "use_zstd", "--env", "prod", "--actor", label)
    with pytest.raises(CommandError, match="--actor must be at most 64 printable characters"):
        run("write_key", "create", "--owner", "acme", "--actor", label)
    assert snapshot() == before


def test_cli_set__unknown_flag_or_environment__command_error():
    assert Flag.objects.filter(key="use_zstd").exists() and Environment.objects.filter(key="prod").exists()
    with pytest.raises(CommandError, match="no flag 'nope'"):
        run("rollout", "set", "nope", "--env", "prod", "--on")
    with pytest.raises(CommandError, match="no environment 'mars'"):
        run("rollout", "set", "use_zstd", "--env", "mars", "--on")


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (
            ("rollback", "--env", "prod", "--to-revision", str(10**20), "--flag", "use_zstd"),
            "has no revision",
        ),
        (("rollback", "--env", "prod", "--to-revision", "-1", "--flag", "use_zstd"), "has no revision"),
        (("plan", "start", str(10**20)), "no plan"),
    ],
)
def test_cli__numbers_out_of_range__command_error(args, problem):
    before = snapshot()
    with pytest.raises(CommandError, match=problem):
        run("rollout", *args)
    assert snapshot() == before
