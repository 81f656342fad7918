import json

import pytest
from django.core.management import CommandError, call_command

from rollout.models import Environment, FlagState

from ..factories import sdk_key_scope

pytestmark = pytest.mark.django_db


def run(*args):
    from io import StringIO

    out, err = StringIO(), StringIO()
    call_command("rollout", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_rollout_command__set_kill_rollback_show():
    prod = Environment.objects.get(key="prod")
    start = prod.revisions.order_by("-number").first().number
    run("set", "use_zstd", "--env", "prod", "--percentage", "5", "--on", "--value", "true")
    state = FlagState.objects.get(flag__key="use_zstd", environment=prod)
    assert (state.enabled, float(state.percentage), state.value) == (True, 5.0, True)
    run("kill", "use_zstd", "--env", "prod")
    assert not FlagState.objects.get(flag__key="use_zstd", environment=prod).enabled
    run("rollback", "--env", "prod", "--to-revision", str(start), "--whole-environment", "--yes")
    shown = json.loads(run("show", "--env", "prod")[0])
    assert shown["flags"] == prod.revisions.get(number=start).document["flags"]


def test_rollout_command__sdk_key_create_prints_key_once_and_revoke(django_capture_on_commit_callbacks):
    out, err = run("sdk-key", "create", "--env", "staging", "--name", "ci")
    raw = out.strip()
    assert sdk_key_scope(raw) == "staging" and raw not in err
    prefix = Environment.objects.get(key="staging").sdk_keys.get().prefix
    with django_capture_on_commit_callbacks(execute=True):
        run("sdk-key", "revoke", prefix)
    assert sdk_key_scope(raw) is None


@pytest.mark.parametrize("as_given", ["the key", "the prefix as printed"])
def test_rollout_command__sdk_key_list_then_revoke_by_what_was_shown(as_given):
    raw = run("sdk-key", "create", "--env", "staging", "--name", "ci")[0].strip()
    listed = run("sdk-key", "list", "--env", "staging")[0]
    prefix = Environment.objects.get(key="staging").sdk_keys.get().prefix
    assert f"{prefix}  staging  ci  active  never used" in listed and raw not in listed
    run("sdk-key", "revoke", raw if as_given == "the key" else f"{prefix}…")
    assert "revoked" in run("sdk-key", "list")[0]
    with pytest.raises(CommandError, match="no active key"):
        run("sdk-key", "revoke", prefix)


@pytest.mark.parametrize(
    "args",
    [
        ("set", "use_zstd", "--env", "prod", "--percentage", "250"),
        ("set", "nope", "--env", "prod", "--on"),
        ("set", "use_zstd", "--env", "mars", "--on"),
        ("set", "use_zstd", "--env", "prod"),
        ("rollback", "--env", "prod", "--to-revision", "999", "--whole-environment", "--yes"),
        ("set", "use_zstd", "--env", "prod", "--value", "{not json"),
    ],
)
def test_rollout_command__bad_input__command_error(args):
    with pytest.raises(CommandError):
        run(*args)
