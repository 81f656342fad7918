"""Object keys. Every key the engine writes is derived from digests and checked ids, so
nothing a caller passes can climb out of a store's root or bucket prefix."""

from __future__ import annotations

import re

from .errors import InvalidKeyError

_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_KEY_RE = re.compile(rf"{_SEGMENT}(/{_SEGMENT}){{0,15}}")
_ID_RE = re.compile(_SEGMENT)
MAX_KEY_LEN = 512


def validate_key(key: object) -> str:
    if not isinstance(key, str) or len(key) > MAX_KEY_LEN or not _KEY_RE.fullmatch(key):
        raise InvalidKeyError(f"invalid object key {key!r}")
    return key


def validate_id(kind: str, value: object) -> str:
    """Owner, workflow and execution ids become key segments: keep them to a safe alphabet."""
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise InvalidKeyError(
            f"invalid {kind} {value!r}: use 1-128 characters of A-Z a-z 0-9 . _ - "
            "starting with a letter or digit"
        )
    return value


def owner_packs_prefix(owner_id: str) -> str:
    """Where every pack of one owner lives. Not validated: it is also matched against owner ids
    read from payloads, which must not make hydrate() fail."""
    return f"o/{owner_id}/p/"


def pack_key(owner_id: str, pack_digest: str) -> str:
    return f"{owner_packs_prefix(validate_id('owner id', owner_id))}{pack_digest[:2]}/{pack_digest}.asbp"


def object_key(owner_id: str, digest: str, nonce: str) -> str:
    """A single-blob object of the legacy path: one object per write, no dedup."""
    return f"o/{validate_id('owner id', owner_id)}/f/{digest[:2]}/{digest}.{nonce}"


def dictionary_key(dict_id: str) -> str:
    return validate_key(f"dicts/{dict_id}.zdict")
