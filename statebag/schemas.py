"""The statebag API's request and response bodies. Types, ranges, sizes and counts are checked
here, before any service runs; a body that fails is a 400 with the field named. What depends
on who asks (which owner's prefix a key may name) is the services' to check.

Bounds (``STATEBAG_API_LIMITS``) keep every request's database transaction short: a request
at every limit holds the write lock for at most about 100 ms (bench/api_limits.py), so one
client cannot starve the others.
Values stored as given (a commit's entries and cohort, a job's state) must be JSON that both
database backends store and the manifest hash encodes: finite numbers, integers within 64
bits, strings without U+0000 or lone surrogates, nested at most ``API_MAX_JSON_DEPTH``. They
are stored as sent, objects' keys in their order (parsing keeps it: the body parser's dicts
and these schemas' ``dict`` fields keep insertion order). An inline frame in the entries must
decode to what it claims (its size and sha256), within ``STATEBAG_MAX_BLOB_BYTES`` in all."""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, Literal, get_args

from django.conf import settings
from ninja import Schema
from pydantic import AfterValidator, Field, StrictInt, ValidationInfo, field_validator

from analemma_sdk.statebag.codec import CODECS, RAW, ZSTD
from analemma_sdk.statebag.errors import InvalidKeyError, MalformedPointerError, StateBagError
from analemma_sdk.statebag.inline import decode_inline
from analemma_sdk.statebag.keys import MAX_KEY_LEN, object_key, pack_key, validate_id, validate_key
from analemma_sdk.statebag.manifests import ManifestDraft, PackWrite, PrepareRequest
from analemma_sdk.statebag.packs import FOOTER, HEADER, FrameRef
from analemma_sdk.statebag.pointers import BlobRef, InlineRef, ListRef, parse_pointer
from core.api import DEFAULT_MAX_JSON_DEPTH

from .conf import statebag_settings

# Offsets and sizes stay within what every backend stores exactly (JSON's safe integers).
MAX_SIZE = 2**53 - 1
# What canonical JSON encodes (the manifest hash); PostgreSQL's jsonb stores these too.
MIN_JSON_INT, MAX_JSON_INT = -(2**63), 2**64 - 1
# Floats from here on are written with an exponent, which jsonb does not keep (see _scalar_check).
MAX_STORED_FLOAT = 1e16
# ManifestEntry.field's column.
MAX_FIELD_NAME = 512
# The highest version a manifest row can hold.
MAX_VERSION = 2**31 - 1
# Read once (from analemma/settings/base.py): the bounds are part of the API description.
LIMITS: dict[str, int] = dict(settings.STATEBAG_API_LIMITS)
MAX_DEPTH = int(getattr(settings, "API_MAX_JSON_DEPTH", DEFAULT_MAX_JSON_DEPTH))
_SURROGATE = re.compile("[\ud800-\udfff]")
_NONCE = re.compile(r"[0-9a-f]{16}")


# Values stored as given --------------------------------------------------------------------
def text_check(text: str) -> str:
    if "\x00" in text:
        raise ValueError("strings may not contain U+0000")
    if not text.isascii() and _SURROGATE.search(text):
        raise ValueError("strings must be valid Unicode (a lone surrogate is not)")
    return text


def _scalar_check(item: Any) -> None:
    kind = type(item)
    if kind is str:
        text_check(item)
    elif kind is float:
        if not math.isfinite(item):
            raise ValueError("numbers must be finite")
        # PostgreSQL's jsonb keeps a number's value, not its spelling: 1e16 comes back as the
        # integer 10000000000000000 and -0.0 as 0.0, and the manifest hash would no longer match.
        if abs(item) >= MAX_STORED_FLOAT:
            raise ValueError(f"numbers of {MAX_STORED_FLOAT:.0e} or more must be integers (within 64 bits)")
        if item == 0 and math.copysign(1.0, item) < 0:
            raise ValueError("-0.0 is not stored as given: send 0 or 0.0")
    elif kind is int:
        if not MIN_JSON_INT <= item <= MAX_JSON_INT:
            raise ValueError(f"integers must be within {MIN_JSON_INT}..{MAX_JSON_INT}")
    elif not (item is None or kind is bool):
        raise ValueError(f"{kind.__name__} is not a JSON value")


def json_check(value: Any) -> None:
    """Refuse what a backend cannot store or the manifest hash cannot encode; iterative, so
    no nesting can exhaust the stack."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind is not dict and kind is not list:
            _scalar_check(item)
            continue
        if depth >= MAX_DEPTH:
            raise ValueError(f"values nest at most {MAX_DEPTH} levels")
        if kind is dict:
            for key in item:
                if type(key) is not str:
                    raise ValueError("object keys must be strings")
                text_check(key)
            item = item.values()
        stack.extend((child, depth + 1) for child in item)


def _fields_check(fields: dict[str, Any]) -> dict[str, Any]:
    if len(fields) > LIMITS["ENTRIES"]:
        raise ValueError(f"at most {LIMITS['ENTRIES']} fields, got {len(fields)}")
    for name in fields:
        if len(name) > MAX_FIELD_NAME:
            raise ValueError(f"field names are at most {MAX_FIELD_NAME} characters")
    json_check(fields)
    return fields


def _entries_check(entries: dict[str, Any]) -> dict[str, Any]:
    """Every pointer well-formed (the SDK's own parser), not too many of them, and every inline
    frame what it claims to be."""
    _fields_check(entries)
    pointers = 0
    inline_bytes, max_bytes = 0, statebag_settings().max_blob_bytes
    for name, stored in entries.items():
        try:
            pointer = parse_pointer(stored)
        except MalformedPointerError as exc:
            raise ValueError(f"field {name[:64]!r}: {exc}") from None
        if isinstance(pointer, BlobRef):
            pointers += 1
        elif isinstance(pointer, ListRef):
            pointers += len(pointer.chunks)
        elif isinstance(pointer, InlineRef):
            # Checked before it is decoded: a small body must not make the service inflate more.
            inline_bytes += pointer.raw_size
            if inline_bytes > max_bytes:
                raise ValueError(
                    f"field {name[:64]!r}: inline frames decode to over {max_bytes} bytes in all"
                )
            try:
                decode_inline(pointer, max_bytes)
            except StateBagError as exc:
                raise ValueError(f"field {name[:64]!r}: {exc}") from None
    if pointers > LIMITS["POINTERS"]:
        raise ValueError(f"at most {LIMITS['POINTERS']} blob pointers, got {pointers}")
    # What the commit writes under its lock grows with this, not with the body (a job's state
    # may be larger: one row).
    size = len(json.dumps(entries, ensure_ascii=False, separators=(",", ":")).encode())
    if size > LIMITS["ENTRY_BYTES"]:
        raise ValueError(f"the entries are {size} bytes of JSON, over {LIMITS['ENTRY_BYTES']}")
    return entries


def _cohort_check(cohort: dict[str, Any]) -> dict[str, Any]:
    if len(cohort) > LIMITS["COHORT"]:
        raise ValueError(f"at most {LIMITS['COHORT']} values, got {len(cohort)}")
    json_check(cohort)
    return cohort


def _key_check(key: str) -> str:
    try:
        return validate_key(key)
    except InvalidKeyError as exc:
        raise ValueError(str(exc)) from None


def _version_check(version: str) -> str:
    # A version beyond what a row can hold names no manifest: refused like any other malformed one.
    if version != "head" and int(version) > MAX_VERSION:
        raise ValueError(f"versions are at most {MAX_VERSION}")
    return version


Digest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="sha256, lowercase hex")]
Id = Annotated[
    str,
    Field(max_length=128, description="1-128 of A-Z a-z 0-9 . _ - starting with a letter or digit"),
    AfterValidator(lambda value: validate_id("id", value)),
]
Key = Annotated[str, Field(max_length=MAX_KEY_LEN), AfterValidator(_key_check)]
Size = Annotated[StrictInt, Field(ge=0, le=MAX_SIZE)]
Codec = Literal["raw", "gzip", "zstd"]
if set(get_args(Codec)) != CODECS:  # the SDK's codecs are the ones a frame may name
    raise RuntimeError(f"statebag.schemas.Codec is out of date with the SDK's {sorted(CODECS)}")
# A path parameter: "head", or a version number in ASCII digits ("²".isdigit() is true too).
Version = Annotated[
    str,
    Field(pattern=r"^(head|[0-9]{1,10})$", description="A version number, or head."),
    AfterValidator(_version_check),
]
Fields = Annotated[dict[str, Any], AfterValidator(_fields_check)]
Entries = Annotated[dict[str, Any], AfterValidator(_entries_check)]
Cohort = Annotated[dict[str, Any], AfterValidator(_cohort_check)]


# Prepare ----------------------------------------------------------------------------------
class FrameIn(Schema):
    digest: Digest
    offset: Size
    length: Size
    codec: Codec
    raw_size: Size
    dict_id: Annotated[str, Field(pattern=r"^[0-9a-f]{1,64}$")] | None = None

    def as_frame(self) -> FrameRef:
        return FrameRef(self.digest, self.offset, self.length, self.codec, self.raw_size, self.dict_id)


class PackIn(Schema):
    key: Key = Field(description="The SDK's key for the digest, under o/<owner_id>/.")
    digest: Digest = Field(description="sha256 of the object's bytes.")
    size: Annotated[StrictInt, Field(gt=0, le=MAX_SIZE)]
    kind: Literal["pack", "object"] = "pack"
    frames: list[FrameIn] = Field(min_length=1, max_length=LIMITS["FRAMES"])

    def as_write(self) -> PackWrite:
        return PackWrite(
            self.key, self.digest, self.size, tuple(f.as_frame() for f in self.frames), self.kind
        )


def pack_check(owner_id: str, pack: PackIn) -> None:
    """One declared object, as the SDK lays it out: under the owner's prefix, at the key its
    digest gives (so no declaration can squat the key of other bytes), its frames inside it."""
    if not pack.key.startswith(f"o/{owner_id}/"):
        raise ValueError(f"object key {pack.key!r} is outside owner {owner_id}'s prefix")
    max_bytes = statebag_settings().max_blob_bytes
    if pack.size > max_bytes:
        raise ValueError(f"{pack.key} declares {pack.size} bytes, over the {max_bytes}-byte limit")
    if pack.kind == "pack":
        expected = pack_key(owner_id, pack.digest)
        if pack.key != expected:
            raise ValueError(f"a pack's key is derived from its digest: {expected}, not {pack.key}")
        _frames_check(pack, HEADER.size, pack.size - FOOTER.size, max_bytes)
        return
    frame = pack.frames[0]
    nonce = pack.key.rpartition(".")[2]
    if pack.key != object_key(owner_id, frame.digest, nonce) or not _NONCE.fullmatch(nonce):
        raise ValueError(
            f"an object's key is derived from its frame's digest: o/{owner_id}/f/{frame.digest[:2]}/"
            f"{frame.digest}.<16 hex digits>, not {pack.key}"
        )
    if len(pack.frames) != 1 or (frame.offset, frame.length) != (0, pack.size):
        raise ValueError(f"{pack.key}: a single object is exactly one frame")
    _frames_check(pack, 0, pack.size, max_bytes)


def _frames_check(pack: PackIn, start: int, end: int, max_bytes: int) -> None:
    """Frames lie between ``start`` and ``end`` without overlapping, each decodable as declared."""
    seen: set[str] = set()
    previous_end = start
    for frame in sorted(pack.frames, key=lambda f: f.offset):
        where = f"{pack.key} frame {frame.digest[:12]}"
        if frame.digest in seen:
            raise ValueError(f"{where} is declared twice")
        seen.add(frame.digest)
        if frame.offset < previous_end or frame.offset + frame.length > end:
            raise ValueError(f"{where} at {frame.offset}+{frame.length} overlaps another or lies outside")
        previous_end = frame.offset + frame.length
        if frame.raw_size > max_bytes:
            raise ValueError(f"{where} decodes to {frame.raw_size} bytes, over the {max_bytes}-byte limit")
        if frame.codec == RAW and frame.length != frame.raw_size:
            raise ValueError(f"{where} is raw: its length must be its raw size")
        if frame.dict_id is not None and frame.codec != ZSTD:
            raise ValueError(f"{where}: only zstd frames name a dictionary")


class PrepareIn(Schema):
    owner_id: Id = Field(description="Must be the write key's owner.")
    workflow_id: Id
    execution_id: Id
    parents: list[Digest] = Field(default=[], max_length=LIMITS["PARENTS"])
    packs: list[PackIn] = Field(default=[], max_length=LIMITS["PACKS"])
    reused: list[tuple[Key, Digest]] = Field(
        default=[],
        max_length=LIMITS["REUSED"],
        description="[object key, digest] of stored blobs the new version keeps.",
    )
    idempotency_key: Annotated[str, Field(max_length=128), AfterValidator(text_check)] | None = None
    upload: Literal["direct", "presigned"] = "direct"

    @field_validator("parents")
    @classmethod
    def _distinct_parents(cls, parents: list[str]) -> list[str]:
        if len(set(parents)) != len(parents):
            raise ValueError("a parent is named twice")
        return parents

    @field_validator("packs")
    @classmethod
    def _packs_laid_out(cls, packs: list[PackIn], info: ValidationInfo) -> list[PackIn]:
        frames = sum(len(pack.frames) for pack in packs)
        if frames > LIMITS["FRAMES"]:
            raise ValueError(f"at most {LIMITS['FRAMES']} frames in all, got {frames}")
        if len({pack.key for pack in packs}) != len(packs):
            raise ValueError("an object key is declared twice")
        owner_id = info.data.get("owner_id")
        if owner_id is not None:  # else its own error is reported
            for index, pack in enumerate(packs):
                try:
                    pack_check(owner_id, pack)
                except ValueError as exc:
                    raise ValueError(f"{index}: {exc}") from None
        return packs

    @field_validator("reused")
    @classmethod
    def _reused_owned(cls, reused: list[tuple[str, str]], info: ValidationInfo) -> list[tuple[str, str]]:
        owner_id = info.data.get("owner_id")
        for key, _ in reused:
            if owner_id is not None and not key.startswith(f"o/{owner_id}/"):
                raise ValueError(f"object key {key!r} is outside owner {owner_id}'s prefix")
        return list(dict.fromkeys(reused))  # a blob named twice is pinned once

    def as_request(self) -> PrepareRequest:
        return PrepareRequest(
            owner_id=self.owner_id,
            workflow_id=self.workflow_id,
            execution_id=self.execution_id,
            parents=tuple(self.parents),
            packs=tuple(p.as_write() for p in self.packs),
            reused=tuple(self.reused),
            idempotency_key=self.idempotency_key,
        )


def _parents_distinct(parents: list[str]) -> list[str]:
    if len(set(parents)) != len(parents):
        raise ValueError("a parent is named twice")
    return parents


Parents = Annotated[
    list[Digest],
    Field(
        max_length=LIMITS["PARENTS"],
        description="Parent manifests' hashes: the head, or several after a fan-in.",
    ),
    AfterValidator(_parents_distinct),
]
IdempotencyKey = Annotated[str, Field(max_length=128), AfterValidator(text_check)]


class RecordIn(Schema):
    """A version that uploads nothing, recorded in one call."""

    owner_id: Id = Field(description="Must be the write key's owner.")
    workflow_id: Id
    execution_id: Id
    parents: Parents = []
    entries: Entries = Field(
        description="Field → stored form (an inline value or a pointer); every blob pointer must "
        "name a frame of a live pack of the owner."
    )
    cohort: Cohort = Field(default={}, description="The flag values the version was written under.")
    idempotency_key: IdempotencyKey | None = Field(
        None, description="A retry with the same key answers the version the first call recorded."
    )

    def as_draft(self) -> ManifestDraft:
        return ManifestDraft(
            owner_id=self.owner_id,
            workflow_id=self.workflow_id,
            execution_id=self.execution_id,
            parents=tuple(self.parents),
            entries=self.entries,
            packs=(),
            cohort=self.cohort,
            idempotency_key=self.idempotency_key,
        )


class CommitIn(Schema):
    entries: Entries = Field(description="Field → stored form (an inline value or a pointer).")
    cohort: Cohort = Field(default={}, description="The flag values the version was written under.")


class ManifestRecordOut(Schema):
    hash: str
    version: int
    entries: dict[str, Any] | None = Field(description="Set when an earlier commit is replayed.")


class UploadTarget(Schema):
    method: str
    url: str
    headers: dict[str, str]


class PreparedOut(Schema):
    txn_id: str | None
    expires_at: float
    committed: ManifestRecordOut | None = Field(
        None, description="Present when this idempotency key committed."
    )
    uploads: dict[str, UploadTarget] | None = Field(None, description="Present with upload=presigned.")


class AbortedOut(Schema):
    aborted: str


class ManifestOut(Schema):
    """One manifest, checked, with everything its hash covers: hash = sha256 of the canonical
    JSON (sorted keys, compact, UTF-8) of {"format", "owner": owner_id, "workflow": workflow_id,
    "execution": execution_id, "version", "parents", "entries", "cohort"}
    (``analemma_sdk.statebag.manifest_hash``)."""

    hash: str
    version: int
    execution_id: str
    entries: dict[str, Any]
    cohort: dict[str, Any]
    owner_id: str
    workflow_id: str
    parents: list[str] = Field(description="Parent manifests' hashes, in order (several after a merge).")
    format: int = Field(description="Manifest format the hash was computed with.")


class StoredOut(Schema):
    stored: str


class JobIn(Schema):
    owner_id: Id
    workflow_id: Id
    execution_id: Id
    state: Fields
    parent: (
        Annotated[
            str, Field(pattern=r"^([0-9a-f]{64})?$", description="Manifest hash the new version follows.")
        ]
        | None
    ) = ""


class JobManifestOut(Schema):
    hash: str
    version: int


class JobOut(Schema):
    id: str
    url: str
    status: Literal["queued", "running", "succeeded", "failed"]
    owner_id: str
    workflow_id: str
    execution_id: str
    attempts: int
    manifest: JobManifestOut | None
    payload: dict[str, Any] | None
    error: str | None
