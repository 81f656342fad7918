"""Object keys. Every key the engine writes is derived from digests and checked ids, so
nothing a caller passes can climb out of a store's root or bucket prefix."""

from __future__ import annotations

from .canonical import sha256_hex
from .errors import InvalidKeyError

# A key is 1-16 segments joined by "/"; a segment is 1-128 characters of A-Z a-z 0-9 . _ -
# starting with a letter or digit. Checked with str methods rather than a regular expression:
# importing `re` (and the `enum` it pulls in) costs more than the rest of a cold read.
MAX_SEGMENT_LEN = 128
MAX_SEGMENTS = 16
MAX_KEY_LEN = 512
_HEX = frozenset("0123456789abcdef")


def is_segment(text: str) -> bool:
    return (
        0 < len(text) <= MAX_SEGMENT_LEN
        and text.isascii()
        and text[0].isalnum()
        # ASCII letters and digits once the three allowed punctuation marks are gone.
        and (text.isalnum() or text.replace(".", "").replace("_", "").replace("-", "").isalnum())
    )


def _is_key(text: str) -> bool:
    segments = text.split("/")
    return len(segments) <= MAX_SEGMENTS and all(is_segment(segment) for segment in segments)


def validate_key(key: object) -> str:
    if not isinstance(key, str) or len(key) > MAX_KEY_LEN or not _is_key(key):
        raise InvalidKeyError(f"invalid object key {key!r}")
    return key


def validate_id(kind: str, value: object) -> str:
    """Owner, workflow and execution ids become key segments: keep them to a safe alphabet."""
    if not isinstance(value, str) or not is_segment(value):
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


def owner_envelopes_prefix(owner_id: str) -> str:
    """Where every envelope segment of one owner lives."""
    return f"o/{owner_id}/e/"


MAX_ENVELOPE_VERSION = 9_999_999_999  # ten digits in a segment's key


def _is_digits(text: str, length: int) -> bool:
    return len(text) == length and text.isascii() and text.isdigit()


def _envelope_versions(name: str) -> tuple[int, int] | None:
    """(first, last) of a segment's file name ``<10 digits>-<10 digits>.env``."""
    if len(name) != 25 or name[10] != "-" or not name.endswith(".env"):
        return None
    first, last = name[:10], name[11:21]
    if not (_is_digits(first, 10) and _is_digits(last, 10)):
        return None
    return int(first), int(last)


def execution_envelopes_prefix(owner_id: str, execution_id: str) -> str:
    """Where the envelope segments of one execution live: its id enters the key only hashed
    (``sha256(execution id)[:32]``), so every execution's prefix has the same shape."""
    validate_id("execution id", execution_id)
    tag = sha256_hex(execution_id.encode("utf-8"))[:32]
    return f"{owner_envelopes_prefix(validate_id('owner id', owner_id))}{tag}/"


def envelope_key(owner_id: str, execution_id: str, first: int, last: int) -> str:
    """The segment holding versions ``first`` to ``last`` of an execution's manifests."""
    if not (
        isinstance(first, int)
        and isinstance(last, int)
        and not isinstance(first, bool)
        and not isinstance(last, bool)
        and 1 <= first <= last <= MAX_ENVELOPE_VERSION
    ):
        raise InvalidKeyError(f"invalid envelope version range {first!r}-{last!r}")
    return validate_key(f"{execution_envelopes_prefix(owner_id, execution_id)}{first:010d}-{last:010d}.env")


def parse_envelope_key(key: str) -> tuple[str, str, int, int] | None:
    """(owner id, execution tag, first version, last version) of a segment's key; None for any
    other key."""
    parts = key.split("/")
    if len(parts) != 5 or parts[0] != "o" or parts[2] != "e" or not is_segment(parts[1]):
        return None
    versions = _envelope_versions(parts[4])
    if versions is None or len(parts[3]) != 32 or not _HEX.issuperset(parts[3]):
        return None
    first, last = versions
    if not 1 <= first <= last:
        return None
    return parts[1], parts[3], first, last


def is_dictionary_key(key: str) -> bool:
    parts = key.split("/")
    return len(parts) == 4 and parts[0] == "o" and parts[2] == "d" and parts[3].endswith(".zdict")


def key_owner(key: str) -> str | None:
    """The owner whose prefix ``key`` is under (``o/<owner>/...``); None for any other key."""
    parts = key.split("/", 2)
    if len(parts) == 3 and parts[0] == "o" and is_segment(parts[1]) and parts[2]:
        return parts[1]
    return None
