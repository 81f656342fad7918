"""An execution in the admin as a time machine: its versions with each one's hash check, any
version's hydrated state (shown and downloaded), and what changed between two versions. States
are committed through the service's own hydrator on the service's store, as a worker does."""

from __future__ import annotations

import json
import re
import sys

import pytest
from django.urls import reverse

from analemma_sdk.statebag import manifest_hash
from analemma_sdk.statebag.canonical import value_json
from statebag import time_machine
from statebag.models import Execution, Manifest, ManifestEntry, Pack
from statebag.services import manifest_state
from statebag.services.chain import manifest_fields
from statebag.services.hydrators import reset_service_hydrators, service_hydrator

from ..factories import UserFactory
from ..states import OWNER, WORKFLOW, commit_states, conversation, noise

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    client.force_login(UserFactory(username="ops", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def three_versions(service_store):
    execution = commit_states([conversation(1), conversation(2), conversation(2, status="done")])
    assert Pack.objects.exists()  # the messages are stored, not inline
    return execution


def page(client, name, *args, **params):
    response = client.get(reverse(f"admin:{name}", args=args), params)
    return response, response.content.decode()


def version_rows(body: str) -> list[tuple[str, str]]:
    """(version, chain check text) of each row of the versions table, in page order."""
    rows = re.findall(r'<tr data-version="(\d+)".*?</tr>', body, flags=re.S)
    checks = re.findall(
        r'<tr data-version="\d+".*?class="statebag-chain (chain-\w+)".*?</tr>', body, flags=re.S
    )
    return list(zip(rows, checks, strict=True))


# Versions and their hash check ---------------------------------------------------------------
def test_execution_page__three_versions__listed_newest_first_each_hash_verified(staff_client, three_versions):
    # When the operator opens the execution
    response, body = page(staff_client, "statebag_execution_change", three_versions.pk)
    # Then its versions are listed newest first, each with its hash check passed
    assert response.status_code == 200
    assert version_rows(body) == [("3", "chain-ok"), ("2", "chain-ok"), ("1", "chain-ok")]
    assert body.count("hash verified") == 3
    # And the compare form offers the last two versions
    assert 'name="older" value="2"' in body and 'name="newer" value="3"' in body


def test_execution_page__entry_changed_outside_the_service__that_version_shows_mismatch(
    staff_client, three_versions
):
    # Given v2's stored status rewritten behind the service's back
    ManifestEntry.objects.filter(
        manifest__execution=three_versions, manifest__version=2, field="status"
    ).update(stored="tampered")
    # When the operator opens the execution
    _, body = page(staff_client, "statebag_execution_change", three_versions.pk)
    # Then v2 alone fails its check
    assert version_rows(body) == [("3", "chain-ok"), ("2", "chain-broken"), ("1", "chain-ok")]
    assert "HASH MISMATCH" in body
    # And its state is refused, never shown
    response, body = page(staff_client, "statebag_execution_state", three_versions.pk, 2)
    assert "fails its hash check" in body and "tampered" not in body
    download, _ = page(staff_client, "statebag_execution_state_json", three_versions.pk, 2)
    assert download.status_code == 409


def test_execution_page__many_versions__paginated_twenty_a_page(staff_client, service_store):
    execution = commit_states([{"step": n} for n in range(1, 26)])
    _, first = page(staff_client, "statebag_execution_change", execution.pk)
    _, second = page(staff_client, "statebag_execution_change", execution.pk, versions=2)
    assert [v for v, _ in version_rows(first)] == [str(n) for n in range(25, 5, -1)]
    assert [v for v, _ in version_rows(second)] == [str(n) for n in range(5, 0, -1)]
    assert "Page 1 of 2" in first


# A version's state -------------------------------------------------------------------------
def test_state_download__any_version__exactly_the_hydrated_state_in_its_key_order(
    staff_client, three_versions
):
    for version in (1, 2, 3):
        manifest = Manifest.objects.get(execution=three_versions, version=version)
        expected = manifest_state(manifest, service_hydrator(OWNER, WORKFLOW)).to_dict()
        response, _ = page(staff_client, "statebag_execution_state_json", three_versions.pk, version)
        assert response.status_code == 200
        assert response["Content-Type"] == "application/json"
        assert response["Content-Disposition"] == f'attachment; filename="acme-exec-tm-v{version}.json"'
        assert json.loads(response.content) == expected
        assert response.content == value_json(expected)  # keys in their order, byte for byte
    assert json.loads(response.content)["status"] == "done"


def test_state_view__version__shows_the_state_as_indented_json(staff_client, three_versions):
    response, body = page(staff_client, "statebag_execution_state", three_versions.pk, 2)
    assert response.status_code == 200
    shown = re.search(r'<pre class="statebag-json" id="state-json">(.*?)</pre>', body, flags=re.S)[1]
    assert json.loads(shown.replace("&quot;", '"').replace("&#x27;", "'")) == conversation(2)
    assert reverse("admin:statebag_execution_state_json", args=[three_versions.pk, 2]) in body


def test_state__over_the_admin_limit__refused_before_its_blobs_are_read(
    staff_client, three_versions, monkeypatch
):
    # Given a limit below v2's size
    monkeypatch.setattr(time_machine, "STATE_LIMIT_BYTES", 4000)
    # When its state is asked for, shown or downloaded
    _, body = page(staff_client, "statebag_execution_state", three_versions.pk, 2)
    download, _ = page(staff_client, "statebag_execution_state_json", three_versions.pk, 2)
    # Then both say why, and nothing is served
    assert "over the admin&#x27;s limit of 4,000" in body
    assert download.status_code == 409 and b"read it with the SDK" in download.content
    assert "turn 0" not in body


def test_state__large_state__page_shows_a_preview_download_has_all(staff_client, three_versions, monkeypatch):
    monkeypatch.setattr("statebag.admin.STATE_PREVIEW_BYTES", 1000)
    _, body = page(staff_client, "statebag_execution_state", three_versions.pk, 2)
    download, _ = page(staff_client, "statebag_execution_state_json", three_versions.pk, 2)
    assert "the download holds all of it" in body
    assert json.loads(download.content) == conversation(2)


def test_state__unknown_version__not_found(staff_client, three_versions):
    response, _ = page(staff_client, "statebag_execution_state", three_versions.pk, 9)
    assert response.status_code == 404


# What changed between two versions ---------------------------------------------------------
def diff_rows(body: str) -> list[tuple[str, str]]:
    return re.findall(r'<tr class="statebag-change statebag-(\w+)" data-path="([^"]+)"', body)


def test_diff__two_versions__lists_each_changed_field_down_to_the_value(staff_client, three_versions):
    # When the operator compares v1 with v2 (one message appended, the step counted)
    response, body = page(staff_client, "statebag_execution_diff", three_versions.pk, older=1, newer=2)
    # Then the changes are listed field by field, and unchanged fields are not
    assert response.status_code == 200
    assert diff_rows(body) == [("changed", "step"), ("added", "messages[1]")]
    assert "2 field(s) changed, 0 added, 0 removed, 2 unchanged" in body


def test_diff__field_added_and_removed__each_listed_once(staff_client, service_store):
    execution = commit_states([{"a": 1, "gone": {"x": [1, 2]}}, {"a": 1, "new": "value"}])
    _, body = page(staff_client, "statebag_execution_diff", execution.pk, older=1, newer=2)
    assert diff_rows(body) == [("removed", "gone"), ("added", "new")]
    assert "&quot;value&quot;" in body


def test_diff__nested_value_changed__path_names_it(staff_client, three_versions):
    _, body = page(staff_client, "statebag_execution_diff", three_versions.pk, older=2, newer=3)
    assert diff_rows(body) == [("changed", "status")]
    assert "&quot;running&quot;" in body and "&quot;done&quot;" in body


def test_diff__same_version__no_change(staff_client, three_versions):
    _, body = page(staff_client, "statebag_execution_diff", three_versions.pk, older=3, newer=3)
    assert diff_rows(body) == [] and "The two versions hold the same state." in body


def test_diff__beyond_the_change_limit__truncated_and_said(staff_client, service_store, monkeypatch):
    monkeypatch.setattr(time_machine, "MAX_CHANGES", 3)
    execution = commit_states([{"items": []}, {"items": list(range(10))}])
    _, body = page(staff_client, "statebag_execution_diff", execution.pk, older=1, newer=2)
    assert len(diff_rows(body)) == 3 and "Only the first 3 changes are listed" in body


def test_diff__unknown_version__says_so(staff_client, three_versions):
    _, body = page(staff_client, "statebag_execution_diff", three_versions.pk, older=1, newer=7)
    assert "This execution has no such version." in body


def test_diff__unchanged_blob__not_read_from_the_store(three_versions, monkeypatch):
    # Given v2 and v3, which share their messages blob
    older, newer = (
        Manifest.objects.select_related("execution").get(execution=three_versions, version=v) for v in (2, 3)
    )
    reset_service_hydrators()
    reads = []
    store = service_hydrator(OWNER, WORKFLOW).store
    original = store.get_range
    monkeypatch.setattr(store, "get_range", lambda *a, **k: reads.append(a) or original(*a, **k))
    monkeypatch.setattr(store, "get", lambda *a, **k: reads.append(a) or type(store).get(store, *a, **k))
    # When they are compared
    diff = time_machine.state_diff(older, newer)
    # Then only the status differs, and no blob was read
    assert [(c.path, c.kind) for c in diff.changes] == [("status", "changed")]
    assert reads == []


# Who may look ------------------------------------------------------------------------------
def state_pages(execution: Execution) -> list[tuple[str, tuple]]:
    return [
        ("statebag_execution_state", (execution.pk, 1)),
        ("statebag_execution_state_json", (execution.pk, 1)),
        ("statebag_execution_diff", (execution.pk,)),
    ]


def test_time_machine__user_without_view_permission__forbidden(client, three_versions):
    client.force_login(UserFactory(username="flags-only", is_staff=True, permissions=["rollout.view_flag"]))
    for name, args in state_pages(three_versions):
        response, _ = page(client, name, *args)
        assert response.status_code == 403, name


def test_time_machine__view_permission_without_view_state__metadata_only(client, three_versions):
    # Given a user who may view executions, but not read their states
    client.force_login(
        UserFactory(username="metadata", is_staff=True, permissions=["statebag.view_execution"])
    )
    # When they open the execution, then its versions are listed without a way into their states
    response, body = page(client, "statebag_execution_change", three_versions.pk)
    assert response.status_code == 200
    assert [v for v, _ in version_rows(body)] == ["3", "2", "1"]
    assert reverse("admin:statebag_execution_state_json", args=[three_versions.pk, 1]) not in body
    assert reverse("admin:statebag_execution_diff", args=[three_versions.pk]) not in body
    # And a state's page, its download and a comparison are refused
    for name, args in state_pages(three_versions):
        response, body = page(client, name, *args, older=1, newer=2)
        assert response.status_code == 403, name
        assert "turn 0" not in body


def test_time_machine__view_state_permission__states_readable(client, three_versions):
    # Given a user (not a superuser) granted both permissions
    client.force_login(
        UserFactory(
            username="reader",
            is_staff=True,
            permissions=["statebag.view_execution", "statebag.view_state"],
        )
    )
    # Then the state's page, its download and a comparison answer
    for name, args in state_pages(three_versions):
        response, _ = page(client, name, *args, older=1, newer=2)
        assert response.status_code == 200, name
    _, body = page(client, "statebag_execution_change", three_versions.pk)
    assert reverse("admin:statebag_execution_state_json", args=[three_versions.pk, 1]) in body


def test_view_state_permission__named_for_the_operator():
    from django.contrib.auth.models import Permission

    permission = Permission.objects.get(content_type__app_label="statebag", codename="view_state")
    assert permission.name == "Can read and download hydrated state"
    assert permission.content_type.model == "execution"


def test_time_machine__not_staff__sent_to_log_in(client, three_versions):
    client.force_login(UserFactory(username="visitor"))
    response, _ = page(client, "statebag_execution_state_json", three_versions.pk, 1)
    assert response.status_code == 302 and "/login/" in response["Location"]


# The download's name ------------------------------------------------------------------------
def test_state_download__ids_not_ascii__filename_encoded_with_the_owner(staff_client, monkeypatch):
    # Given an execution whose id is not ASCII (a row the service would not write itself)
    execution = Execution.objects.create(owner_id="acme", workflow_id="wf", execution_id='état "1"')
    Manifest.objects.create(execution=execution, version=1, hash="0" * 64)
    monkeypatch.setattr("statebag.admin.state_json", lambda manifest: b'{"a":1}')
    # When its state is downloaded
    response, _ = page(staff_client, "statebag_execution_state_json", execution.pk, 1)
    # Then the name holds the owner, the id and the version, encoded per RFC 6266
    assert response.status_code == 200
    assert response["Content-Disposition"] == (
        "attachment; filename*=utf-8''acme-%C3%A9tat%20%221%22-v1.json"
    )


# Each object under the owner's prefix -------------------------------------------------------
def rehash(manifest: Manifest) -> None:
    """Give ``manifest`` the hash of what its rows hold now, as if it had been committed so."""
    fields = manifest_fields(manifest)
    fields.pop("hash"), fields.pop("format")
    Manifest.objects.filter(pk=manifest.pk).update(hash=manifest_hash(**fields))


@pytest.mark.parametrize(("field", "pointer"), [("doc", "blob"), ("messages", "list")])
def test_state__entry_points_at_another_owners_object__refused_on_every_page(
    staff_client, service_store, field, pointer
):
    # Given globex's execution, whose document and messages are stored in globex's packs
    def state(owner: str, status: str) -> dict:
        return {**conversation(3, status=status), "doc": f"{owner}'s {noise(owner, 60_000)}"}

    globex = commit_states([state("globex", "done")], owner_id="globex", execution_id="globex-secret")
    stolen = ManifestEntry.objects.get(manifest=globex.head, field=field).stored
    assert stolen["$sb"] == pointer and "o/globex/" in json.dumps(stolen)
    # And acme's execution whose v2 entry was rewritten to point there, its hash made to match
    acme = commit_states([state("acme", "running"), state("acme", "done")])
    v2 = Manifest.objects.select_related("execution").get(execution=acme, version=2)
    ManifestEntry.objects.filter(manifest=v2, field=field).update(stored=stolen)
    rehash(v2)
    reset_service_hydrators()
    # When the operator reads v2, downloads it or compares it with v1
    _, shown = page(staff_client, "statebag_execution_state", acme.pk, 2)
    download, _ = page(staff_client, "statebag_execution_state_json", acme.pk, 2)
    diff, compared = page(staff_client, "statebag_execution_diff", acme.pk, older=1, newer=2)
    # Then each says the state points outside its owner's prefix, and shows nothing of globex's
    assert "outside its owner&#x27;s prefix o/acme/" in shown
    assert download.status_code == 409 and b"outside its owner's prefix" in download.content
    assert diff.status_code == 200 and "outside its owner&#x27;s prefix" in compared
    for body in (shown, compared, download.content.decode()):
        assert "globex&#x27;s" not in body and "globex's" not in body


# Deep nesting -------------------------------------------------------------------------------
def nested(depth: int, leaf) -> list:
    value = [leaf]
    for _ in range(depth - 1):
        value = [value]
    return value


DEEP = 5000


def test_diff__states_nested_5000_deep__walk_stops_at_the_depth_limit_one_change(
    staff_client, service_store, monkeypatch
):
    # Given two versions whose "deep" field, as read, is nested 5,000 lists deep, differing at
    # the bottom (read through the admin's own field reader, as a client could store them)
    execution = commit_states([{"deep": [1], "a": 1}, {"deep": [2], "a": 2}])
    read = time_machine._loaded
    deep = {1: nested(DEEP, 1), 2: nested(DEEP, 2)}
    monkeypatch.setattr(
        time_machine,
        "_loaded",
        lambda bag, manifest, name: deep[manifest.version] if name == "deep" else read(bag, manifest, name),
    )
    # When they are compared
    response, body = page(staff_client, "statebag_execution_diff", execution.pk, older=1, newer=2)
    # Then the page answers: the walk went MAX_DIFF_DEPTH levels down and reports the rest as
    # one change, whose values are too deep to preview
    assert response.status_code == 200
    assert diff_rows(body) == [("changed", "deep" + "[0]" * time_machine.MAX_DIFF_DEPTH), ("changed", "a")]
    assert "nested too deep to show here" in body
    assert "2 field(s) changed, 0 added, 0 removed, 0 unchanged" in body


def test_diff__equal_below_the_depth_limit__unchanged():
    changes = list(time_machine._walk("deep", nested(DEEP, {"k": 1.5}), nested(DEEP, {"k": 1.5})))
    assert changes == []
    changes = list(time_machine._walk("deep", nested(DEEP, 1), nested(DEEP, 1.0)))
    assert [c.kind for c in changes] == ["changed"]


def test_diff__nested_within_the_depth_limit__path_reaches_the_value(service_store):
    execution = commit_states([{"deep": nested(20, 1)}, {"deep": nested(20, 2)}])
    older, newer = (
        Manifest.objects.select_related("execution").get(execution=execution, version=v) for v in (1, 2)
    )
    diff = time_machine.state_diff(older, newer)
    assert [(c.path, c.kind, c.before, c.after) for c in diff.changes] == [
        ("deep" + "[0]" * 20, "changed", "1", "2")
    ]


def test_state_view__state_nested_5000_deep__shown_as_stored_text(staff_client, three_versions, monkeypatch):
    # Given a state whose JSON nests 5,000 lists deep (too deep to parse and indent)
    text = b'{"deep":' + b"[" * DEEP + b"1" + b"]" * DEEP + b"}"
    monkeypatch.setattr("statebag.admin.state_json", lambda manifest: text)
    # When it is shown, then the page shows it as it is
    response, body = page(staff_client, "statebag_execution_state", three_versions.pk, 1)
    assert response.status_code == 200
    shown = re.search(r'<pre class="statebag-json" id="state-json">(.*?)</pre>', body, flags=re.S)[1]
    assert shown.replace("&quot;", '"') == text.decode()


def test_time_machine__state_committed_5000_deep__every_page_answers(staff_client, service_store):
    # Given a state nested 5,000 lists deep, committed by a client whose interpreter allows it
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(4 * DEEP)
    try:
        execution = commit_states([{"deep": nested(DEEP, 1)}, {"deep": nested(DEEP, 2)}])
    finally:
        sys.setrecursionlimit(limit)
    # When the operator opens it, then each page answers, saying the state cannot be read
    for name, args, status in (
        ("statebag_execution_change", (execution.pk,), 200),
        ("statebag_execution_state", (execution.pk, 2), 200),
        ("statebag_execution_diff", (execution.pk,), 200),
        ("statebag_execution_state_json", (execution.pk, 2), 409),
    ):
        response, body = page(staff_client, name, *args, older=1, newer=2)
        assert response.status_code == status, name
        if name != "statebag_execution_change":
            assert "v1 cannot be read" in body or "v2 cannot be read" in body, name
