import gzip
import json
import subprocess
import sys
import textwrap

import pytest
import zstandard

from analemma_sdk.statebag import (
    CorruptBlobError,
    CorruptPackError,
    DecompressionBombError,
    InvalidValueError,
)
from analemma_sdk.statebag.canonical import _stdlib_dumps, canonical_json
from analemma_sdk.statebag.codec import GZIP, RAW, ZSTD, Compressor, ZstdDictionary, decode, train_dictionary
from analemma_sdk.statebag.packs import build_pack, read_pack_index

VALUE = {"b": [1, 2.5, "ü"], "a": {"z": None, "y": True}, "text": "hello " * 100}


def test_canonical_json__nested_value__sorted_compact_utf8():
    assert canonical_json({"b": 1, "a": [1, "é"]}) == '{"a":[1,"é"],"b":1}'.encode()


@pytest.mark.parametrize("bad", [float("nan"), {"x": [float("inf")]}, {"s": {1, 2}}, {"o": object()}])
def test_canonical_json__not_json__raises_invalid_value(bad):
    with pytest.raises(InvalidValueError):
        canonical_json(bad)


def test_canonical_json__fast_and_stdlib_paths__agree_on_corpus(corpus_dir):
    for path in sorted(corpus_dir.glob("*.json"))[:20]:
        doc = json.loads(path.read_text())
        assert canonical_json(doc) == _stdlib_dumps(doc)


@pytest.mark.parametrize("codec", [RAW, GZIP, ZSTD])
def test_compressor__each_codec__round_trips(codec):
    raw = canonical_json(VALUE)
    encoded = Compressor(codec, 3).encode(raw)
    assert encoded.codec == codec
    assert decode(encoded.codec, encoded.data, len(raw)) == raw


def test_compressor__tiny_value__stays_raw():
    assert Compressor(ZSTD).encode(b'{"a":1}').codec == RAW


@pytest.mark.parametrize("level", [0, 23, "3", True])
def test_compressor__level_out_of_range__raises(level):
    with pytest.raises(ValueError):
        Compressor(ZSTD, level)


def test_decode__zstd_bomb__bounded_typed_error():
    # 256 MiB of zeros compress to a few KB; the frame claims a tiny raw size.
    bomb = zstandard.ZstdCompressor(level=1).compress(b"\0" * (256 * 1024 * 1024))
    assert len(bomb) < 100_000
    with pytest.raises(DecompressionBombError):
        decode(ZSTD, bomb, 1000)


def test_decode__gzip_bomb__bounded_typed_error():
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))
    with pytest.raises(DecompressionBombError):
        decode(GZIP, bomb, 1000)


@pytest.mark.parametrize("codec", [GZIP, ZSTD])
def test_decode__truncated_frame__corrupt_error(codec):
    raw = canonical_json(VALUE)
    encoded = Compressor(codec).encode(raw)
    with pytest.raises(CorruptBlobError):
        decode(codec, encoded.data[: len(encoded.data) // 2], len(raw))


def test_decode__garbage__corrupt_error():
    with pytest.raises(CorruptBlobError):
        decode(ZSTD, b"\x00garbage" * 10, 100)


def test_dictionary__trained_on_samples__round_trips_and_needs_dictionary():
    samples = [
        canonical_json({"role": "user", "content": f"message number {i} " * 5, "i": i}) for i in range(400)
    ]
    dictionary = train_dictionary(samples, size=4096)
    raw = samples[7]
    encoded = Compressor(ZSTD, 3, dictionary).encode(raw)
    assert encoded.dict_id == dictionary.dict_id
    assert decode(ZSTD, encoded.data, len(raw), dictionary) == raw
    with pytest.raises(CorruptBlobError):
        decode(ZSTD, encoded.data, len(raw), ZstdDictionary(b"not the dictionary" * 100))


def test_build_pack__several_frames__index_reads_back():
    blobs = []
    for i in range(3):
        raw = canonical_json({"i": i, "pad": "x" * 500})
        blobs.append((f"{i:064x}", len(raw), Compressor(ZSTD).encode(raw)))
    pack = build_pack(blobs)
    frames = read_pack_index(pack.data)
    assert [f.digest for f in frames] == [b[0] for b in blobs]
    first = frames[1]
    assert decode(
        first.codec, pack.data[first.offset : first.offset + first.length], first.raw_size
    ) == canonical_json({"i": 1, "pad": "x" * 500})


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d[:-3],  # truncated footer
        lambda d: b"XXXX" + d[4:],  # bad magic
        lambda d: d[:-20] + bytes([d[-20] ^ 0xFF]) + d[-19:],  # flipped index byte
        lambda d: d[:8],  # only the header
    ],
)
def test_read_pack_index__damaged_pack__corrupt_pack_error(damage):
    raw = canonical_json(VALUE)
    pack = build_pack([("a" * 64, len(raw), Compressor(ZSTD).encode(raw))])
    with pytest.raises(CorruptPackError):
        read_pack_index(damage(pack.data))


def test_compressor__zstandard_missing__falls_back_to_gzip_with_one_warning(tmp_path):
    script = textwrap.dedent(
        f"""
        import logging, sys
        sys.modules["zstandard"] = None  # import fails as if not installed
        logging.basicConfig(level=logging.WARNING)
        from analemma_sdk.statebag import StateHydrator, LocalFolderStore
        h = StateHydrator(use_batching=True, use_zstd=True, store=LocalFolderStore({str(tmp_path)!r}))
        h2 = StateHydrator(use_batching=True, use_zstd=True, store=h.store)
        state = {{"messages": [{{"text": "hello world " * 50, "i": i}} for i in range(40)]}}
        payload = h.dehydrate(state, owner_id="o", workflow_id="w", execution_id="e")
        assert h.hydrate(payload).to_dict() == state
        print(h.compressor.codec)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "gzip"
    assert done.stderr.count("zstandard is not installed") == 1
