import pytest

from analemma_sdk.flags.document import FlagSet
from analemma_sdk.flags.spec import flag_set_document
from audit.models import AuditEntry
from rollout import services
from rollout.models import Environment, Flag, FlagState, Revision
from rollout.services.documents import flag_document

from ..factories import sdk_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def prod():
    return Environment.objects.get(key="prod")


@pytest.fixture
def checkout():
    return services.flag_create(key="checkout-v2", kind="string", default_value="control", actor="ops")


def test_defaults__after_migrate__environments_and_statebag_flags_off():
    assert list(Environment.objects.values_list("key", flat=True)) == ["dev", "staging", "prod"]
    for environment in Environment.objects.all():
        flags = environment.revisions.order_by("-number").first().document["flags"]
        assert {k: (v["enabled"], v["default"]) for k, v in flags.items()} == {
            "use_batching": (False, False),
            "use_zstd": (False, False),
            "zstd_level": (False, 3),
            "use_2pc": (False, False),
        }


def test_flag_state_update__ramp_to_5_percent__new_revision_with_diff_and_audit(prod):
    flag = Flag.objects.get(key="use_zstd")
    before = prod.revisions.order_by("-number").first().number
    revision = services.flag_state_update(
        flag=flag, environment=prod, actor="alice", reason="canary", enabled=True, value=True, percentage="5"
    )
    assert revision.number == before + 1
    assert {(c["field"], c["after"]) for c in revision.diff} == {
        ("enabled", True),
        ("percentage", 5.0),
        ("value", True),
    }
    assert revision.document["flags"]["use_zstd"]["percentage"] == 5.0
    entry = AuditEntry.objects.filter(action="flag.update").latest("created_at")
    assert (entry.actor, entry.target, entry.detail["reason"]) == ("alice", "use_zstd", "canary")


@pytest.mark.parametrize(
    "changes",
    [
        {"percentage": "101"},
        {"percentage": "5.001"},
        {"percentage": "abc"},
        {"value": "yes"},  # boolean flag
        {"variants": [{"value": True, "weight": 60000}, {"value": False, "weight": 30000}]},
        {"variants": [{"value": True}]},
        {"targets": [{"units": "exec-1", "value": True}]},
        {"rules": [{"attribute": "workflow_id", "op": "regex", "values": ["x"], "value": True}]},
        {"seed": "7"},
        {"colour": "red"},
    ],
)
def test_flag_state_update__invalid_definition__typed_error_and_nothing_changes(prod, changes):
    flag = Flag.objects.get(key="use_2pc")
    revisions = Revision.objects.count()
    with pytest.raises(services.InvalidFlagError):
        services.flag_state_update(flag=flag, environment=prod, actor="alice", **changes)
    assert Revision.objects.count() == revisions
    assert FlagState.objects.get(flag=flag, environment=prod).percentage == 100


def test_revision_rollback__to_earlier__new_revision_equal_to_it(prod, checkout):
    start = prod.revisions.order_by("-number").first()
    services.flag_state_update(
        flag=checkout,
        environment=prod,
        actor="a",
        enabled=True,
        variants=[{"value": "control", "weight": 50000}, {"value": "new", "weight": 50000}],
    )
    services.flag_state_update(
        flag=Flag.objects.get(key="zstd_level"), environment=prod, actor="a", value=9, enabled=True
    )
    rollback = services.revision_rollback(environment=prod, number=start.number, actor="bob")
    assert rollback.rolled_back_to == start.number
    assert rollback.document["flags"] == start.document["flags"]
    assert AuditEntry.objects.filter(action="revision.rollback", actor="bob").exists()
    with pytest.raises(services.UnknownRevision):
        services.revision_rollback(environment=prod, number=999, actor="bob")


def test_flag_kill__enabled_flag__off_in_that_environment_only(prod, checkout):
    dev = Environment.objects.get(key="dev")
    for environment in (prod, dev):
        services.flag_state_update(
            flag=checkout, environment=environment, actor="a", enabled=True, value="new"
        )
    revision = services.flag_kill(flag=checkout, environment=prod, actor="oncall")
    assert revision.document["flags"]["checkout-v2"]["enabled"] is False
    assert FlagState.objects.get(flag=checkout, environment=dev).enabled is True
    assert AuditEntry.objects.filter(action="flag.kill", target="checkout-v2").exists()


@pytest.mark.parametrize(
    "changes", [{"value": 0}, {"value": 99}, {"targets": [{"units": ["e1"], "value": 23}]}]
)
def test_flag_state_update__zstd_level_sdks_would_refuse__refused_and_nothing_changes(prod, changes):
    flag = Flag.objects.get(key="zstd_level")
    revisions = Revision.objects.count()
    with pytest.raises(services.InvalidFlagError, match="zstd_level"):
        services.flag_state_update(flag=flag, environment=prod, actor="alice", enabled=True, **changes)
    assert Revision.objects.count() == revisions
    assert FlagState.objects.get(flag=flag, environment=prod).enabled is False


def test_flag_create__flag_set_over_the_sdk_limit__refused_and_nothing_changes(settings):
    revisions, flags = Revision.objects.count(), Flag.objects.count()
    with pytest.raises(services.InvalidDocumentError, match="SDKs accept at most"):
        services.flag_create(key="huge", kind="string", default_value="x" * (4 * 1024 * 1024), actor="alice")
    assert (Revision.objects.count(), Flag.objects.count()) == (revisions, flags)


def test_flag_details_update__description_and_owner__saved_and_audited(checkout):
    services.flag_details_update(flag=checkout, actor="carol", description="new checkout", owner="payments")
    checkout.refresh_from_db()
    assert (checkout.description, checkout.owner) == ("new checkout", "payments")
    entry = AuditEntry.objects.get(action="flag.describe")
    assert (entry.actor, entry.detail["after"]["owner"]) == ("carol", "payments")


def test_flag_kill__older_data_outside_todays_checks__unrelated_change_still_made(prod, checkout):
    # A revision written by an earlier version, which checked less: a numeric unit id and a
    # zstd level the state bag engine ignores.
    FlagState.objects.filter(flag__key="zstd_level", environment=prod).update(enabled=True, value=99)
    FlagState.objects.filter(flag=checkout, environment=prod).update(
        enabled=True, value="new", targets=[{"units": [123], "value": "vip"}]
    )
    states = FlagState.objects.filter(environment=prod).select_related("flag")
    number = Revision.objects.filter(environment=prod).count() + 1
    document = flag_set_document("prod", number, {s.flag.key: flag_document(s) for s in states})
    Revision.objects.create(environment=prod, number=number, snapshot=document, etag='"old"')

    revision = services.flag_kill(flag=checkout, environment=prod, actor="oncall")

    assert revision.document["flags"]["checkout-v2"]["enabled"] is False
    served = FlagSet(revision.document, environment="prod")  # and every SDK accepts it
    assert served.flags["zstd_level"].value == 99


def test_environment_create__every_flag_off_and_served_at_once(client):
    environment = services.environment_create(key="eu-canary", name="EU canary", actor="ops")
    revision = environment.revisions.get()
    assert set(revision.document["flags"]) == set(Flag.objects.values_list("key", flat=True))
    assert not any(spec["enabled"] for spec in revision.document["flags"].values())
    _, raw = sdk_key(environment)
    response = client.get("/api/v1/flagset", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 200 and response.json()["environment"] == "eu-canary"
    assert AuditEntry.objects.filter(action="environment.create", environment="eu-canary").exists()


def test_sdk_key__environment_key_of_the_longest_length__created():
    environment = services.environment_create(key="e" * 64, name="long", actor="ops")
    key, raw = sdk_key(environment)
    assert raw.startswith(key.prefix) and key.prefix.startswith("ask_" + "e" * 64 + "_")
