"""The encoder's NaN/Infinity search: its fast level scan answers as the walk does, and runs."""

import hashlib
import math
import random
import struct
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest

from analemma_sdk.statebag import InvalidValueError, canonical
from analemma_sdk.statebag.canonical import canonical_json, parse_json, sha256_hex, value_json

SDK = Path(__file__).resolve().parents[2] / "sdk"
PAYLOAD_NAN = struct.unpack("<d", b"\x01\x02\x03\x04\x05\x06\xf9\xff")[0]


class Number(float):
    pass


class Mapping(dict):
    pass


def random_value(rng: random.Random, depth: int = 0, bad: float | None = None):
    """A nested JSON-like value; ``bad`` (NaN or an infinity) hidden in it somewhere, maybe."""
    roll = rng.random()
    if depth > 4 or roll < 0.45:
        leaf = rng.choice(["text", 7, 2.5, None, True, -1e300, 0.0])
        return bad if bad is not None and rng.random() < 0.2 else leaf
    items = [random_value(rng, depth + 1, bad) for _ in range(rng.randrange(0, 5))]
    kind = rng.choice(["dict", "list", "tuple"])
    if kind == "dict":
        return {f"k{i}": item for i, item in enumerate(items)}
    return items if kind == "list" else tuple(items)


@pytest.mark.parametrize("seed", range(300))
def test_search__random_values__agrees_with_the_walk(seed):
    rng = random.Random(seed)
    bad = rng.choice([None, None, math.nan, math.inf, -math.inf, PAYLOAD_NAN])
    value = [random_value(rng, bad=bad), None]  # a null, so value_json searches
    walk = canonical._walk_non_finite(value)
    assert canonical._has_non_finite(value) is walk
    if canonical._levels_all_finite(value):
        assert walk is False  # the fast answer is only ever "certainly none"


@pytest.mark.parametrize(
    "value",
    [
        [None, {"a": [1, [2, (3, math.nan)]]}],
        {"deep": [[[[[[[[-math.inf]]]]]]]], "n": None},
        [None, PAYLOAD_NAN],
        [None, Number("nan")],  # a float subclass: the walk's business
        Mapping(a=None, b=math.inf),
        OrderedDict(a=None, b=[math.nan]),
        [None] + [1.5] * 1000 + [math.inf],  # a level of floats only
    ],
)
def test_value_json__nan_or_infinity_anywhere__raises(value):
    with pytest.raises(InvalidValueError):
        value_json(value)
    with pytest.raises(InvalidValueError):
        canonical_json(value)


def test_value_json__an_objects_own_dict_with_nan__raises():
    class Settings:
        pass

    settings = Settings()
    settings.threshold, settings.name = math.nan, "x"
    with pytest.raises(InvalidValueError):
        value_json([None, vars(settings)])


def test_search__finite_floats_whose_sum_overflows__accepted():
    value = {"a": [1e308, 1e308], "b": None}
    assert not canonical._levels_all_finite(value)  # the sum says maybe...
    assert value_json(value) == b'{"a":[1e308,1e308],"b":null}'  # ...and the walk says no


def test_search__plain_data__never_walks(monkeypatch, corpus_dir):
    def walk(value):
        raise AssertionError("plain data went to the walk")

    monkeypatch.setattr(canonical, "_walk_non_finite", walk)
    docs = [parse_json(path.read_bytes()) for path in sorted(corpus_dir.glob("*.json"))]
    encoded = value_json(docs)
    assert b"null" in encoded  # so the search ran


def test_search__other_types__walked(monkeypatch):
    walked = []
    monkeypatch.setattr(canonical, "_walk_non_finite", lambda value: walked.append(value) or False)
    value_json(OrderedDict(a=None))
    assert walked == [OrderedDict(a=None)]


@pytest.mark.parametrize("size", [0, 1, 16 * 1024 - 1, 16 * 1024, 100_000])
def test_sha256_hex__either_implementation__same_digest(size):
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    assert sha256_hex(data) == hashlib.sha256(data).hexdigest()


def test_parse_json__small_input__does_not_load_orjson():
    code = (
        "import sys; from analemma_sdk.statebag.canonical import parse_json; "
        "assert parse_json(b'{\"a\": [1, null]}') == {'a': [1, None]}; "
        "print('orjson' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONPATH": str(SDK)}
    )
    assert done.stdout.strip() == "False"
