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


def owner_dictionaries_prefix(owner_id: str) -> str:
    """Where every compression dictionary of one owner lives."""
    return f"o/{owner_id}/d/"


def dictionary_key(owner_id: str, dict_id: str) -> str:
    """One owner's compression dictionary. It sits under the owner's prefix, and a frame's
    dictionary is always looked up under the prefix of the object holding the frame, so no
    frame can make a reader load another owner's dictionary."""
    return validate_key(f"{owner_dictionaries_prefix(validate_id('owner id', owner_id))}{dict_id}.zdict")


def legacy_dictionary_key(dict_id: str) -> str:
    """Where earlier versions kept every dictionary, shared by all owners. Read only for frames
    written then; nothing is written here any more."""
    return validate_key(f"dicts/{dict_id}.zdict")


def is_dictionary_key(key: str) -> bool:
    parts = key.split("/")
    return len(parts) == 4 and parts[0] == "o" and parts[2] == "d" and parts[3].endswith(".zdict")


def key_owner(key: str) -> str | None:
    """The owner whose prefix ``key`` is under (``o/<owner>/...``); None for any other key."""
    parts = key.split("/", 2)
    if len(parts) == 3 and parts[0] == "o" and _ID_RE.fullmatch(parts[1]) and parts[2]:
        return parts[1]
    return None
