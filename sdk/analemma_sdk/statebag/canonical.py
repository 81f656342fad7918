"""Value JSON, canonical JSON and digests.

Value form (``value_json``): what a stored value is and what it is addressed by. No
whitespace, UTF-8, finite numbers only, and every object's keys in the order the value has
them: agents replay stored messages into prompts, and prompt caches key on exact bytes, so a
value comes back byte for byte as it went in. The same value with the same key order always
has the same digest. Payloads written before this form (metadata ``v`` 1) addressed values
by their canonical form, and read back in that order.

Canonical form (``canonical_json``): the same with keys sorted, for what must not depend on
key order (manifest hashes, pack indexes, request bodies). orjson produces the
same bytes about seven times faster than the standard library, so it is used when installed
(`analemma-sdk[fast]`) and the standard library otherwise. Both paths reject NaN/Infinity.

Nothing heavy is imported here before it is needed: orjson, json and hashlib load on first use,
so a Lambda that only reads a small payload never loads json's regular expressions or OpenSSL.
"""

from __future__ import annotations

import sys

from .errors import InvalidValueError

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Protocol, TypeGuard

    class _Hash(Protocol):
        def hexdigest(self) -> str: ...


_DIGEST_HEX_LEN = 64
_HEX_DIGITS = "0123456789abcdef"
_INFINITIES = (float("inf"), float("-inf"))
_orjson: Any = None
_orjson_checked = False
_json: Any = None


def _load_orjson() -> Any:
    global _orjson, _orjson_checked
    if not _orjson_checked:
        _orjson_checked = True
        try:
            import orjson  # optional accelerator, imported on first use

            _orjson = orjson
        except ImportError:
            _orjson = None
    return _orjson


def _load_json() -> Any:
    global _json
    if _json is None:
        import json  # the standard library's, only without orjson or for what it refuses

        _json = json
    return _json


# Finding NaN and infinities ----------------------------------------------------------------
# orjson writes NaN and infinities as null, which would silently change data, so a value whose
# encoding holds a null is searched for them. The search runs at dehydration speed, on every
# large value of a conversation (tool calls carry nulls), so it first tries a level-by-level
# scan done mostly in C, on plain JSON data only (exact dict, list, tuple, str, int, float,
# bool, None). It answers "no NaN or infinity" only when that is certain; any other value, or
# any doubt, goes to the walk, which decides.

_PLAIN_TYPES = frozenset({str, int, float, bool, type(None), dict, list, tuple})
_CONTAINER_TYPES = frozenset({dict, list, tuple})
_FLOAT_ONLY = frozenset({float})
_MAX_LEVELS = 256  # orjson refuses deeper values; deeper than this is the walk's business
# gc.get_referents lists every value of a dict and every item of a list or tuple on CPython
# 3.11 and 3.12. From 3.13 a dict that is an object's __dict__ may list none (the object lists
# them), and other interpreters may list other things: there the walk does it all.
_REFERENTS_ARE_ITEMS = sys.implementation.name == "cpython" and sys.version_info < (3, 13)


def _has_non_finite(value: Any) -> bool:
    """True when ``value`` holds a NaN or an infinity anywhere (in dict values, list and tuple
    items, subclasses included)."""
    if _REFERENTS_ARE_ITEMS and _levels_all_finite(value):
        return False
    return _walk_non_finite(value)


def _levels_all_finite(value: Any) -> bool:
    """True when ``value`` is plain data all the way down and none of its floats is NaN or
    infinite; False when that is not so or cannot be shown this way.

    Level by level, breadth first, without a Python step per item: ``gc.get_referents`` lists
    the items of every container of a level in one C call (a dict's values, a list's or a
    tuple's items; atoms are not containers and list nothing), a set of the items' types says
    whether a level holds floats or anything but plain data, and the sum of a level's floats is
    finite only if each of them is (a sum that overflows sends the value to the walk, which then
    finds nothing). A level holding anything but plain data stops the search before its
    referents are listed, so the search never leaves the value."""
    # Loaded here, not with the module: a read never searches.
    from gc import get_referents as referents
    from itertools import compress, repeat
    from math import isfinite
    from operator import is_

    items = [value]
    for _ in range(_MAX_LEVELS):
        types = list(map(type, items))
        kinds = set(types)
        if not kinds <= _PLAIN_TYPES:
            return False
        if float in kinds:
            floats = items if kinds == _FLOAT_ONLY else compress(items, map(is_, types, repeat(float)))
            if not isfinite(sum(floats, 0.0)):
                return False
        if kinds.isdisjoint(_CONTAINER_TYPES):
            return True
        items = referents(*items)
    return False


def _walk_non_finite(value: Any) -> bool:  # noqa: C901 - one flat loop, kept inline for speed
    """The exact search, for any value orjson accepts. Containers are iterated whole and leaves
    dispatched on their exact type: about six times faster than a push/pop per node."""
    from math import isfinite

    stack: list[Any] = [(value,)]
    pop, push = stack.pop, stack.append
    while stack:
        for item in pop():
            kind = type(item)
            if kind is str or kind is int or item is None or kind is bool:
                continue
            if kind is dict:
                push(item.values())
            elif kind is list:
                push(item)
            elif kind is float:
                if item != item or item in _INFINITIES:
                    return True
            elif isinstance(item, float):
                if not isfinite(item):
                    return True
            elif isinstance(item, dict):
                push(item.values())
            elif isinstance(item, list | tuple):
                push(item)
            else:
                push(_written_parts(item))
    return False


def _written_parts(item: Any) -> tuple[Any, ...] | list[Any]:
    """What orjson writes of an object that is not plain data: an enum member's value, a
    dataclass instance's attributes whose names do not start with ``_``; nothing of the others
    it accepts (datetimes, UUIDs), which hold no float. Without this, a NaN in one of them
    would be written as null."""
    kind = type(item)
    if hasattr(kind, "__dataclass_fields__"):
        attributes = getattr(item, "__dict__", None)
        if attributes is not None:
            return [value for name, value in attributes.items() if not name.startswith("_")]
        names = [name for name in kind.__dataclass_fields__ if not name.startswith("_")]
        return [getattr(item, name) for name in names if hasattr(item, name)]  # slots
    from enum import Enum  # the walk only, for values that are not plain data

    if isinstance(item, Enum):
        return (item.value,)
    return ()


# Encoding and decoding -----------------------------------------------------------------------
def _stdlib_dumps(value: Any, sort_keys: bool = True) -> bytes:
    try:
        text: str = _load_json().dumps(
            value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        return text.encode("utf-8")  # a lone surrogate fails here, as a ValueError
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidValueError(f"value is not canonical JSON: {exc}") from exc


def canonical_json(value: Any) -> bytes:
    """Return the canonical JSON bytes of ``value`` (keys sorted) or raise InvalidValueError."""
    return _dumps(value, sort_keys=True)


def value_json(value: Any) -> bytes:
    """Return the value JSON bytes of ``value`` (key order kept) or raise InvalidValueError."""
    return _dumps(value, sort_keys=False)


def _dumps(value: Any, *, sort_keys: bool) -> bytes:
    orjson = _load_orjson()
    if orjson is not None:
        try:
            encoded: bytes = orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else 0)
        except (TypeError, orjson.JSONEncodeError):
            # Integers past 64 bits and other corner cases: the stdlib decides.
            return _stdlib_dumps(value, sort_keys)
        if b"null" in encoded and _has_non_finite(value):
            raise InvalidValueError("value is not canonical JSON: NaN or Infinity")
        return encoded
    return _stdlib_dumps(value, sort_keys)


def item_value_jsons(items: list[Any], whole: bytes) -> list[bytes]:
    """The value JSON of each item of a list whose own value JSON is ``whole`` (from
    ``value_json``, which searched it for NaN and infinities, or read back from a checked
    blob): each item is encoded without a search of its own, and the items are taken only if
    they join to ``whole`` byte for byte, which shows that none of them holds what the whole
    does not. Otherwise (the standard library wrote ``whole``, say) each is encoded whole."""
    orjson = _load_orjson()
    if orjson is not None:
        try:
            parts = list(map(orjson.dumps, items))
        except (TypeError, orjson.JSONEncodeError):
            pass
        else:
            if len(whole) == sum(map(len, parts)) + max(len(parts), 1) + 1 and (
                b"[" + b",".join(parts) + b"]" == whole
            ):
                return parts
    return [value_json(item) for item in items]


# Below this size a value parses in microseconds either way, and importing orjson (which loads
# dataclasses, inspect, datetime, uuid and platform) would cost a cold start far more.
_SMALL_JSON = 64 * 1024


# The C scanner the standard library's decoder runs, built without importing json itself:
# json.decoder and json.scanner import `re` (and with it enum, functools, collections), several
# times what parsing a small payload costs. False when the interpreter has no such scanner.
_scanner: Any = None
_JSON_SPACE = " \t\n\r"


class _DecoderSettings:
    """What ``_json.make_scanner`` reads from a ``json.JSONDecoder``: its defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}.__getitem__


def _c_scanner() -> Any:
    global _scanner
    if _scanner is None:
        try:
            from _json import make_scanner
        except ImportError:  # another Python implementation
            _scanner = False
        else:
            settings: Any = _DecoderSettings()  # typeshed expects the scanner's own class
            _scanner = make_scanner(settings)
    return _scanner


def _parse_small(data: bytes) -> Any:
    """``json.loads(data)``: the same value, by the same C code, or the same error (anything
    the fast path does not accept whole goes to json.loads, which then reports it)."""
    scan = _c_scanner()
    if scan:
        try:
            text = data.decode("utf-8")
            value, end = scan(text, len(text) - len(text.lstrip(_JSON_SPACE)))
        except (ValueError, StopIteration):
            pass
        else:
            if not text[end:].strip(_JSON_SPACE):
                return value
    return _load_json().loads(data)


def parse_json(data: bytes) -> Any:
    if _orjson is None and len(data) < _SMALL_JSON:
        return _parse_small(data)  # orjson not loaded (yet, or at all): not for this
    orjson = _load_orjson()
    if orjson is not None:
        return orjson.loads(data)
    return _load_json().loads(data)


# Digests -------------------------------------------------------------------------------------
# The interpreter's own sha256 loads in a fraction of the time OpenSSL's does, which is what a
# cold start reading a small payload pays for; OpenSSL's hashes several times faster, which is
# what a large value pays for. Both compute the same digest.
_SMALL_INPUT = 16 * 1024
_sha256_small: Callable[[bytes], _Hash] | None = None
_sha256_large: Callable[[bytes], _Hash] | None = None


def sha256_hex(data: bytes) -> str:
    if len(data) < _SMALL_INPUT:
        return (_sha256_small or _load_sha256_small())(data).hexdigest()
    return (_sha256_large or _load_sha256_large())(data).hexdigest()


def _load_sha256_small() -> Callable[[bytes], _Hash]:
    global _sha256_small
    try:  # the module is _sha2 from Python 3.12 on
        _sha256_small = __import__("_sha2" if sys.version_info >= (3, 12) else "_sha256").sha256
    except (ImportError, AttributeError):  # builds without the interpreter's own hashes
        _sha256_small = _load_sha256_large()
    assert _sha256_small is not None
    return _sha256_small


def _load_sha256_large() -> Callable[[bytes], _Hash]:
    global _sha256_large
    import hashlib

    _sha256_large = hashlib.sha256
    return _sha256_large


def is_digest(text: object) -> TypeGuard[str]:
    return isinstance(text, str) and len(text) == _DIGEST_HEX_LEN and not text.strip(_HEX_DIGITS)
