"""Canonical JSON and digests: the bytes a value is addressed by.

Canonical form: keys sorted, no whitespace, UTF-8, finite numbers only. orjson produces the
same bytes about seven times faster than the standard library, so it is used when installed
(`analemma-sdk[fast]`) and the standard library otherwise. Both paths reject NaN/Infinity.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, TypeGuard

from .errors import InvalidValueError

_DIGEST_HEX_LEN = 64
_INFINITIES = (math.inf, -math.inf)
_orjson: Any = None
_orjson_checked = False


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


def _has_non_finite(value: Any) -> bool:  # noqa: C901 - one flat loop, kept inline for speed
    """True when ``value`` holds a NaN or an infinity anywhere.

    orjson writes those as null, which would silently change data, so they are looked for
    first. Containers are iterated whole and leaves dispatched on their exact type: about six
    times faster than a push/pop per node, which matters because this walk runs at
    dehydration speed.
    """
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
                if not math.isfinite(item):
                    return True
            elif isinstance(item, dict):
                push(item.values())
            elif isinstance(item, list | tuple):
                push(item)
    return False


def _stdlib_dumps(value: Any) -> bytes:
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidValueError(f"value is not canonical JSON: {exc}") from exc


def canonical_json(value: Any) -> bytes:
    """Return the canonical JSON bytes of ``value`` or raise InvalidValueError."""
    orjson = _load_orjson()
    if orjson is not None:
        try:
            encoded: bytes = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except (TypeError, orjson.JSONEncodeError):
            # Integers past 64 bits and other corner cases: the stdlib decides.
            return _stdlib_dumps(value)
        if b"null" in encoded and _has_non_finite(value):
            raise InvalidValueError("value is not canonical JSON: NaN or Infinity")
        return encoded
    return _stdlib_dumps(value)


def parse_json(data: bytes) -> Any:
    orjson = _load_orjson()
    if orjson is not None:
        return orjson.loads(data)
    return json.loads(data)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_digest(text: object) -> TypeGuard[str]:
    return (
        isinstance(text, str) and len(text) == _DIGEST_HEX_LEN and all(c in "0123456789abcdef" for c in text)
    )
