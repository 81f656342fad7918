"""A value many times the payload is looked at with cheap deflate first: far too large, it
costs that look alone; compressible enough to fit, it is still kept inline."""

import random
import zlib

from analemma_sdk.statebag import inline
from analemma_sdk.statebag.canonical import value_json
from analemma_sdk.statebag.inline import decode_inline, encode_inline

LIMIT = 16 * 1024


def spy_levels(monkeypatch) -> list[int]:
    levels, real = [], zlib.compressobj

    def compressobj(level, *args):
        levels.append(level)
        return real(level, *args)

    monkeypatch.setattr(inline.zlib, "compressobj", compressobj)
    return levels


def test_encode_inline__far_too_large__only_the_cheap_look(monkeypatch):
    rng = random.Random(7)
    large = value_json([{"id": rng.getrandbits(64), "text": f"{rng.random()}"} for _ in range(20_000)])
    assert len(large) > 32 * LIMIT
    levels = spy_levels(monkeypatch)
    assert encode_inline(large, limit=LIMIT) is None
    assert levels == [inline._LOOK_LEVEL]  # the level-6 stream never started


def test_encode_inline__large_but_fits__kept_inline(monkeypatch):
    large = value_json([{"role": "user", "content": "the same words again"}] * 40_000)
    assert len(large) > 32 * LIMIT
    levels = spy_levels(monkeypatch)
    frame = encode_inline(large, limit=LIMIT)
    assert frame is not None and decode_inline(frame, len(large)) == large
    assert levels == [inline._LOOK_LEVEL, inline.DEFLATE_LEVEL]


def test_encode_inline__without_a_limit__no_look(monkeypatch):
    small = value_json([{"n": i} for i in range(2000)])
    levels = spy_levels(monkeypatch)
    assert encode_inline(small) is not None
    assert levels == [inline.DEFLATE_LEVEL]
