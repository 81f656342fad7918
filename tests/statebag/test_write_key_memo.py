"""A write key's lookup at fleet scale: with a shared cache (Redis) each process keeps what it
read there for KEY_MEMO_SECONDS, so a busy worker does not ask Redis on every request, and a
revocation still reaches every process within a second: at once in the process that revoked,
within the memo's time elsewhere; a lookup that read the key before its revocation cannot
keep it."""

from __future__ import annotations

import pytest

from keys import services
from keys.services import KEY_MEMO_SECONDS, key_revoke, key_scope
from statebag.models import WriteKey

from ..factories import write_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def shared(settings, monkeypatch):
    """The cache stands in for Redis (shared by every process); its reads are counted."""
    settings.CACHE_SHARED = True
    settings.KEY_CACHE_SECONDS = 300
    services._memo.clear()
    reads = []
    real = services.cache.get

    def counted(key, *args, **kwargs):
        reads.append(key)
        return real(key, *args, **kwargs)

    monkeypatch.setattr(services.cache, "get", counted)
    clock = [1000.0]
    monkeypatch.setattr(services.time, "monotonic", lambda: clock[0])
    yield reads, clock
    services._memo.clear()


def test_key_scope__shared_cache__read_there_once_per_memo_time(shared, django_assert_num_queries):
    reads, clock = shared
    _, raw = write_key("acme")
    assert key_scope(model=WriteKey, raw=raw) == "acme"
    with django_assert_num_queries(0):
        for _ in range(5):
            assert key_scope(model=WriteKey, raw=raw) == "acme"
    assert len(reads) == 1
    clock[0] += KEY_MEMO_SECONDS
    assert key_scope(model=WriteKey, raw=raw) == "acme"
    assert len(reads) == 2


def test_key_scope__revoked_in_this_process__refused_at_once(shared, django_capture_on_commit_callbacks):
    key, raw = write_key("acme")
    assert key_scope(model=WriteKey, raw=raw) == "acme"
    with django_capture_on_commit_callbacks(execute=True):
        key_revoke(key=key, actor="ops")
    assert key_scope(model=WriteKey, raw=raw) is None


def test_key_scope__revoked_by_another_process__refused_within_the_memo_time(shared):
    _, clock = shared
    key, raw = write_key("acme")
    assert key_scope(model=WriteKey, raw=raw) == "acme"
    # Another process revoked it: the shared cache holds the refusal, this process its memo.
    WriteKey.objects.filter(pk=key.pk).update(revoked_at="2026-01-01T00:00:00Z")
    services.cache.set(services._lookup_key(WriteKey.kind, key.key_hash), "", 300)
    clock[0] += KEY_MEMO_SECONDS
    assert key_scope(model=WriteKey, raw=raw) is None
    assert KEY_MEMO_SECONDS < 1


def test_key_scope__read_before_its_revocation__not_kept(
    shared, monkeypatch, django_capture_on_commit_callbacks
):
    key, raw = write_key("acme")
    read_from_database = services._scope_in_database

    def read_then_revoked(model, key_hash):
        found = read_from_database(model, key_hash)
        with django_capture_on_commit_callbacks(execute=True):
            key_revoke(key=key, actor="ops")
        return found

    monkeypatch.setattr(services, "_scope_in_database", read_then_revoked)
    assert key_scope(model=WriteKey, raw=raw) == "acme"  # that request was already in flight
    monkeypatch.setattr(services, "_scope_in_database", read_from_database)
    assert key_scope(model=WriteKey, raw=raw) is None


def test_key_scope__process_memory_cache__no_memo_on_top(settings):
    settings.CACHE_SHARED = False
    services._memo.clear()
    _, raw = write_key("acme")
    assert key_scope(model=WriteKey, raw=raw) == "acme"
    assert not services._memo  # the cache is this process's memory already
