"""Envelope segments read with nothing but a store: every version checked against its hash and
linked to the one before it, every kept value against its digest, states rebuilt byte for byte
(key order included); anything tampered with is a typed error."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap

import pytest

from analemma_sdk.statebag import StateHydrator, manifest_hash
from analemma_sdk.statebag.canonical import sha256_hex, value_json
from analemma_sdk.statebag.envelopes import (
    EnvelopeBuilder,
    check_envelope,
    decode_envelope,
    encode_body,
    envelope_state,
    envelope_versions,
    read_envelope,
    read_history,
)
from analemma_sdk.statebag.errors import (
    CorruptEnvelopeError,
    DecompressionBombError,
    EnvelopeIntegrityError,
    InvalidKeyError,
    ManifestIntegrityError,
    StateBagError,
)
from analemma_sdk.statebag.inline import encode_inline
from analemma_sdk.statebag.keys import (
    envelope_key,
    execution_envelopes_prefix,
    key_owner,
    owner_envelopes_prefix,
    parse_envelope_key,
    validate_key,
)

IDS = {"owner_id": "acme", "workflow_id": "support", "execution_id": "exec-1"}


def message(i: int) -> dict:
    # Keys deliberately out of sorted order, as a chat API returns them.
    return {"role": "user" if i % 2 else "assistant", "content": f"turn {i}: " + "rebook me " * 30, "id": i}


def state(step: int) -> dict:
    return {
        "step": step,
        "messages": [message(i) for i in range(step)],
        "config": {"zeta": 1, "alpha": [3, 2, 1]},
        "status": f"s{step}",
    }


def stored(value):
    """The stored form the hydrator gives a data-plane value: an inline frame (small scalars
    stay plain)."""
    if isinstance(value, (dict, list)):
        return encode_inline(value_json(value)).to_json()
    return value


def chain(states, *, ids=IDS, first_parent=None):
    """Manifest documents of consecutive versions of ``states``, as the manifest API serves
    them (inline frames with their bytes), each with its hash."""
    documents, parent = [], first_parent
    for offset, values in enumerate(states):
        version = offset + 1 if first_parent is None else offset + 1 + first_parent[1]
        entries = {name: stored(value) for name, value in values.items()}
        parents = [parent[0]] if parent else []
        cohort = {"use_batching": True, "use_zstd": True}
        digest = manifest_hash(
            owner_id=ids["owner_id"],
            workflow_id=ids["workflow_id"],
            execution_id=ids["execution_id"],
            version=version,
            parents=parents,
            entries=entries,
            cohort=cohort,
        )
        documents.append(
            {
                "format": 1,
                "hash": digest,
                "owner_id": ids["owner_id"],
                "workflow_id": ids["workflow_id"],
                "execution_id": ids["execution_id"],
                "version": version,
                "parents": parents,
                "entries": entries,
                "cohort": cohort,
            }
        )
        parent = (digest, version)
    return documents


def segment_bytes(documents, **options) -> bytes:
    builder = EnvelopeBuilder()
    for document in documents:
        builder.add(document)
    return builder.encode(**options)


def put_segment(store, documents, *, ids=IDS, **options) -> str:
    key = envelope_key(
        ids["owner_id"], ids["execution_id"], documents[0]["version"], documents[-1]["version"]
    )
    store.put(key, segment_bytes(documents, **options))
    return key


def rewrite(store, key, change):
    """Tamper with a stored segment: decode it, let ``change`` edit its body, store it again."""
    body = decode_envelope(store.get(key), key=key).body()
    change(body)
    store.put(key, encode_body(body))


# Keys ----------------------------------------------------------------------------------------
def test_envelope_key__range__under_owner_prefix_and_valid():
    key = envelope_key("acme", "exec-1", 1, 25)
    tag = sha256_hex(b"exec-1")[:32]
    assert key == f"o/acme/e/{tag}/0000000001-0000000025.env"
    assert validate_key(key) == key
    assert key.startswith(owner_envelopes_prefix("acme"))
    assert key.startswith(execution_envelopes_prefix("acme", "exec-1"))
    assert key_owner(key) == "acme"
    assert parse_envelope_key(key) == ("acme", tag, 1, 25)


@pytest.mark.parametrize(
    "owner, execution, first, last",
    [
        ("acme", "exec-1", 0, 3),
        ("acme", "exec-1", 5, 4),
        ("acme", "exec-1", 1, 10**10),
        ("acme", "exec-1", True, 2),
        ("../x", "exec-1", 1, 2),
        ("acme", "a/b", 1, 2),
    ],
)
def test_envelope_key__bad_input__invalid_key_error(owner, execution, first, last):
    with pytest.raises(InvalidKeyError):
        envelope_key(owner, execution, first, last)


@pytest.mark.parametrize(
    "key",
    [
        "o/acme/p/ab/" + "a" * 64 + ".asbp",
        "o/acme/e/" + "a" * 32 + "/0000000002-0000000001.env",
        "o/acme/e/" + "A" * 32 + "/0000000001-0000000002.env",
        "o/acme/e/" + "a" * 32 + "/1-2.env",
        "dicts/x.zdict",
    ],
)
def test_parse_envelope_key__other_keys__none(key):
    assert parse_envelope_key(key) is None


# Writing and reading -------------------------------------------------------------------------
def test_read_envelope__segment__every_state_rebuilt_with_its_key_order(local_store):
    states = [state(step) for step in range(1, 8)]
    key = put_segment(local_store, chain(states))

    envelope = read_envelope(local_store, key)

    assert (envelope.first, envelope.last, envelope.codec) == (1, 7, "zstd")
    for version, expected in enumerate(states, start=1):
        rebuilt = envelope_state(envelope, version)
        assert json.dumps(rebuilt) == json.dumps(expected)  # key order counts


def test_envelope__inline_entries__kept_hashed_and_each_value_once():
    states = [state(step) for step in range(1, 4)]
    documents = chain(states)
    body = decode_envelope(segment_bytes(documents)).body()

    entry = body["versions"][1]["entries"]["config"]
    assert "b" not in entry and entry["d"] == documents[1]["entries"]["config"]["d"]
    # "config" is the same in every version: one value; "messages" differs each time.
    assert len(body["values"]) == 1 + 3
    assert all(json.loads(text) is not None for text in body["values"].values())


def test_encode__same_documents__same_bytes():
    documents = chain([state(step) for step in range(1, 5)])
    assert segment_bytes(documents) == segment_bytes(documents)


def test_encode__gzip__header_says_so_and_reads_back(local_store):
    states = [state(step) for step in range(1, 4)]
    key = put_segment(local_store, chain(states), use_zstd=False)
    data = local_store.get(key)
    assert data[:4] == b"ASBE" and struct.unpack(">H", data[4:6]) == (1,) and data[6] == 1
    envelope = read_envelope(local_store, key)
    assert envelope.codec == "gzip"
    assert envelope_state(envelope, 3) == states[2]


def test_encode__zstandard_missing__gzip_segment_any_reader_checks(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["zstandard"] = None  # import fails as if not installed
        sys.path.insert(0, {str(tmp_path)!r})
        from analemma_sdk.statebag.envelopes import decode_envelope, check_envelope
        from tests.sdk.test_envelopes import chain, segment_bytes, state
        data = segment_bytes(chain([state(1), state(2)]))
        check_envelope(decode_envelope(data))
        print(data[6])
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "1"  # gzip


def test_envelope_state__blob_pointers__read_from_the_store(local_store):
    # A value over the payload budget goes to a pack; the envelope keeps its pointer.
    hydrator = StateHydrator(use_batching=True, use_zstd=True, store=local_store, payload_budget=2048)
    big = {"history": [message(i) for i in range(200)], "small": {"b": 1, "a": 2}}
    result = hydrator.dehydrate_result(big, **IDS)
    assert any(
        isinstance(entry, dict) and entry.get("$sb") in ("blob", "list") for entry in result.entries.values()
    )
    document = chain([{}])[0]
    document["entries"] = dict(result.entries)
    document["hash"] = manifest_hash(
        owner_id="acme",
        workflow_id="support",
        execution_id="exec-1",
        version=1,
        parents=[],
        entries=document["entries"],
        cohort=document["cohort"],
    )
    key = put_segment(local_store, [document])

    envelope = read_envelope(local_store, key)

    assert json.dumps(envelope_state(envelope, 1, store=local_store)) == json.dumps(big)
    with pytest.raises(ValueError, match="store"):
        envelope_state(envelope, 1)


def test_read_history__two_segments__linked_and_listed_by_one_list(counting_store):
    states = [state(step) for step in range(1, 11)]
    documents = chain(states)
    put_segment(counting_store, documents[:6])
    put_segment(counting_store, documents[6:])
    other = {**IDS, "execution_id": "exec-2"}
    put_segment(counting_store, chain([state(1)], ids=other), ids=other)
    counting_store.reset()

    ranges = envelope_versions(counting_store, "acme", "exec-1")
    history = read_history(counting_store, "acme", "exec-1")

    assert [(found.first, found.last) for found in ranges] == [(1, 6), (7, 10)]
    assert history.versions == list(range(1, 11)) and history.gaps == ()
    assert history.state(8) == states[7]
    assert history.document(10)["hash"] == documents[-1]["hash"]
    assert (counting_store.counts["lists"], counting_store.counts["gets"]) == (2, 2)


def test_read_history__collected_segment__gap_reported_rest_checked(local_store):
    documents = chain([state(step) for step in range(1, 10)])
    put_segment(local_store, documents[:3])
    put_segment(local_store, documents[6:])

    history = read_history(local_store, "acme", "exec-1")

    assert history.gaps == ((4, 6),)
    assert history.versions == [1, 2, 3, 7, 8, 9]


# Tampering ------------------------------------------------------------------------------------
def test_tamper__value_edited__integrity_error(local_store):
    key = put_segment(local_store, chain([state(step) for step in range(1, 4)]))

    def edit(body):
        digest = next(iter(body["values"]))
        body["values"][digest] = body["values"][digest].replace("turn", "burn")

    rewrite(local_store, key, edit)
    with pytest.raises(EnvelopeIntegrityError, match="digest|bytes"):
        read_envelope(local_store, key)


def test_tamper__value_and_its_digest_replaced__integrity_error(local_store):
    key = put_segment(local_store, chain([state(step) for step in range(1, 4)]))

    def edit(body):
        entry = body["versions"][2]["entries"]["messages"]
        text = body["values"].pop(entry["d"]).replace("turn", "burn")
        entry["d"] = sha256_hex(text.encode())
        body["values"][entry["d"]] = text

    rewrite(local_store, key, edit)
    with pytest.raises(EnvelopeIntegrityError, match="hash"):
        read_envelope(local_store, key)


def test_tamper__plain_entry_edited__integrity_error(local_store):
    key = put_segment(local_store, chain([state(step) for step in range(1, 4)]))
    rewrite(local_store, key, lambda body: body["versions"][0]["entries"].update(status="approved"))
    with pytest.raises(ManifestIntegrityError, match="v1"):
        read_envelope(local_store, key)


@pytest.mark.parametrize("dropped", [0, 2, 4])
def test_tamper__version_dropped__integrity_error(local_store, dropped):
    key = put_segment(local_store, chain([state(step) for step in range(1, 6)]))
    rewrite(local_store, key, lambda body: body["versions"].pop(dropped))
    with pytest.raises(EnvelopeIntegrityError, match="should hold versions 1-5"):
        read_envelope(local_store, key)


def test_tamper__version_dropped_and_renumbered__integrity_error(local_store):
    key = put_segment(local_store, chain([state(step) for step in range(1, 6)]))
    body = decode_envelope(local_store.get(key), key=key).body()
    del body["versions"][2]
    for document in body["versions"][2:]:
        document["version"] -= 1
    renamed = envelope_key("acme", "exec-1", 1, 4)
    local_store.put(renamed, encode_body(body))

    with pytest.raises(ManifestIntegrityError):
        read_envelope(local_store, renamed)


def test_read_history__segment_shortened_and_renamed__gap_reported(local_store):
    # A storage-only reader cannot tell a removed segment from one GC collected: the versions
    # it cannot check are reported, never passed over.
    documents = chain([state(step) for step in range(1, 9)])
    put_segment(local_store, documents[:3])  # v4 dropped, the key says 1-3
    put_segment(local_store, documents[4:])

    history = read_history(local_store, "acme", "exec-1")

    assert history.gaps == ((4, 4),)
    with pytest.raises(KeyError):
        history.state(4)


def test_tamper__parents_rewired__integrity_error(local_store):
    key = put_segment(local_store, chain([state(step) for step in range(1, 4)]))
    rewrite(local_store, key, lambda body: body["versions"][2].update(parents=[body["versions"][0]["hash"]]))
    with pytest.raises(ManifestIntegrityError):
        read_envelope(local_store, key)


def test_tamper__extra_value__integrity_error(local_store):
    key = put_segment(local_store, chain([state(1)]))
    text = '{"planted":true}'
    rewrite(local_store, key, lambda body: body["values"].update({sha256_hex(text.encode()): text}))
    with pytest.raises(EnvelopeIntegrityError, match="no version uses"):
        read_envelope(local_store, key)


def test_tamper__segment_under_another_executions_key__integrity_error(local_store):
    documents = chain([state(1), state(2)])
    other = envelope_key("acme", "exec-2", 1, 2)
    local_store.put(other, segment_bytes(documents))
    with pytest.raises(EnvelopeIntegrityError, match="key"):
        read_envelope(local_store, other)


def test_check_envelope__previous_of_another_range__integrity_error():
    documents = chain([state(step) for step in range(1, 7)])
    first = decode_envelope(segment_bytes(documents[:2]), key=envelope_key("acme", "exec-1", 1, 2))
    third = decode_envelope(segment_bytes(documents[4:]), key=envelope_key("acme", "exec-1", 5, 6))
    with pytest.raises(EnvelopeIntegrityError, match="starts at v5"):
        check_envelope(third, previous=first)


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:10],
        lambda data: b"XXXX" + data[4:],
        lambda data: data[:4] + struct.pack(">H", 2) + data[6:],
        lambda data: data[:6] + b"\x07" + data[7:],
        lambda data: data[:7] + b"\x01" + data[8:],
        lambda data: data[:-20],
        lambda data: data[:16] + bytes(len(data) - 16),
    ],
    ids=["truncated-header", "magic", "format", "codec", "flags", "truncated-frame", "zeroed-frame"],
)
def test_decode__damaged_bytes__corrupt_envelope_error(damage):
    data = segment_bytes(chain([state(1), state(2)]))
    with pytest.raises(CorruptEnvelopeError):
        decode_envelope(damage(data))


def test_decode__flipped_frame_byte__typed_error():
    data = bytearray(segment_bytes(chain([state(step) for step in range(1, 4)])))
    data[len(data) // 2] ^= 0x55
    with pytest.raises(StateBagError):
        check_envelope(decode_envelope(bytes(data)))


def test_decode__declared_size_over_ceiling__decompression_bomb_error():
    data = segment_bytes(chain([state(1)]))
    header = data[:8] + struct.pack(">Q", 10**12)
    with pytest.raises(DecompressionBombError):
        decode_envelope(header + data[16:])
    with pytest.raises(DecompressionBombError):
        decode_envelope(data, max_bytes=100)


def test_decode__not_a_body__corrupt_envelope_error():
    with pytest.raises(CorruptEnvelopeError):
        decode_envelope(encode_body({"v": 1, "owner": "acme"}))
    with pytest.raises(CorruptEnvelopeError):
        decode_envelope(
            encode_body(
                {"v": 1, "owner": "acme", "workflow": "w", "execution": "e", "versions": [], "values": {}}
            )
        )


def test_builder__versions_of_two_executions__refused():
    builder = EnvelopeBuilder()
    builder.add(chain([state(1)])[0])
    with pytest.raises(ValueError):
        builder.add(chain([state(1)], ids={**IDS, "execution_id": "exec-2"})[0])
