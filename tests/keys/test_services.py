"""Both key kinds through the one keys service: shown once, stored hashed, audited, cached
the same way, revoked with effect, last use recorded without a write per request."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from audit.models import AuditEntry
from keys import services
from keys.services import key_create, key_revoke, key_scope
from rollout.models import SdkKey
from statebag.models import WriteKey

from ..factories import sdk_key, write_key

pytestmark = pytest.mark.django_db


@pytest.fixture(params=["sdk", "write"])
def any_key(request):
    """(key row, key text, its model, the scope it grants) for each kind."""
    if request.param == "sdk":
        key, raw = sdk_key("prod", actor="alice", name="lambda")
        return key, raw, SdkKey, "prod"
    key, raw = write_key("acme", actor="alice", name="lambda")
    return key, raw, WriteKey, "acme"


def test_key_create__any_kind__stored_hashed_shown_once_and_audited(any_key):
    key, raw, model, scope = any_key
    assert raw not in (key.key_hash, key.prefix) and raw.startswith(key.prefix)
    assert key_scope(model=model, raw=raw) == scope
    entry = AuditEntry.objects.get(action=f"{model.kind}.create")
    assert (entry.actor, entry.target, entry.detail["scope"]) == ("alice", key.prefix, scope)
    assert raw not in str(entry.detail)


def test_key_revoke__any_kind__refused_at_once_and_audited(any_key, django_capture_on_commit_callbacks):
    key, raw, model, _ = any_key
    with django_capture_on_commit_callbacks(execute=True):
        assert key_revoke(key=key, actor="bob") is True
    assert key_scope(model=model, raw=raw) is None
    assert AuditEntry.objects.filter(action=f"{model.kind}.revoke", actor="bob", target=key.prefix).exists()
    assert key_revoke(key=key, actor="bob") is False  # once


def test_key_scope__a_key_of_the_other_kind__refused():
    _, sdk_raw = sdk_key("prod")
    _, write_raw = write_key("acme")
    assert key_scope(model=WriteKey, raw=sdk_raw) is None
    assert key_scope(model=SdkKey, raw=write_raw) is None


def test_key_scope__cached__no_query_on_the_second_lookup(any_key, django_assert_num_queries):
    _, raw, model, scope = any_key
    key_scope(model=model, raw=raw)
    with django_assert_num_queries(0):
        assert key_scope(model=model, raw=raw) == scope


def test_keys_flush_last_used__shared_cache__noted_there_then_copied(any_key, settings):
    settings.CACHE_SHARED = True
    key, raw, model, _ = any_key
    services._noted.clear()
    services.key_note_use(model=model, raw=raw)
    key.refresh_from_db()
    assert key.last_used_at is None  # no write on the request's path
    assert services.keys_flush_last_used() == 1
    key.refresh_from_db()
    assert key.last_used_at is not None


def test_key_note_use__process_memory_cache__written_at_most_once_a_minute(
    any_key, django_assert_num_queries
):
    key, raw, model, _ = any_key
    services._noted.clear()
    with django_assert_num_queries(1):
        services.key_note_use(model=model, raw=raw)
        services.key_note_use(model=model, raw=raw)
    key.refresh_from_db()
    assert key.last_used_at is not None


def test_key_scope__lookup_that_read_the_key_before_its_revocation__cannot_bring_it_back(
    any_key, monkeypatch, django_capture_on_commit_callbacks
):
    key, raw, model, scope = any_key
    read_from_database = services._scope_in_database

    def read_then_revoked(model, key_hash):
        found = read_from_database(model, key_hash)  # still valid when read...
        with django_capture_on_commit_callbacks(execute=True):
            key_revoke(key=key, actor="bob")  # ...revoked before the lookup caches it
        return found

    monkeypatch.setattr(services, "_scope_in_database", read_then_revoked)
    assert key_scope(model=model, raw=raw) == scope  # that one request was already in flight
    monkeypatch.setattr(services, "_scope_in_database", read_from_database)
    assert key_scope(model=model, raw=raw) is None


def test_key_scope__cache_down__the_database_answers(any_key, monkeypatch):
    _, raw, model, scope = any_key

    def down(*args, **kwargs):
        raise ConnectionError("cache down")

    for operation in ("get", "add", "set", "delete"):
        monkeypatch.setattr(services.cache, operation, down)
    assert key_scope(model=model, raw=raw) == scope
    assert key_scope(model=model, raw="awk_unknown") is None


@pytest.mark.parametrize("owner", ["..", "a/b", "", "x" * 129, "e1\n"])
def test_key_create__write_key_for_a_bad_owner__refused_and_nothing_saved(owner):
    with pytest.raises(ValidationError):
        key_create(key=WriteKey(owner_id=owner), actor="ops")
    assert not WriteKey.objects.exists()


@pytest.mark.parametrize("given", ["key", "prefix", "prefix as shown"])
def test_key_find__the_key_or_its_prefix_as_shown__that_key(any_key, given):
    key, raw, model, _ = any_key
    text = {"key": raw, "prefix": key.prefix, "prefix as shown": f"{key.prefix}…"}[given]
    assert services.key_find(model=model, text=text) == key


@pytest.mark.parametrize("text", ["", "nope", "ask_", "awk_"])
def test_key_find__nothing_matches__lookup_error_saying_so(any_key, text):
    _, _, model, _ = any_key
    with pytest.raises(LookupError, match="no active key"):
        services.key_find(model=model, text=text)


def test_key_find__revoked__not_found(any_key):
    key, raw, model, _ = any_key
    key_revoke(key=key, actor="alice")
    with pytest.raises(LookupError):
        services.key_find(model=model, text=raw)
