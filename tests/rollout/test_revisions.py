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


@pytest.fixture
def redis_cache(settings, redis_url):
    settings.CACHES = {"default": {"BACKEND": "analemma.cache.ReusedClientRedisCache", "LOCATION": redis_url}}
    settings.CACHE_SHARED = True
    from django.core.cache import cache

    cache.clear()
    yield cache
    cache.clear()


def test_document_publish__redis__an_older_revision_published_late_never_wins(prod, redis_cache, monkeypatch):
    from rollout.services import document_publish

    older = ramp("use_zstd", prod, enabled=True, value=True)
    newer = ramp("use_zstd", prod, enabled=False)  # the kill switch
    document_publish(revision=older)
    read = redis_cache.get

    landed = []

    def read_then_newer_lands(*args, **kwargs):
        # The publisher of the older revision has read the entry; the newer one lands now.
        value = read(*args, **kwargs)
        monkeypatch.setattr(redis_cache, "get", read)
        document_publish(revision=newer)
        landed.append(True)
        return value

    monkeypatch.setattr(redis_cache, "get", read_then_newer_lands)
    document_publish(revision=older)  # a slow publisher of the earlier commit, again
    monkeypatch.setattr(redis_cache, "get", read)
    if not landed:  # a publisher that never reads has no window: the newer one came first
        document_publish(revision=newer)
        document_publish(revision=older)
    assert document_cached(environment_key="prod")["revision"] == newer.number
    document_publish(revision=newer)  # the same revision again: still served
    assert document_cached(environment_key="prod")["etag"] == newer.etag


def test_revision__cache_down_after_commit__change_kept_no_error(
    prod, settings, django_capture_on_commit_callbacks
):
    from tests.servers import free_port

    settings.CACHES = {
        "default": {
            "BACKEND": "analemma.cache.ReusedClientRedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
        }
    }
    settings.CACHE_SHARED = True
    with django_capture_on_commit_callbacks(execute=True):
        revision = ramp("use_zstd", prod, enabled=True, value=True)  # no exception: it committed
    assert Revision.objects.filter(environment=prod, number=revision.number).exists()


def test_documents_repair__missing_or_older_entries__published_again(
    prod, django_capture_on_commit_callbacks
):
    from rollout.services.documents import documents_repair

    services.document_publish_latest(environment_key="prod")
    with django_capture_on_commit_callbacks(execute=False):  # the publish that got lost
        lost = ramp("use_zstd", prod, enabled=True, value=True)
    from django.core.cache import cache

    cache.delete(services.documents.cache_key("dev"))
    assert set(documents_repair()) >= {"prod", "dev"}
    assert cache.get(services.documents.cache_key("prod"))["revision"] == lost.number
    assert documents_repair() == []  # everything current: nothing rebuilt


def test_document_cached__process_memory__database_away__keeps_serving_its_copy(prod, settings, monkeypatch):
    from django.db import OperationalError

    from rollout.services import documents

    settings.CACHE_SHARED, settings.CACHE_LOCAL_CHECK_SECONDS = False, 0
    served = services.document_publish_latest(environment_key="prod")

    def away(**kwargs):
        raise OperationalError("the database is restarting")

    monkeypatch.setattr(documents, "revision_number_etag_latest", away)
    assert document_cached(environment_key="prod")["revision"] == served["revision"]


def test_revision__saved_whole__served_as_stored_under_its_etag(prod):
    latest = prod.revisions.order_by("-number").first()
    stored = {**latest.document, "environment": "production", "revision": latest.number + 1}
    body = document_body(stored)
    legacy = Revision.objects.create(
        environment=prod, number=latest.number + 1, snapshot=stored, etag=document_etag(body)
    )
    assert document_body(Revision.objects.get(pk=legacy.pk).document) == body
