"""Generated bad input against the statebag and flag APIs: never a 5xx, and a refusal changes
nothing. Bodies are valid requests with one part replaced by arbitrary JSON, or arbitrary
JSON and bytes outright; paths, headers and CLI options get arbitrary text.

The statebag's requests start from a real pack, stored as its upload stored it, so a valid
commit is recorded and a mutated one reaches the commit service itself (its pointers resolved
against the recorded frames). Each example runs in a savepoint rolled back after it: every
example starts from the same rows, the transaction still prepared."""

from __future__ import annotations

import contextlib
import json
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from analemma_sdk.statebag.cache import BlobCache
from analemma_sdk.statebag.canonical import canonical_json, sha256_hex
from analemma_sdk.statebag.codec import CODECS, GZIP, RAW, Compressor, Encoded
from analemma_sdk.statebag.keys import pack_key
from analemma_sdk.statebag.manifests import PackWrite
from analemma_sdk.statebag.packs import build_pack
from analemma_sdk.statebag.pointers import BlobRef, ChunkRef, ListRef, parse_pointer
from analemma_sdk.statebag.reader import BlobReader
from audit.models import AuditEntry
from rollout.models import FlagVersion, Revision
from statebag.models import (
    Blob,
    CommitTransaction,
    DehydrationJob,
    Execution,
    Manifest,
    ManifestEntry,
    Pack,
    Pin,
)
from statebag.services import statebag_store

from ..factories import UserFactory, sdk_key, write_key

pytestmark = pytest.mark.django_db
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # the same examples every run: a failure reproduces
)
BASE = "/api/v1/statebag"
PREPARE = f"{BASE}/transactions"


class RealPack:
    """A pack as the SDK builds it: a raw frame (a value) and a gzip frame (a list chunk)."""

    def __init__(self, owner_id: str = "acme") -> None:
        value = canonical_json({"text": "a value stored as one frame", "n": 1})
        chunk = canonical_json([{"role": "user", "text": "hello " * 20}, {"role": "assistant"}])
        built = build_pack(
            [
                (sha256_hex(value), len(value), Encoded(RAW, value)),
                (sha256_hex(chunk), len(chunk), Compressor(GZIP).encode(chunk)),
            ]
        )
        assert [frame.codec for frame in built.frames] == [RAW, GZIP]
        self.key = pack_key(owner_id, built.digest)
        self.data = built.data
        self.declared = PackWrite(self.key, built.digest, len(built.data), built.frames).to_json()
        self.value, self.chunk = (
            BlobRef(f.digest, self.key, f.offset, f.length, f.codec, f.raw_size, f.dict_id)
            for f in built.frames
        )


PACK = RealPack()


@contextlib.contextmanager
def rolled_back() -> Iterator[None]:
    """What one example writes, undone after it."""
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


@pytest.fixture
def store(statebag_storage, tmp_path):
    statebag_storage(folder=tmp_path / "service-blobs")
    return statebag_store()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
# Python's json writes these, JSON has no spelling for them: the parser must refuse them.
non_json_numbers = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "1e30", "-0", "2e-400"])


def valid_prepare() -> dict[str, Any]:
    return {"owner_id": "acme", "workflow_id": "wf", "execution_id": "e1", "packs": [PACK.declared]}


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a JSON value one could replace."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths(child, (*prefix, index))
    return found


def replaced(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    copy = json.loads(json.dumps(value))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return copy


@st.composite
def mutated(draw: Any, valid: dict[str, Any]) -> str:
    path = draw(st.sampled_from(paths(valid)))
    if draw(st.booleans()):
        return json.dumps(replaced(valid, path, draw(json_values)))
    marker = "__replace_me__"
    return json.dumps(replaced(valid, path, marker)).replace(f'"{marker}"', draw(non_json_numbers))


def statebag_rows() -> tuple[int, ...]:
    return (
        CommitTransaction.objects.count(),
        Manifest.objects.count(),
        Execution.objects.count(),
        Pack.objects.count(),
        Blob.objects.count(),
        Pin.objects.count(),
        ManifestEntry.objects.count(),
        AuditEntry.objects.count(),
    )


@pytest.fixture
def auth():
    return {"HTTP_AUTHORIZATION": f"Bearer {write_key('acme')[1]}"}


def answer(response: Any, before: tuple[int, ...], after: tuple[int, ...]) -> None:
    assert response.status_code < 500, response.content[:400]
    if response.status_code >= 400:
        assert response.json()["code"], response.content[:400]
        assert before == after, f"a refused request changed something: {response.content[:300]!r}"


@FUZZ
@given(body=mutated(valid_prepare()) | json_values.map(json.dumps) | st.binary(max_size=200))
def test_prepare__generated_bad_input__never_5xx_nothing_changed(client, auth, body):
    with rolled_back():
        before = statebag_rows()
        response = client.post(PREPARE, data=body, content_type="application/json", **auth)
        answer(response, before, statebag_rows())


@pytest.fixture
def prepared(client, auth, store):
    """A prepared transaction whose pack is stored, uploaded to the URL prepare handed out."""
    body = {**valid_prepare(), "upload": "presigned"}
    response = client.post(PREPARE, data=json.dumps(body), content_type="application/json", **auth)
    assert response.status_code == 201, response.content
    target = response.json()["uploads"][PACK.key]
    url = urlsplit(target["url"])
    uploaded = client.put(
        f"{url.path}?{url.query}" if url.query else url.path,
        data=PACK.data,
        content_type="application/octet-stream",
    )
    assert uploaded.status_code == 201, uploaded.content
    assert store.get(PACK.key) == PACK.data
    return response.json()["txn_id"]


def valid_commit() -> dict[str, Any]:
    history = ListRef(3, (ChunkRef(PACK.chunk, 2),), ({"role": "user"},))
    return {
        "entries": {"answer": PACK.value.to_json(), "history": history.to_json(), "n": 3},
        "cohort": {"use_zstd": True, "zstd_level": 3},
    }


def frames_decode(entries: dict[str, Any]) -> None:
    """Every frame an accepted commit points at decodes as its pointer says, from the store."""
    refs: list[BlobRef] = []
    for stored in entries.values():
        pointer = parse_pointer(stored)
        if isinstance(pointer, BlobRef):
            refs.append(pointer)
        elif isinstance(pointer, ListRef):
            refs.extend(pointer.blob_refs())
    for ref in refs:  # a reader each, its cache empty: a cached digest would hide a bad pointer
        reader = BlobReader(statebag_store(), BlobCache(), max_blob_bytes=2**20, legacy_dictionaries=False)
        reader.read_blobs([ref])


def with_pointer(name: str, **changes: Any) -> str:
    body = valid_commit()
    if name == "history":
        body["entries"]["history"]["chunks"][0].update(changes)
    else:
        body["entries"][name].update(changes)
    return json.dumps(body)


def _near(value: int) -> st.SearchStrategy[int]:
    return st.integers(max(value - 3, 0), value + 3) | st.integers(0, 2**53)


# Plausible values for each pointer field: well-formed, so the commit service itself answers.
POINTER_FIELDS = {
    "d": st.sampled_from([PACK.value.digest, PACK.chunk.digest, "cd" * 32]),
    "k": st.sampled_from([PACK.key, pack_key("acme", "cd" * 32), pack_key("globex", PACK.key[-69:-5])]),
    "o": _near(PACK.value.offset) | _near(PACK.chunk.offset),
    "n": _near(PACK.value.length) | _near(PACK.chunk.length),
    "c": st.sampled_from(sorted(CODECS)),
    "s": _near(PACK.value.raw_size) | _near(PACK.chunk.raw_size),
    "x": st.sampled_from(["ab" * 16, "0", "f" * 64]),
}


@st.composite
def pointer_mutated(draw: Any) -> str:
    """The valid commit with one or more fields of its pointers changed to plausible values."""
    changes = draw(st.dictionaries(st.sampled_from(sorted(POINTER_FIELDS)), st.just(None), min_size=1))
    name = draw(st.sampled_from(["answer", "history"]))
    return with_pointer(name, **{field: draw(POINTER_FIELDS[field]) for field in changes})


def test_commit__the_valid_commit__recorded_and_decodes(client, auth, prepared):
    response = client.post(
        f"{PREPARE}/{prepared}/commit",
        data=json.dumps(valid_commit()),
        content_type="application/json",
        **auth,
    )
    assert response.status_code == 200, response.content
    assert CommitTransaction.objects.get(pk=prepared).state == CommitTransaction.State.COMMITTED
    assert Manifest.objects.get().blobs.count() == 2
    frames_decode(valid_commit()["entries"])


def test_commit__generated_input__never_5xx_refusals_change_nothing(client, auth, prepared):
    seen: Counter[int] = Counter()

    @FUZZ
    @given(body=pointer_mutated() | mutated(valid_commit()) | json_values.map(json.dumps))
    @example(body=json.dumps(valid_commit()))
    @example(body=with_pointer("answer", c="gzip"))
    @example(body=with_pointer("answer", s=PACK.value.raw_size + 5))
    @example(body=with_pointer("history", c="zstd", x="ab" * 16))
    @example(body=with_pointer("history", o=PACK.chunk.offset + 1))
    @example(body=with_pointer("answer", k=pack_key("acme", "cd" * 32)))
    @example(body='{"entries": {"a": null}}')  # no pointer to what was uploaded
    def run(body: str) -> None:
        with rolled_back():
            before = statebag_rows()
            response = client.post(
                f"{PREPARE}/{prepared}/commit", data=body, content_type="application/json", **auth
            )
            seen[response.status_code] += 1
            answer(response, before, statebag_rows())
            state = CommitTransaction.objects.get(pk=prepared).state
            if response.status_code >= 400:
                assert state == CommitTransaction.State.PREPARED, response.content[:400]
            else:
                assert state == CommitTransaction.State.COMMITTED
                sent = json.loads(body)
                frames_decode(sent["entries"])
                # What was recorded reads back as sent, its hash checked.
                read = client.get(f"{BASE}/executions/e1/manifests/head", **auth)
                assert read.status_code == 200, read.content[:400]
                assert read.json()["entries"] == sent["entries"]

    run()
    # The commit service itself was reached: commits recorded, pointers refused by it.
    assert seen[200] and seen[409] and seen[400], seen


# Ranged reads ---------------------------------------------------------------------------------
def _key_variants(key: str) -> st.SearchStrategy[str]:
    """Keys near the stored one: cut, spliced with arbitrary text, climbing, another owner's."""
    near = st.builds(
        lambda cut, text, keep: key[:cut] + text + (key[cut:] if keep else ""),
        st.integers(0, len(key)),
        st.text(max_size=12),
        st.booleans(),
    )
    fixed = st.sampled_from(
        [key, key.replace("o/acme/", "o/globex/"), "o/globex/../" + key[2:], "o/acme/p", "o/acme", ""]
    )
    return fixed | near | st.text(max_size=60)


range_positions = st.one_of(
    st.integers(0, 2 * len(PACK.data)).map(str),  # within the object, or past it
    st.just(""),
    st.integers(0, 2**70).map(str),
    st.text(st.characters(categories=("Nd", "No")), min_size=1, max_size=3),  # digits of any script
    st.sampled_from([19, 20, 4300, 4301, 5000]).map(lambda digits: "9" * digits),  # int()'s limit: 4300
    st.integers(-5, 5).map(str),
)
single_ranges = st.builds("bytes={}-{}".format, range_positions, range_positions)
range_headers = st.one_of(  # mostly single ranges: the one form answered with bytes
    single_ranges,
    single_ranges,
    single_ranges,
    st.none(),
    st.builds("bytes={}-{},{}-{}".format, range_positions, range_positions, range_positions, range_positions),
    st.text(max_size=40),
)
_CONTENT_RANGE = re.compile(r"bytes ([0-9]+)-([0-9]+)/([0-9]+)")
_SINGLE_RANGE = re.compile(r"bytes=[0-9]*-[0-9]*")


def read(client: Any, auth: dict[str, str], key: str, range_header: str | None) -> Any:
    """The answer to a read, checked: never a 5xx, and bytes only as the request asked."""
    headers = dict(auth)
    if range_header is not None:
        headers["HTTP_RANGE"] = range_header
    before = statebag_rows()
    try:
        response = client.get(f"{BASE}/packs/{quote(key, safe='/')}", **headers)
    except ValueError:
        return None  # the test client itself refuses a header with a newline; no server sees it
    answer(response, before, statebag_rows())
    if response.status_code == 200:
        assert key == PACK.key and response.content == PACK.data
    elif response.status_code == 206:
        # Only one range of ASCII digits is a range (RFC 9110), and the bytes are the ones asked.
        assert key == PACK.key and range_header is not None
        assert _SINGLE_RANGE.fullmatch(range_header.replace(" ", "")), range_header
        match = _CONTENT_RANGE.fullmatch(response["Content-Range"])
        assert match, response["Content-Range"]
        first, last, size = map(int, match.groups())
        assert size == len(PACK.data) and response.content == PACK.data[first : last + 1]
    elif response.status_code == 416:
        assert response["Content-Range"] == f"bytes */{len(PACK.data)}"
    return response


def test_pack_read__generated_range__never_5xx_answers_the_bytes_asked(client, auth, store):
    store.put(PACK.key, PACK.data)
    seen: Counter[int] = Counter()

    @FUZZ
    @given(range_header=range_headers)
    @example(range_header=None)
    @example(range_header="bytes=0-9")
    @example(range_header=f"bytes={len(PACK.data)}-")
    @example(range_header="bytes=" + "9" * 5000 + "-")
    @example(range_header="bytes=-" + "9" * 5000)
    @example(range_header="bytes=\u0663-")
    def run(range_header: str | None) -> None:
        response = read(client, auth, PACK.key, range_header)
        if response is not None:
            seen[response.status_code] += 1

    run()
    assert seen[200] and seen[206] and seen[400] and seen[416], seen


def test_pack_read__generated_key__never_5xx_only_the_stored_object(client, auth, store):
    store.put(PACK.key, PACK.data)
    seen: Counter[int] = Counter()

    @FUZZ
    @given(key=_key_variants(PACK.key), range_header=range_headers)
    @example(key=PACK.key.replace("o/acme/", "o/globex/"), range_header=None)
    def run(key: str, range_header: str | None) -> None:
        response = read(client, auth, key, range_header)
        if response is not None:
            seen[response.status_code] += 1

    run()
    assert seen[404], seen


# Dehydration jobs ---------------------------------------------------------------------------------
def valid_job() -> dict[str, Any]:
    return {
        "owner_id": "acme",
        "workflow_id": "wf",
        "execution_id": "e1",
        "state": {"messages": [{"role": "user", "text": "hi"}], "n": 3},
        "parent": "",
    }


def test_jobs__generated_input__never_5xx_refusals_change_nothing(client):
    client.force_login(UserFactory(permissions=["statebag.add_dehydrationjob"]))
    seen: Counter[int] = Counter()

    @FUZZ
    @given(body=mutated(valid_job()) | json_values.map(json.dumps) | st.binary(max_size=200))
    @example(body=json.dumps(valid_job()))
    def run(body: str | bytes) -> None:
        with rolled_back():
            before = (*statebag_rows(), DehydrationJob.objects.count())
            response = client.post(f"{BASE}/jobs", data=body, content_type="application/json")
            seen[response.status_code] += 1
            answer(response, before, (*statebag_rows(), DehydrationJob.objects.count()))
            if response.status_code < 400:
                assert response.status_code == 202, response.content[:400]
                job = DehydrationJob.objects.get(pk=response.json()["id"])
                assert job.state == json.loads(body)["state"]

    run()
    assert seen[202] and seen[400], seen


@FUZZ
@given(execution=st.text(max_size=30), version=st.text(max_size=30))
def test_manifest__generated_path__never_5xx(client, auth, execution, version):
    from urllib.parse import quote

    path = f"/api/v1/statebag/executions/{quote(execution, safe='')}/manifests/{quote(version, safe='')}"
    assert client.get(path, **auth).status_code < 500


@FUZZ
@given(authorization=st.text(max_size=80), etag=st.text(max_size=80))
def test_flagset__generated_headers__never_5xx(client, authorization, etag):
    try:
        response = client.get("/api/v1/flagset", HTTP_AUTHORIZATION=authorization, HTTP_IF_NONE_MATCH=etag)
    except ValueError:
        return  # the test client itself refuses a header with a newline; no server sees it
    assert response.status_code < 500


@pytest.fixture
def prod_key():
    from rollout.models import Environment

    return sdk_key(Environment.objects.get(key="prod"), actor="t")[1]


@FUZZ
@given(
    percentage=st.none() | st.text(max_size=12) | non_json_numbers,
    value=st.none() | st.text(max_size=20) | non_json_numbers | json_values.map(json.dumps),
)
def test_rollout_cli__generated_options__refused_or_valid_never_a_crash(percentage, value):
    options = {"env": "prod"}
    if percentage is not None:
        options["percentage"] = percentage
    if value is not None:
        options["value"] = value
    before = (Revision.objects.count(), FlagVersion.objects.count())
    try:
        call_command("rollout", "set", "zstd_level", **options)
    except CommandError:
        assert (Revision.objects.count(), FlagVersion.objects.count()) == before
