"""The statebag API's bounds and refusals, on its real URLs: every request's size and shape is
bounded (STATEBAG_API_LIMITS, the body size, the nesting depth), bad input is a 4xx JSON error
that changes nothing, declared objects sit at the keys their digests give, frames are checked
field by field, a transaction's answers follow its state, and a database that cannot take a
lock in time is a 503 to retry."""

from __future__ import annotations

import json
import sqlite3
import sys
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.test import RequestFactory
from django.views.debug import ExceptionReporter

from analemma_sdk.statebag.canonical import canonical_json, sha256_hex
from analemma_sdk.statebag.codec import RAW, Encoded
from analemma_sdk.statebag.keys import object_key, pack_key
from analemma_sdk.statebag.manifests import PackWrite, PrepareRequest
from analemma_sdk.statebag.packs import HEADER, FrameRef, build_pack
from analemma_sdk.statebag.pointers import BlobRef
from audit.models import AuditEntry
from statebag.api import write_key as write_key_auth
from statebag.models import Blob, CommitTransaction, Execution, Manifest, ManifestEntry, Pack, Pin
from statebag.schemas import LIMITS
from statebag.services import StateVersioningService, statebag_store

from ..factories import UserFactory, write_key

pytestmark = pytest.mark.django_db
BASE = "/api/v1/statebag"
PREPARE = f"{BASE}/transactions"
JOBS = f"{BASE}/jobs"
SEQUENCE = iter(range(10**9))


# Helpers ------------------------------------------------------------------------------------
@pytest.fixture
def bearer():
    _, raw = write_key("acme")
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


@pytest.fixture
def store(statebag_storage, tmp_path):
    statebag_storage(folder=tmp_path / "service-blobs")
    return statebag_store()


def post(client, path, body, headers):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(path, data=data, content_type="application/json", **headers)


def refused(response, status: int = 400, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.content[:600]
    assert response["Content-Type"].startswith("application/json")
    answer = response.json()
    assert isinstance(answer["error"], str) and answer["error"] and answer["code"]
    if code is not None:
        assert answer["code"] == code, answer
    return answer


def rows() -> tuple[int, ...]:
    """Every table a statebag request may write."""
    return tuple(
        model.objects.count()
        for model in (CommitTransaction, Execution, Manifest, ManifestEntry, Pack, Blob, Pin, AuditEntry)
    ) + (Manifest.blobs.through.objects.count(),)


class Built:
    """A real pack: its declaration, its bytes, and a pointer to each frame."""

    def __init__(self, frames: int = 1, owner: str = "acme") -> None:
        blobs = []
        for _ in range(frames):
            raw = canonical_json({"n": next(SEQUENCE), "text": "x" * 40})
            blobs.append((sha256_hex(raw), len(raw), Encoded(RAW, raw)))
        built = build_pack(blobs)
        self.key = pack_key(owner, built.digest)
        self.data = built.data
        self.frames = built.frames
        self.declared = PackWrite(self.key, built.digest, len(built.data), tuple(built.frames)).to_json()

    def pointers(self) -> list[dict[str, Any]]:
        return [
            BlobRef(f.digest, self.key, f.offset, f.length, f.codec, f.raw_size).to_json()
            for f in self.frames
        ]


def prepare_body(packs=(), **fields: Any) -> dict[str, Any]:
    return {"owner_id": "acme", "workflow_id": "wf", "execution_id": "e1", "packs": list(packs), **fields}


def with_frame(**changes: Any) -> dict[str, Any]:
    """A prepare body declaring one pack whose first frame has ``changes``."""
    built = Built(frames=2)
    built.declared["frames"][0].update(changes)
    return prepare_body([built.declared])


def prepared(client, bearer, packs=(), **fields: Any) -> str:
    response = post(client, PREPARE, prepare_body(packs, **fields), bearer)
    assert response.status_code == 201, response.content[:600]
    return str(response.json()["txn_id"])


def committed(client, bearer, txn_id: str, entries: dict[str, Any]) -> dict[str, Any]:
    response = post(client, f"{PREPARE}/{txn_id}/commit", {"entries": entries}, bearer)
    assert response.status_code == 200, response.content[:600]
    answer: dict[str, Any] = response.json()
    return answer


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def as_list(pointers: list[dict[str, Any]]) -> dict[str, Any]:
    """A list pointer whose chunks are ``pointers``, as the SDK stores a long list."""
    chunks = [{k: v for k, v in p.items() if k not in ("$sb", "v")} | {"i": 1} for p in pointers]
    return {"$sb": "list", "v": 1, "len": len(chunks), "chunks": chunks, "tail": []}


# 4. Bounds: one over each limit is refused and writes nothing; at the limit is accepted ----------
def over_limit_prepares() -> dict[str, Any]:
    one = Built()
    return {
        "packs": lambda: prepare_body([Built().declared for _ in range(LIMITS["PACKS"] + 1)]),
        "frames in one pack": lambda: prepare_body([Built(frames=LIMITS["FRAMES"] + 1).declared]),
        "frames in all": lambda: prepare_body(
            [Built(frames=LIMITS["FRAMES"] // 2 + 1).declared, Built(frames=LIMITS["FRAMES"] // 2).declared]
        ),
        "reused": lambda: prepare_body(
            reused=[[one.key, sha256_hex(str(i).encode())] for i in range(LIMITS["REUSED"] + 1)]
        ),
        "parents": lambda: prepare_body(
            parents=[sha256_hex(str(i).encode()) for i in range(LIMITS["PARENTS"] + 1)]
        ),
    }


@pytest.mark.parametrize("limit", list(over_limit_prepares()))
def test_prepare__one_over_a_limit__400_nothing_written(client, bearer, limit):
    body = over_limit_prepares()[limit]()
    before = rows()
    answer = refused(post(client, PREPARE, body, bearer), 400, "invalid_request")
    assert "at most" in answer["error"] or "most" in json.dumps(answer["problems"])
    assert rows() == before


def test_prepare_and_commit__at_the_limits__accepted(client, bearer, store):
    packs = [Built(frames=LIMITS["FRAMES"] // LIMITS["PACKS"]) for _ in range(LIMITS["PACKS"])]
    txn = prepared(client, bearer, [p.declared for p in packs])
    for pack in packs:
        store.put(pack.key, pack.data)
    pointers = [pointer for pack in packs for pointer in pack.pointers()][: LIMITS["POINTERS"]]
    per_list = -(-len(pointers) // LIMITS["ENTRIES"])
    entries: dict[str, Any] = {
        f"l{i}": as_list(pointers[start : start + per_list])
        for i, start in enumerate(range(0, len(pointers), per_list))
    }
    entries.update({f"i{i}": i for i in range(LIMITS["ENTRIES"] - len(entries))})
    cohort = {f"flag{i}": True for i in range(LIMITS["COHORT"])}
    response = post(client, f"{PREPARE}/{txn}/commit", {"entries": entries, "cohort": cohort}, bearer)
    assert response.status_code == 200, response.content[:600]
    manifest = Manifest.objects.get()
    assert (manifest.entries.count(), manifest.blobs.count()) == (LIMITS["ENTRIES"], len(pointers))


def over_limit_commits() -> dict[str, Any]:
    pointer = Built().pointers()[0]
    return {
        "entries": lambda: {"entries": {f"f{i}": i for i in range(LIMITS["ENTRIES"] + 1)}},
        "pointers": lambda: {"entries": {"list": as_list([pointer] * (LIMITS["POINTERS"] + 1))}},
        "cohort": lambda: {"entries": {}, "cohort": {f"f{i}": 1 for i in range(LIMITS["COHORT"] + 1)}},
        "entry bytes": lambda: {
            "entries": {f"f{i}": "y" * (LIMITS["ENTRY_BYTES"] // 256) for i in range(257)}
        },
    }


@pytest.mark.parametrize("limit", list(over_limit_commits()))
def test_commit__one_over_a_limit__400_nothing_written(client, bearer, limit):
    txn = prepared(client, bearer)
    before = rows()
    refused(
        post(client, f"{PREPARE}/{txn}/commit", over_limit_commits()[limit](), bearer), 400, "invalid_request"
    )
    assert rows() == before
    assert CommitTransaction.objects.get().state == CommitTransaction.State.PREPARED


def test_commit__body_over_the_size_limit__413_nothing_written(client, bearer):
    txn = prepared(client, bearer)
    before = rows()
    text = "y" * 1000
    count = settings.DATA_UPLOAD_MAX_MEMORY_SIZE // 1000 + 1
    body = {"entries": {f"f{i}": text for i in range(min(count, LIMITS["ENTRIES"]))}}
    body["entries"]["big"] = "z" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    refused(post(client, f"{PREPARE}/{txn}/commit", body, bearer), 413, "payload_too_large")
    assert rows() == before


def test_jobs__more_fields_than_a_commit_may_hold__400_no_job(client):
    from statebag.models import DehydrationJob

    client.force_login(UserFactory(permissions=["statebag.add_dehydrationjob"]))
    state = {f"f{i}": i for i in range(LIMITS["ENTRIES"] + 1)}
    body = {"owner_id": "acme", "workflow_id": "wf", "execution_id": "e1", "state": state}
    refused(post(client, JOBS, body, {}), 400, "invalid_request")
    assert not DehydrationJob.objects.exists()


# 5. Client input that gave 500 --------------------------------------------------------------
def prepare_text_with_offset(offset: str) -> str:
    body = json.dumps(with_frame(offset=123456789))
    return body.replace("123456789", offset)


@pytest.mark.parametrize(
    "body, code",
    [
        (prepare_text_with_offset("Infinity"), "invalid_json"),
        (prepare_text_with_offset("1e400"), "invalid_json"),
        (prepare_text_with_offset("1e30"), "invalid_request"),
        (prepare_text_with_offset(str(2**70)), "invalid_request"),
        (prepare_text_with_offset(str(2**53)), "invalid_request"),
        ('{"owner_id": "acme", "packs": ' + deep(100_000) + "}", "too_deep"),
        (json.dumps(prepare_body(idempotency_key="a\x00b")), "invalid_request"),
        (json.dumps(prepare_body(owner_id="../acme")), "invalid_request"),
        (json.dumps(prepare_body(parents=["ab" * 32, "ab" * 32])), "invalid_request"),
    ],
    ids=["Infinity", "1e400", "1e30", "2**70", "2**53", "deep", "NUL", "owner", "parent twice"],
)
def test_prepare__input_that_crashed__4xx_nothing_written(client, bearer, body, code):
    before = rows()
    refused(post(client, PREPARE, body, bearer), 400, code)
    assert rows() == before


@pytest.mark.parametrize(
    "version, status",
    [
        ("²", 400),  # "²".isdigit() is true; int("²") raises
        ("٣", 400),  # an Arabic-Indic three: a digit to Python, not a version
        ("9" * 5000, 400),  # past int()'s 4,300-digit limit
        ("9" * 30, 400),  # past what SQLite binds (OverflowError)
        ("9" * 10, 400),  # past the version column
        ("-1", 400),
        ("1.0", 400),
        ("0", 404),
        ("7", 404),
    ],
)
def test_manifest_read__malformed_or_unknown_version__4xx(client, bearer, version, status):
    from urllib.parse import quote

    refused(client.get(f"{BASE}/executions/e1/manifests/{quote(version)}", **bearer), status)


def test_manifest_read__malformed_execution_id__400(client, bearer):
    refused(client.get(f"{BASE}/executions/x%20y/manifests/head", **bearer), 400, "invalid_request")


@pytest.mark.parametrize(
    "header, status",
    [
        ("bytes=" + "9" * 5000 + "-", 400),  # past int()'s 4,300-digit limit
        ("bytes=0-" + "9" * 5000, 400),
        ("bytes=-" + "9" * 5000, 400),
        ("bytes=" + "9" * 20 + "-", 400),  # past the longest position taken
        ("bytes=\u0663-", 400),  # an Arabic-Indic three: a digit to Python, not to HTTP
        ("bytes=0-\u0663", 400),
        ("bytes=-\u0663", 400),
        ("bytes=\u00b2-", 400),  # "²"
        ("bytes=\uff11-", 400),  # a fullwidth one
        ("bytes=" + "9" * 19 + "-", 416),  # the longest position taken, past the end
    ],
    ids=[
        "first 5000 digits",
        "last 5000 digits",
        "suffix 5000 digits",
        "first 20 digits",
        "arabic first",
        "arabic last",
        "arabic suffix",
        "superscript",
        "fullwidth",
        "first 19 digits",
    ],
)
def test_pack_read__range_numbers_huge_or_not_ascii__4xx(client, bearer, store, header, status):
    built = Built()
    store.put(built.key, built.data)
    response = client.get(f"{BASE}/packs/{built.key}", HTTP_RANGE=header, **bearer)
    refused(response, status, "invalid_request" if status == 400 else "range_not_satisfiable")


@pytest.mark.parametrize("header", [None, "bytes=-0", "bytes=0-", "bytes=99999-"])
@pytest.mark.parametrize("key", ["o/acme/p", "o/acme", "o/acme/p/00/" + "0" * 64 + ".asbp"])
def test_pack_read__a_folder_or_missing_object_whatever_the_range__the_same_404(
    client, bearer, store, key, header
):
    built = Built()
    store.put(built.key, built.data)  # o/acme/p/ and o/acme/ are folders now
    missing = client.get(f"{BASE}/packs/o/acme/p/00/{'0' * 64}.asbp", **bearer)
    headers = bearer if header is None else {**bearer, "HTTP_RANGE": header}
    response = client.get(f"{BASE}/packs/{key}", **headers)
    refused(response, 404, "not_found")
    assert response.content == missing.content


@pytest.mark.parametrize(
    "header", ["bytes=0-" + "9" * 19, "bytes=-" + "9" * 19, "bytes=0-", "bytes=000-0009999"]
)
def test_pack_read__range_at_the_longest_numbers__the_object(client, bearer, store, header):
    built = Built()
    store.put(built.key, built.data)
    response = client.get(f"{BASE}/packs/{built.key}", HTTP_RANGE=header, **bearer)
    assert response.status_code == 206, response.content[:400]
    assert response.content == built.data
    assert response["Content-Range"] == f"bytes 0-{len(built.data) - 1}/{len(built.data)}"


BAD_COMMITS = {
    "malformed pointer": '{"entries": {"a": {"$sb": "blob", "v": 1, "d": "x"}}}',
    "list pointer missing parts": '{"entries": {"a": {"$sb": "list", "v": 1}}}',
    "pointer with a hostile key": json.dumps(
        {
            "entries": {
                "a": {"$sb": "blob", "v": 1, "d": "a" * 64, "k": "../x", "o": 8, "n": 1, "c": "raw", "s": 1}
            }
        }
    ),
    "NaN in cohort": '{"entries": {}, "cohort": {"a": NaN}}',
    "1e400 in cohort": '{"entries": {}, "cohort": {"a": 1e400}}',
    "1e400 in entries": '{"entries": {"a": [1e400]}}',
    "integer past 64 bits": '{"entries": {"a": ' + str(2**64) + "}}",
    # PostgreSQL gives these back as 10000000000000000 and 0.0: the manifest would fail its hash.
    "float at 1e16": '{"entries": {"a": 1e16}}',
    "float past 1e16 in a list": '{"entries": {"a": [1.5, -1e300]}}',
    "negative zero": '{"entries": {"a": {"b": -0.0}}}',
    "float past 1e16 in cohort": '{"entries": {}, "cohort": {"a": 2e20}}',
    "NUL in a value": '{"entries": {"a": "x\\u0000y"}}',
    "NUL in a field name": '{"entries": {"a\\u0000": 1}}',
    "lone surrogate": '{"entries": {"a": "\\ud800"}}',
    "lone surrogate in a key": '{"entries": {"a": {"\\udfff": 1}}}',
    "field name too long": json.dumps({"entries": {"f" * 513: 1}}),
    "entries nested too deep": '{"entries": {"a": ' + deep(100_000) + "}}",
    "entries nested past the depth": '{"entries": {"a": ' + deep(settings.API_MAX_JSON_DEPTH) + "}}",
}


@pytest.mark.parametrize("name", list(BAD_COMMITS))
def test_commit__input_that_crashed__4xx_nothing_written(client, bearer, name):
    txn = prepared(client, bearer)
    before = rows()
    refused(post(client, f"{PREPARE}/{txn}/commit", BAD_COMMITS[name], bearer))
    assert rows() == before
    assert CommitTransaction.objects.get().state == CommitTransaction.State.PREPARED


def test_commit__floats_of_every_size_taken__read_back_as_committed(client, bearer):
    """Every float a commit takes comes back from the database as it was sent, so the manifest
    passes its hash check (PostgreSQL's jsonb keeps values, not spellings)."""
    values = [9999999999999998.0, -9.5e15, 1e-7, 5e-324, 0.30000000000000004, 0.0, 2.5, -1.0]
    txn = prepared(client, bearer)
    body = '{"entries": {"a": [' + ", ".join(map(repr, values)) + '], "b": 1e15}, "cohort": {"c": 1.5e-9}}'
    response = post(client, f"{PREPARE}/{txn}/commit", body, bearer)
    assert response.status_code == 200, response.content[:600]
    read = client.get(f"{BASE}/executions/e1/manifests/head", **bearer)
    assert read.status_code == 200, read.content[:600]
    assert read.json()["entries"] == {"a": values, "b": 1e15}
    assert read.json()["cohort"] == {"c": 1.5e-9}


@pytest.mark.parametrize(
    "change",
    [
        {"state": json.loads('{"a": 1}') | {"b": "x\x00"}},
        {"state": {"a": 2**64}},
        {"state": {"a": 1e30}},
        {"state": {"a": [-0.0]}},
        {"parent": "not-a-hash"},
        {"owner_id": "a/b"},
    ],
    ids=["NUL", "int", "float", "negative zero", "parent", "owner"],
)
def test_jobs__input_a_job_could_not_store__400_no_job(client, change):
    from statebag.models import DehydrationJob

    client.force_login(UserFactory(permissions=["statebag.add_dehydrationjob"]))
    body = {"owner_id": "acme", "workflow_id": "wf", "execution_id": "e1", "state": {"a": 1}, **change}
    refused(post(client, JOBS, body, {}), 400, "invalid_request")
    assert not DehydrationJob.objects.exists()


def test_jobs__state_with_an_overflowing_number__400_no_job(client):
    from statebag.models import DehydrationJob

    client.force_login(UserFactory(permissions=["statebag.add_dehydrationjob"]))
    body = '{"owner_id": "acme", "workflow_id": "wf", "execution_id": "e1", "state": {"a": 1e400}}'
    refused(post(client, JOBS, body, {}), 400, "invalid_json")
    assert not DehydrationJob.objects.exists()


# 10. Content-addressed keys --------------------------------------------------------------------
def test_prepare__pack_key_of_another_digest__400_and_the_genuine_upload_still_commits(client, bearer, store):
    genuine = Built()
    squatter = dict(genuine.declared, digest="f" * 64)  # D's key, another digest
    before = rows()
    answer = refused(post(client, PREPARE, prepare_body([squatter]), bearer), 400, "invalid_request")
    assert "derived from its digest" in answer["error"]
    assert rows() == before
    txn = prepared(client, bearer, [genuine.declared])
    store.put(genuine.key, genuine.data)
    assert committed(client, bearer, txn, {"a": genuine.pointers()[0]})["version"] == 1


@pytest.mark.parametrize(
    "key",
    [
        lambda digest, frame: f"o/acme/p/{digest[:2]}/{digest}.pack",
        lambda digest, frame: f"o/acme/p/zz/{digest}.asbp",
        lambda digest, frame: f"o/acme/x/{digest[:2]}/{digest}.asbp",
    ],
    ids=["suffix", "fan-out", "folder"],
)
def test_prepare__pack_key_not_the_sdk_layout__400(client, bearer, key):
    built = Built()
    built.declared["key"] = key(built.declared["digest"], built.frames[0].digest)
    before = rows()
    refused(post(client, PREPARE, prepare_body([built.declared]), bearer), 400, "invalid_request")
    assert rows() == before


def test_prepare__single_object_at_another_frames_key__400(client, bearer):
    raw = canonical_json({"value": "x" * 50})
    digest, size = sha256_hex(raw), len(raw)
    declared = {
        "key": object_key("acme", "e" * 64, "0123456789abcdef"),
        "digest": sha256_hex(raw),
        "size": size,
        "kind": "object",
        "frames": [{"digest": digest, "offset": 0, "length": size, "codec": "raw", "raw_size": size}],
    }
    before = rows()
    refused(post(client, PREPARE, prepare_body([declared]), bearer), 400, "invalid_request")
    assert rows() == before
    declared["key"] = object_key("acme", digest, "0123456789abcdef")
    assert post(client, PREPARE, prepare_body([declared]), bearer).status_code == 201


# 11. Frame fields ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "changes",
    [
        {"raw_size": -1},
        {"length": -1},
        {"offset": "8"},
        {"offset": 8.5},
        {"offset": True},
        {"offset": None},
        {"codec": "x" * 10_000},
        {"codec": "lz4"},
        {"codec": "zstd", "dict_id": "../../etc/passwd"},
        {"codec": "zstd", "dict_id": "A" * 65},
        {"dict_id": "ab" * 16},  # a dictionary on a raw frame
        {"offset": 0},  # inside the pack header
        {"offset": 10**9},  # past the end of the pack
        {"length": 10**6},
        {"raw_size": 999},  # a raw frame is its own bytes
        {"digest": "g" * 64},
    ],
    ids=lambda changes: ",".join(f"{k}={str(v)[:20]}" for k, v in changes.items()),
)
def test_prepare__frame_field_out_of_type_or_range__400_nothing_written(client, bearer, changes):
    before = rows()
    refused(post(client, PREPARE, with_frame(**changes), bearer), 400, "invalid_request")
    assert rows() == before


def test_prepare__frames_overlapping_or_declared_twice__400(client, bearer):
    built = Built(frames=2)
    first, second = built.declared["frames"]
    for frames in ([first, dict(second, offset=first["offset"] + 1)], [first, first]):
        refused(post(client, PREPARE, prepare_body([dict(built.declared, frames=frames)]), bearer))
    assert not CommitTransaction.objects.exists()


def test_prepare__pack_over_the_blob_limit__400(client, bearer, settings):
    settings.STATEBAG = {**settings.STATEBAG, "MAX_BLOB_BYTES": 100}
    refused(post(client, PREPARE, prepare_body([Built(frames=3).declared]), bearer), 400, "invalid_request")
    assert not CommitTransaction.objects.exists()


def test_prepare__pack_recorded_with_other_frames__409_not_silently_kept(client, bearer):
    """Two declarations of one pack that disagree: the second was accepted (its frames ignored
    by INSERT OR IGNORE) and a commit would have pointed at frames that are not there."""
    built = Built(frames=2)
    prepared(client, bearer, [built.declared])
    first, second = built.declared["frames"]
    other = dict(built.declared, frames=[first, dict(second, codec="zstd")])
    before = rows()
    refused(post(client, PREPARE, prepare_body([other], execution_id="e2"), bearer), 409, "conflict")
    assert rows() == before


def test_prepare__pack_recorded_with_another_size__409(client, bearer):
    built = Built(frames=1)
    prepared(client, bearer, [built.declared])
    bigger = dict(built.declared, size=built.declared["size"] + 10)
    before = rows()
    refused(post(client, PREPARE, prepare_body([bigger], execution_id="e2"), bearer), 409, "conflict")
    assert rows() == before


def test_prepare__same_pack_again__accepted_once_recorded(client, bearer):
    built = Built(frames=3)
    prepared(client, bearer, [built.declared])
    prepared(client, bearer, [built.declared], execution_id="e2")
    assert (Pack.objects.count(), Blob.objects.count(), Pin.objects.count()) == (1, 3, 2)


def test_record__frame_breaking_a_check__raises_not_dropped():
    """SQLite's INSERT OR IGNORE dropped a row that broke a CHECK constraint, silently."""
    built = Built()
    frame = FrameRef(built.frames[0].digest, HEADER.size, 10, "raw", -1)
    write = PackWrite(built.key, built.declared["digest"], built.declared["size"], (frame,))
    request = PrepareRequest("acme", "wf", "e1", (), (write,), ())
    from django.db import IntegrityError

    with pytest.raises(IntegrityError):
        StateVersioningService().prepare(request)
    assert not Blob.objects.exists() and not CommitTransaction.objects.exists()


# 15. A transaction's answers ---------------------------------------------------------------------
def test_abort__after_commit__409_and_the_version_stays(client, bearer):
    txn = prepared(client, bearer)
    committed(client, bearer, txn, {"a": 1})
    refused(post(client, f"{PREPARE}/{txn}/abort", {}, bearer), 409, "conflict")
    assert CommitTransaction.objects.get().state == CommitTransaction.State.COMMITTED
    assert Execution.objects.get().head == Manifest.objects.get()


def test_abort__twice__200_both_times(client, bearer):
    txn = prepared(client, bearer)
    for _ in range(2):
        assert post(client, f"{PREPARE}/{txn}/abort", {}, bearer).json() == {"aborted": txn}
    assert CommitTransaction.objects.get().state == CommitTransaction.State.ABORTED


def test_commit__unknown_or_another_owners_transaction__the_same_404(client, bearer):
    _, globex = write_key("globex")
    theirs = prepared(client, {"HTTP_AUTHORIZATION": f"Bearer {globex}"}, owner_id="globex")
    unknown = "00000000-0000-4000-8000-000000000000"
    answers = []
    for txn in (unknown, theirs):
        for action, body in (("commit", {"entries": {}}), ("abort", {})):
            answer = refused(post(client, f"{PREPARE}/{txn}/{action}", body, bearer), 404, "not_found")
            answers.append({**answer, "error": answer["error"].replace(txn, "ID")})
    assert answers[0] == answers[2] and answers[1] == answers[3]
    assert CommitTransaction.objects.get().state == CommitTransaction.State.PREPARED


def test_commit__transaction_id_not_a_uuid__404(client, bearer):
    refused(post(client, f"{PREPARE}/not-a-uuid/commit", {"entries": {}}, bearer), 404, "not_found")


@pytest.mark.parametrize("where", ["no such frame", "another transaction's pending pack"])
def test_commit__pointer_to_a_frame_not_live__409_nothing_changed_still_prepared(
    client, bearer, store, where
):
    mine, theirs = Built(), Built()
    prepared(client, bearer, [theirs.declared], execution_id="other")
    txn = prepared(client, bearer, [mine.declared])
    store.put(mine.key, mine.data)
    pointer = (
        theirs.pointers()[0] if where != "no such frame" else dict(mine.pointers()[0], o=HEADER.size + 1)
    )
    before = rows()
    refused(post(client, f"{PREPARE}/{txn}/commit", {"entries": {"a": pointer}}, bearer), 409, "conflict")
    assert rows() == before and not Manifest.objects.exists()
    # Refused input changes nothing: the client may send a corrected commit.
    assert CommitTransaction.objects.get(pk=txn).state == CommitTransaction.State.PREPARED
    committed(client, bearer, txn, {"a": mine.pointers()[0]})


@pytest.mark.parametrize(
    "changes",
    [{"c": "zstd"}, {"s": "raw_size + 5"}, {"c": "zstd", "x": "ab" * 16}, {"c": "gzip", "s": "raw_size + 5"}],
    ids=["codec", "raw_size", "dict_id", "codec and raw_size"],
)
@pytest.mark.parametrize("as_chunk", [False, True], ids=["blob", "list chunk"])
def test_commit__pointer_decoding_its_frame_otherwise__409_nothing_changed_still_prepared(
    client, bearer, store, changes, as_chunk
):
    """A pointer names a frame by key, digest, offset and length; how to decode it (codec, raw
    size, dictionary) must be what was declared for that frame at prepare, where a frame's
    dictionary is checked to be the owner's own."""
    built = Built()
    txn = prepared(client, bearer, [built.declared])
    store.put(built.key, built.data)
    genuine = built.pointers()[0]
    pointer = dict(genuine)
    for field, value in changes.items():
        pointer[field] = genuine["s"] + 5 if value == "raw_size + 5" else value
    stored = as_list([pointer]) if as_chunk else pointer
    before = rows()
    answer = refused(
        post(client, f"{PREPARE}/{txn}/commit", {"entries": {"a": stored}}, bearer), 409, "conflict"
    )
    names = {"c": "codec", "s": "raw_size", "x": "dict_id"}
    assert all(names[field] in answer["error"] for field in changes), answer
    assert rows() == before and not Manifest.objects.exists()
    assert CommitTransaction.objects.get(pk=txn).state == CommitTransaction.State.PREPARED
    committed(client, bearer, txn, {"a": as_list([genuine]) if as_chunk else genuine})
    assert Manifest.objects.get().blobs.count() == 1


def test_commit__aborted_transaction__410(client, bearer):
    txn = prepared(client, bearer)
    post(client, f"{PREPARE}/{txn}/abort", {}, bearer)
    refused(post(client, f"{PREPARE}/{txn}/commit", {"entries": {}}, bearer), 410, "aborted")


# 15. Secrets in error reports ---------------------------------------------------------------------
def leaked(report: str, raw: str) -> bool:
    return raw in report or raw[12:] in report


def authenticating(request: Any) -> Any:
    """The error the write-key check raises, from a frame that holds no key of its own."""
    try:
        write_key_auth(request)
    except RuntimeError:
        return sys.exc_info()
    raise AssertionError("the check did not fail")


def test_error_report__crash_while_checking_a_write_key__key_hidden_with_debug_on(settings, monkeypatch):
    settings.DEBUG = True
    _, raw = write_key("acme")
    request = RequestFactory().post(PREPARE, HTTP_AUTHORIZATION=f"Bearer {raw}")

    def failing(**kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr("keys.auth.key_note_use", failing)
    reporter = ExceptionReporter(request, *authenticating(request))
    assert not leaked(reporter.get_traceback_html(), raw)
    assert not leaked(reporter.get_traceback_text(), raw)
    assert "the database went away" in reporter.get_traceback_text()


def test_debug_500_page__crash_on_the_key_created_page__key_hidden(client, settings, tmp_path):
    """The page that shows a new key once fails to render: the DEBUG page must not show it."""
    settings.DEBUG = True
    templates = tmp_path / "templates" / "admin"
    templates.mkdir(parents=True)
    (templates / "one_time_key.html").write_text("{{ raw_key }}{% url 'no-such-page' %}")
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [str(tmp_path / "templates")]}]
    user = UserFactory(is_staff=True, permissions=["statebag.add_writekey", "statebag.view_writekey"])
    client.force_login(user)
    client.raise_request_exception = False
    response = client.post("/admin/statebag/writekey/add/", {"owner_id": "acme", "name": "k"})
    assert response.status_code == 500
    from statebag.models import WriteKey

    prefix = WriteKey.objects.get().prefix
    page = response.content.decode()
    assert "NoReverseMatch" in page  # the DEBUG page, with its frames
    assert not __import__("re").search(rf"{prefix}[A-Za-z0-9_-]{{20,}}", page)


# 4. A database that cannot take a lock in time: 503, not 500 ----------------------------------------
class DatabaseLocked:
    """Another connection holds the lock the service needs, for as long as the block runs."""

    def __enter__(self) -> DatabaseLocked:
        name = connection.settings_dict["NAME"]
        if connection.vendor == "sqlite":
            # The in-memory test database is shared by its connections (a shared cache): one
            # holding a write lock makes the others' reads fail at once ("table is locked").
            self.other = sqlite3.connect(str(name), uri=True, isolation_level=None, check_same_thread=False)
            self.other.execute("BEGIN IMMEDIATE")
            self.other.execute("UPDATE statebag_writekey SET name = name")
            self.other.execute("UPDATE rollout_sdkkey SET name = name")
        else:
            import psycopg

            params = connection.get_connection_params()
            params.pop("cursor_factory", None)
            params.pop("context", None)
            self.other = psycopg.connect(**params, autocommit=False)
            self.other.execute("LOCK TABLE statebag_writekey, rollout_sdkkey IN ACCESS EXCLUSIVE MODE")
            with connection.cursor() as cursor:
                cursor.execute("SET lock_timeout = '100ms'")  # instead of waiting for good
        return self

    def __exit__(self, *exc: object) -> None:
        self.other.rollback() if connection.vendor != "sqlite" else self.other.execute("ROLLBACK")
        self.other.close()
        if connection.vendor != "sqlite":
            with connection.cursor() as cursor:
                cursor.execute("SET lock_timeout = 0")


@pytest.mark.django_db(transaction=True)
def test_database_locked__api_and_flagset__503_with_retry_after():
    from django.test import Client

    from rollout.models import Environment

    from ..factories import sdk_key

    _, raw = write_key("acme")
    environment = Environment.objects.create(key="bench", name="bench")
    _, sdk = sdk_key(environment)
    client = Client()
    with DatabaseLocked():
        api = post(client, PREPARE, prepare_body(), {"HTTP_AUTHORIZATION": f"Bearer {raw}"})
        flags = client.get("/api/v1/flagset", HTTP_AUTHORIZATION=f"Bearer {sdk}")
    for response in (api, flags):
        refused(response, 503, "unavailable")
        assert response["Retry-After"] == "1"
    assert not CommitTransaction.objects.exists()
