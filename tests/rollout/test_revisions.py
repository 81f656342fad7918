"""Revisions store what they change; one flag rolls back alone, a whole environment only when
asked; a process caching in its own memory sees another process's revision."""

import pytest
from django.db import connection

from audit.models import AuditEntry
from rollout import services
from rollout.models import Environment, Flag, FlagVersion, Revision
from rollout.services.documents import document_body, document_cached, document_etag

pytestmark = pytest.mark.django_db


@pytest.fixture
def prod():
    return Environment.objects.get(key="prod")


def ramp(flag_key, environment, **changes):
    return services.flag_state_update(
        flag=Flag.objects.get(key=flag_key), environment=environment, actor="alice", **changes
    )


def test_revision__a_change__writes_only_the_changed_flag(prod):
    versions, revisions = FlagVersion.objects.count(), Revision.objects.count()
    revision = ramp("use_zstd", prod, enabled=True, value=True, percentage=5)
    assert Revision.objects.count() == revisions + 1 and revision.snapshot is None
    assert FlagVersion.objects.count() == versions + 1
    opened = FlagVersion.objects.get(environment=prod, since=revision.number)
    assert opened.flag_key == "use_zstd" and opened.spec["percentage"] == 5.0
    closed = FlagVersion.objects.get(environment=prod, flag_key="use_zstd", until=revision.number)
    assert closed.spec["enabled"] is False


def test_revision__every_revision__rebuilt_byte_for_byte_under_its_etag(prod):
    ramp("use_zstd", prod, enabled=True, value=True, percentage=5)
    ramp("use_batching", prod, enabled=True)
    ramp("use_zstd", prod, percentage=25)
    for revision in Revision.objects.filter(environment=prod):
        fresh = Revision.objects.get(pk=revision.pk)  # nothing memoised
        assert document_etag(document_body(fresh.document)) == revision.etag
    first, last = Revision.objects.filter(environment=prod).order_by("number")[::3]
    assert first.document["flags"]["use_zstd"]["enabled"] is False
    assert last.document["flags"]["use_zstd"]["percentage"] == 25.0


def test_revision__saved_whole_before_versions__read_and_continued(prod):
    latest = prod.revisions.order_by("-number").first()
    FlagVersion.objects.filter(environment=prod).delete()
    legacy = Revision.objects.create(
        environment=prod, number=latest.number + 1, snapshot=latest.document, etag=latest.etag
    )
    revision = ramp("use_batching", prod, enabled=True)
    assert revision.number == legacy.number + 1
    assert set(revision.document["flags"]) == set(legacy.document["flags"])
    assert FlagVersion.objects.filter(environment=prod, until__isnull=True).count() == len(
        legacy.snapshot["flags"]
    )


def test_flag_rollback__undoes_one_ramp__leaves_another_flags_change(prod):
    before = prod.revisions.order_by("-number").first().number
    ramp("use_zstd", prod, enabled=True, value=True, percentage=5)
    ramp("use_2pc", prod, enabled=True)  # another operator, meanwhile
    preview = services.rollback_preview(environment=prod, number=before, flag_key="use_zstd")
    assert {change["flag"] for change in preview} == {"use_zstd"}
    assert {change["field"] for change in preview} == {"enabled", "percentage", "value"}
    revision = services.flag_rollback(environment=prod, flag_key="use_zstd", number=before, actor="bob")
    flags = revision.document["flags"]
    assert flags["use_zstd"]["enabled"] is False and flags["use_2pc"]["enabled"] is True
    assert revision.diff == preview and revision.rolled_back_to == before
    entry = AuditEntry.objects.get(action="flag.rollback")
    assert (entry.actor, entry.target, entry.detail["to"]) == ("bob", "use_zstd", before)


def test_revision_rollback__whole_environment__preview_is_what_it_does(prod):
    before = prod.revisions.order_by("-number").first().number
    ramp("use_zstd", prod, enabled=True, value=True, percentage=5)
    ramp("use_2pc", prod, enabled=True)
    services.flag_create(key="new-checkout", kind="boolean", default_value=False, actor="alice")
    ramp("new-checkout", prod, enabled=True)
    preview = services.rollback_preview(environment=prod, number=before)
    revision = services.revision_rollback(environment=prod, number=before, actor="bob")
    assert revision.diff == preview
    flags = revision.document["flags"]
    assert not flags["use_zstd"]["enabled"] and not flags["use_2pc"]["enabled"]
    assert flags["new-checkout"]["enabled"] is False  # born since: kept, switched off


def test_flag_rollback__unknown_revision_or_flag__refused_nothing_changed(prod):
    count = Revision.objects.count()
    with pytest.raises(services.UnknownRevision):
        services.flag_rollback(environment=prod, flag_key="use_zstd", number=999, actor="bob")
    with pytest.raises(services.UnknownRevision):
        services.flag_rollback(environment=prod, flag_key="nope", number=1, actor="bob")
    assert Revision.objects.count() == count


def test_document_cached__process_memory__sees_another_processs_revision(
    prod, settings, django_capture_on_commit_callbacks
):
    settings.CACHE_SHARED, settings.CACHE_LOCAL_CHECK_SECONDS = False, 60
    served = services.document_publish_latest(environment_key="prod")
    # Another process: the revision commits, but this process's cache never hears of it.
    with django_capture_on_commit_callbacks(execute=False):
        other = ramp("use_zstd", prod, enabled=True, value=True)
    assert document_cached(environment_key="prod")["revision"] == served["revision"]  # within the window
    settings.CACHE_LOCAL_CHECK_SECONDS = 0
    assert document_cached(environment_key="prod")["revision"] == other.number


def test_document_cached__shared_cache__no_database_query(prod, settings, django_assert_num_queries):
    settings.CACHE_SHARED, settings.CACHE_LOCAL_CHECK_SECONDS = True, 0
    services.document_publish_latest(environment_key="prod")
    with django_assert_num_queries(0):
        assert document_cached(environment_key="prod") is not None


def test_document_cached__process_memory__one_cheap_query_per_check(prod, settings):
    settings.CACHE_SHARED, settings.CACHE_LOCAL_CHECK_SECONDS = False, 0
    services.document_publish_latest(environment_key="prod")
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        document_cached(environment_key="prod")
    assert len(queries) == 1 and "LIMIT 1" in queries[0]["sql"].upper()


def test_flag_set__10000_flags_of_typical_size__publishable_and_over_4_mib_refused():
    from analemma_sdk.flags.spec import InvalidDocumentError, check_publishable, flag_set_document, flag_spec

    rule = [{"attribute": "region", "op": "in", "values": ["eu-west-1", "us-east-1"], "value": True}]
    flags = {
        f"team-{i // 100:03d}-feature-{i:05d}": flag_spec(
            "boolean", False, enabled=True, value=True, percentage=5.0, rules=rule
        )
        for i in range(10_000)
    }
    document = flag_set_document("prod", 1, flags)
    check_publishable(document, document_body(document))  # fits, every flag checked
    flags.update({f"bulky-{i}": flag_spec("string", "x" * 200) for i in range(10_000)})
    document = flag_set_document("prod", 2, flags)
    with pytest.raises(InvalidDocumentError, match="SDKs accept at most"):
        check_publishable(document, document_body(document), changed=["bulky-1"])
