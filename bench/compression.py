"""Per-field blobs of an eval corpus under each codec: how many bytes each keeps, how fast.

    python bench/compression.py --train DIR --eval DIR

Blobs are what the state bag stores: the value JSON (``canonical.value_json``, key order kept)
of each field of each document, and of each message of list fields (a sealed chunk is a run of
such messages). The dictionary is trained on the train corpus only. Throughput here is of the
codecs alone, on bytes already encoded; ``dehydrate_throughput.py`` measures a dehydration.
"""

from __future__ import annotations

import argparse
import gzip
import time
from pathlib import Path

from _common import DEFAULT_CORPUS, emit_json, load_corpus, print_table

from analemma_sdk.statebag import train_dictionary
from analemma_sdk.statebag.canonical import value_json
from analemma_sdk.statebag.codec import ZSTD, Compressor, decode


def field_blobs(directory: Path) -> list[bytes]:
    blobs = []
    for doc in load_corpus(directory):
        for value in doc.values():
            blobs.append(value_json(value))
    return blobs


def measure(name: str, compress, blobs: list[bytes]) -> dict[str, float]:
    raw = sum(len(b) for b in blobs)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        stored = sum(len(compress(b)) for b in blobs)
        best = min(best, time.perf_counter() - started)
    return {"kept": stored / raw, "mb_s": raw / 1e6 / best, "raw_bytes": raw, "stored_bytes": stored}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--eval", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--dict-size", type=int, default=110 * 1024)
    args = parser.parse_args()

    train_docs = load_corpus(args.train)
    samples = [value_json(v) for d in train_docs for v in d.values()]
    samples += [value_json(m) for d in train_docs for v in d.values() if isinstance(v, list) for m in v]
    dictionary = train_dictionary(samples, size=args.dict_size)
    blobs = field_blobs(args.eval)

    with_dict = Compressor(ZSTD, 3, dictionary)
    check = with_dict.encode(blobs[0])
    assert decode(check.codec, check.data, len(blobs[0]), dictionary) == blobs[0]
    zstd3, zstd19 = Compressor(ZSTD, 3), Compressor(ZSTD, 19)
    codecs = {
        "gzip-6": lambda b: gzip.compress(b, compresslevel=6, mtime=0),
        "zstd-3": lambda b: zstd3.encode(b).data,
        "zstd-19": lambda b: zstd19.encode(b).data,
        "zstd-3-dict": lambda b: with_dict.encode(b).data,
    }
    results = {name: measure(name, fn, blobs) for name, fn in codecs.items()}
    same = args.train.resolve() == args.eval.resolve()
    print(
        f"{len(blobs)} field blobs, {sum(len(b) for b in blobs):,} raw bytes; dictionary {len(dictionary.data):,} B"
        + (" (train = eval: an optimistic figure)" if same else "")
    )
    print_table(["codec", "kept", "MB/s"], [[n, f"{r['kept']:.1%}", r["mb_s"]] for n, r in results.items()])
    emit_json({"eval": results, "train_is_eval": same, "dictionary_bytes": len(dictionary.data)})


if __name__ == "__main__":
    main()
