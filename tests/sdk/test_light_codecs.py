"""The SDK's own base85 and small-JSON parser stand in for ``base64`` and ``json.loads`` on a
cold read (those modules import ``re``, which costs more than the rest of the read): they must
give the same bytes, values and errors, on generated input."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analemma_sdk.statebag import base85, canonical

ALPHABET = base85.ALPHABET.decode()


def outcome(function, data):
    try:
        return "ok", repr(function(data))
    except RecursionError:
        return ("recursion",)
    except ValueError as exc:
        return type(exc).__name__, str(exc)


@settings(max_examples=400)
@given(st.binary(max_size=300))
def test_base85__encode_and_decode__as_base64_does(data):
    encoded = base85.encode(data)
    assert encoded == base64.b85encode(data)
    assert base85.decode(encoded) == data


@settings(max_examples=600)
@given(st.text(alphabet=ALPHABET + " \x00\"'.,:~é", max_size=30))
def test_base85__decode_of_any_text__same_value_or_same_error(text):
    data = text.encode()
    assert outcome(base85.decode, data) == outcome(base64.b85decode, data)


@pytest.mark.parametrize(
    "data",
    [b"|NsC0", b"~~~~~", b"|NsC0~~~~~", b"00000|NsC0 ", b"0", b"00", b"a b", b""],
)
def test_base85__overflow_and_bad_characters__reported_in_order(data):
    assert outcome(base85.decode, data) == outcome(base64.b85decode, data)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=25,
)


@settings(max_examples=500)
@given(JSON_VALUES, st.sampled_from(["", " ", "\n\t", "x", "\x00", ","]), st.binary(max_size=3))
def test_parse_small__same_value_or_same_error_as_json_loads(value, suffix, noise):
    encoded = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass") + suffix.encode()
    for data in (encoded, encoded + noise, noise + encoded):
        assert outcome(canonical._parse_small, data) == outcome(json.loads, data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"   ",
        b"NaN",
        b"[Infinity,-Infinity]",
        b'"\xed\xa0\x80"',  # an encoded surrogate: json.loads reads bytes with surrogatepass
        b"\xef\xbb\xbf{}",
        b"1\x00",
        b'"\x01"',
        b"1e400",
        b'{"a":1,"a":2}',
        b'{"b":1,"a":2}',
        b"9" * 5000,  # over the interpreter's digit limit
        b"[" * 100_000,
    ],
)
def test_parse_small__edge_cases__as_json_loads(data):
    assert outcome(canonical._parse_small, data) == outcome(json.loads, data)
