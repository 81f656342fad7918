"""Envelope segments: an execution's committed versions, readable and checkable with only
access to the store.

The service writes one segment per execution per flush (the ``statebag.write_envelopes``
task), not one object per commit: most steps upload nothing at all (their state rides in the
payload as inline frames), and one PUT per commit would be most of an execution's requests.
A segment is stored at ``o/<owner>/e/<sha256(execution id)[:32]>/<first>-<last>.env``
(``keys.envelope_key``) as::

    b"ASBE" | u16 format (1) | u8 codec (0 raw, 1 gzip, 2 zstd) | u8 flags (0) | u64 body size
    | one compressed frame of the body

The body is value JSON (``canonical.value_json``)::

    {"v": 1, "owner": ..., "workflow": ..., "execution": ...,
     "versions": [manifest document, ...], "values": {digest: value JSON text, ...}}

A manifest document holds its hash and everything the hash covers (``hash``, ``version``,
``parents``, ``entries``, ``cohort``, ``owner_id``, ``workflow_id``, ``execution_id``,
``format``), as the manifest API serves it, except inline frames: such an entry is kept in its
hashed form (without ``b``, which the hash does not cover) and its decoded value once in
``values``. Values are kept as text, byte for byte, so a state comes back with its key order.
Consecutive versions share most of their content, so one zstd frame over the whole segment
stores each new message about once: a 25-step agent conversation takes about 8 KB (about
330 bytes a version).

Nothing is used before it is checked: ``read_envelope`` recomputes every version's hash,
links each version to the one before it, checks every kept value against its digest and the
run of versions against the key's range; ``read_history`` also links each segment to the one
before it. Failures are typed: CorruptEnvelopeError for bytes that do not decode,
EnvelopeIntegrityError (a ManifestIntegrityError) for contents that do not check.
"""

from __future__ import annotations

import copy
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from .._record import Record
from .canonical import is_digest, parse_json, sha256_hex, value_json
from .codec import GZIP, RAW, ZSTD, Compressor, decode
from .errors import (
    CorruptBlobError,
    CorruptEnvelopeError,
    DecompressionBombError,
    EnvelopeIntegrityError,
    InvalidKeyError,
    MalformedPointerError,
    ManifestIntegrityError,
)
from .inline import decode_inline, hashed_form
from .keys import execution_envelopes_prefix, parse_envelope_key, validate_id
from .manifests import MANIFEST_FORMAT, manifest_document_check
from .pointers import INLINE_KIND, POINTER_VERSION, TAG, InlineRef, Literal, parse_pointer
from .stores import BlobStore

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    from .bag import PointerLoader

__all__ = [
    "Envelope",
    "EnvelopeBuilder",
    "EnvelopeHistory",
    "EnvelopeRange",
    "check_envelope",
    "decode_envelope",
    "encode_body",
    "envelope_state",
    "envelope_versions",
    "read_envelope",
    "read_history",
]

MAGIC = b"ASBE"
FORMAT_VERSION = 1
BODY_VERSION = 1
ZSTD_LEVEL = 3  # fixed: a segment written again must come out byte for byte the same
_HEADER = struct.Struct(">4sHBBQ")
_CODEC_IDS = {RAW: 0, GZIP: 1, ZSTD: 2}
_CODEC_NAMES = {number: name for name, number in _CODEC_IDS.items()}
# Ceiling on a segment's decoded body, whatever its header declares. The service cuts segments
# at 16 MiB of body (one version may go past it).
DEFAULT_MAX_ENVELOPE_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_VALUE_BYTES = 64 * 1024 * 1024
_BODY_FIELDS = frozenset({"v", "owner", "workflow", "execution", "versions", "values"})
_DOCUMENT_FIELDS = (
    "hash",
    "version",
    "parents",
    "entries",
    "cohort",
    "owner_id",
    "workflow_id",
    "execution_id",
    "format",
)
_DOCUMENT_SET = frozenset(_DOCUMENT_FIELDS)
_HASHED_INLINE_FIELDS = frozenset({TAG, "v", "d", "s", "c"})


class EnvelopeRange(Record, frozen=True):
    """A segment as its key names it."""

    key: str
    first: int
    last: int


class Envelope(Record, frozen=True):
    """One decoded segment. ``versions`` are manifest documents, oldest first."""

    key: str
    owner_id: str
    workflow_id: str
    execution_id: str
    first: int
    last: int
    versions: tuple[dict[str, Any], ...]
    values: dict[str, str]
    codec: str
    size: int  # stored bytes

    def document(self, version: int) -> dict[str, Any]:
        if not self.first <= version <= self.last:
            raise KeyError(
                f"{self.key or 'the envelope'} holds versions {self.first}-{self.last}, not {version}"
            )
        return self.versions[version - self.first]

    @property
    def head(self) -> dict[str, Any]:
        return self.versions[-1]

    def body(self) -> dict[str, Any]:
        """The body as stored (``encode_body`` writes it back)."""
        return {
            "v": BODY_VERSION,
            "owner": self.owner_id,
            "workflow": self.workflow_id,
            "execution": self.execution_id,
            "versions": list(self.versions),
            "values": dict(self.values),
        }


def _is_inline(entry: Any) -> bool:
    return isinstance(entry, dict) and entry.get(TAG) == INLINE_KIND


# Writing ------------------------------------------------------------------------------------
class EnvelopeBuilder:
    """Collects the manifest documents of one execution's consecutive versions into a segment.
    ``size`` is the body's size so far (about), so a writer can cut a segment by size."""

    def __init__(self, *, max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES) -> None:
        self.max_value_bytes = max_value_bytes
        self.versions: list[dict[str, Any]] = []
        self.values: dict[str, str] = {}
        self.size = 0

    def add(self, document: Mapping[str, Any]) -> None:
        """Add the next version, a manifest document as the service serves it (inline frames
        with their bytes). The caller has checked it against its hash."""
        identity = (document["owner_id"], document["workflow_id"], document["execution_id"])
        if self.versions:
            last = self.versions[-1]
            if identity != (last["owner_id"], last["workflow_id"], last["execution_id"]):
                raise ValueError("a segment holds the versions of one execution")
            if document["version"] != last["version"] + 1:
                raise ValueError(f"version {document['version']} does not follow {last['version']}")
        entries: dict[str, Any] = {}
        for name, entry in document["entries"].items():
            if _is_inline(entry):
                ref = parse_pointer(entry)
                if not isinstance(ref, InlineRef):
                    raise MalformedPointerError(f"field {name!r} is not an inline frame")
                if ref.digest not in self.values:
                    text = decode_inline(ref, self.max_value_bytes).decode("utf-8")
                    self.values[ref.digest] = text
                    self.size += len(text) + 70
                entry = hashed_form(entry)
            entries[name] = entry
        kept = {
            "hash": document["hash"],
            "version": document["version"],
            "parents": list(document["parents"]),
            "entries": entries,
            "cohort": dict(document.get("cohort", {})),
            "owner_id": identity[0],
            "workflow_id": identity[1],
            "execution_id": identity[2],
            "format": document.get("format", MANIFEST_FORMAT),
        }
        self.size += len(value_json(kept)) + 1
        self.versions.append(kept)

    def body(self) -> dict[str, Any]:
        if not self.versions:
            raise ValueError("a segment holds at least one version")
        first = self.versions[0]
        return {
            "v": BODY_VERSION,
            "owner": first["owner_id"],
            "workflow": first["workflow_id"],
            "execution": first["execution_id"],
            "versions": self.versions,
            "values": self.values,
        }

    def encode(self, *, use_zstd: bool = True) -> bytes:
        """The segment's bytes: a pure function of the documents added (and of whether zstd is
        available), so writing the same range again writes the same object."""
        return encode_body(self.body(), use_zstd=use_zstd)


def encode_body(body: Mapping[str, Any], *, use_zstd: bool = True) -> bytes:
    """A segment's bytes for ``body``: zstd level 3, gzip when zstandard is not installed (or
    ``use_zstd`` is off), raw when compressing saves nothing; the header says which."""
    raw = value_json(body)
    encoded = Compressor(ZSTD if use_zstd else GZIP, ZSTD_LEVEL).encode(raw)
    return _HEADER.pack(MAGIC, FORMAT_VERSION, _CODEC_IDS[encoded.codec], 0, len(raw)) + encoded.data


# Reading ------------------------------------------------------------------------------------
def decode_envelope(data: bytes, *, key: str = "", max_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES) -> Envelope:
    """A segment's bytes as an Envelope, its shape checked but not its contents (see
    ``check_envelope``). ``key``, when given, must be an envelope key; the range it names is
    the one the contents must hold."""
    label = key or "envelope"
    if len(data) < _HEADER.size:
        raise CorruptEnvelopeError(f"{label} is truncated: {len(data)} bytes")
    magic, form, codec_id, flags, raw_size = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptEnvelopeError(f"{label} is not an envelope segment")
    if form != FORMAT_VERSION:
        raise CorruptEnvelopeError(f"{label} is in format {form}; this SDK reads format {FORMAT_VERSION}")
    codec = _CODEC_NAMES.get(codec_id)
    if codec is None or flags != 0:
        raise CorruptEnvelopeError(f"{label} names codec {codec_id} with flags {flags}, which are unknown")
    if raw_size > max_bytes:
        raise DecompressionBombError(f"{label} declares a body of {raw_size} bytes, over {max_bytes}")
    try:
        raw = decode(codec, data[_HEADER.size :], raw_size)
    except DecompressionBombError:
        raise
    except CorruptBlobError as exc:
        raise CorruptEnvelopeError(f"{label}: {exc}") from exc
    try:
        body = parse_json(raw)
    except ValueError as exc:
        raise CorruptEnvelopeError(f"{label} does not hold JSON: {exc}") from None
    return _envelope_from_body(body, key=key, codec=codec, size=len(data))


def _envelope_from_body(body: Any, *, key: str, codec: str, size: int) -> Envelope:
    label = key or "envelope"
    if not isinstance(body, dict) or set(body) != _BODY_FIELDS or body["v"] != BODY_VERSION:
        raise CorruptEnvelopeError(f"{label} does not hold a version {BODY_VERSION} envelope body")
    try:
        owner_id = validate_id("owner id", body["owner"])
        execution_id = validate_id("execution id", body["execution"])
    except InvalidKeyError as exc:
        raise CorruptEnvelopeError(f"{label}: {exc}") from None
    workflow_id, versions, values = body["workflow"], body["versions"], body["values"]
    if not isinstance(workflow_id, str) or not isinstance(values, dict) or not isinstance(versions, list):
        raise CorruptEnvelopeError(f"{label}: workflow, versions or values has the wrong type")
    _check_shape(label, versions, values)
    first, last = versions[0]["version"], versions[-1]["version"]
    if key:
        named = parse_envelope_key(key)
        if named is None:
            raise InvalidKeyError(f"{key!r} is not an envelope key")
        if (named[0], named[1]) != (owner_id, _execution_tag(execution_id)):
            raise EnvelopeIntegrityError(
                f"{key} holds versions of {owner_id}/{execution_id}, not of its key's"
            )
        first, last = named[2], named[3]
    return Envelope(
        key=key,
        owner_id=owner_id,
        workflow_id=workflow_id,
        execution_id=execution_id,
        first=first,
        last=last,
        versions=tuple(versions),
        values=values,
        codec=codec,
        size=size,
    )


def _check_shape(label: str, versions: list[Any], values: dict[str, Any]) -> None:
    if not versions:
        raise CorruptEnvelopeError(f"{label} holds no version")
    for document in versions:
        if not isinstance(document, dict) or set(document) != _DOCUMENT_SET:
            raise CorruptEnvelopeError(f"{label} holds a version that is not a manifest document")
        number = document["version"]
        if not isinstance(number, int) or isinstance(number, bool) or number < 1:
            raise CorruptEnvelopeError(f"{label} holds a version numbered {number!r}")
        if not isinstance(document["entries"], dict):
            raise CorruptEnvelopeError(f"{label}: the entries of version {number} are not an object")
    if not all(isinstance(text, str) for text in values.values()):
        raise CorruptEnvelopeError(f"{label} keeps a value that is not JSON text")


def _execution_tag(execution_id: str) -> str:
    return sha256_hex(execution_id.encode("utf-8"))[:32]


def read_envelope(
    store: BlobStore,
    key: str,
    *,
    previous: Envelope | None = None,
    max_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES,
) -> Envelope:
    """The segment at ``key``, checked (``check_envelope``): one GET. ``previous``: the segment
    just before it, to check the link between the two as well."""
    envelope = decode_envelope(store.get(key), key=key, max_bytes=max_bytes)
    check_envelope(envelope, previous=previous)
    return envelope


def check_envelope(envelope: Envelope, *, previous: Envelope | None = None) -> None:
    """Raise EnvelopeIntegrityError unless the segment holds exactly the versions its key
    names, each matching its hash, each linked to the one before it (the first to
    ``previous``'s last, when given), its inline entries backed by kept values that match their
    digests, and no value it does not use."""
    known: dict[str, int] = {}
    if previous is not None:
        if (previous.owner_id, previous.execution_id) != (envelope.owner_id, envelope.execution_id):
            raise EnvelopeIntegrityError(f"{previous.key} is a segment of another execution")
        if previous.last + 1 != envelope.first:
            raise EnvelopeIntegrityError(
                f"{envelope.key} starts at v{envelope.first}; the segment before it ends at v{previous.last}"
            )
        known = {document["hash"]: document["version"] for document in previous.versions}
    _check(envelope, known, complete=envelope.first == 1)


def _check(envelope: Envelope, known: dict[str, int], *, complete: bool) -> None:  # noqa: C901 - one pass over the documents, kept together
    """Check ``envelope``, given the hashes of the versions before it that are known (by
    hash); ``complete`` says every earlier version is among them. Adds its own to ``known``."""
    label = envelope.key or f"envelope of {envelope.execution_id}"
    numbers = [document["version"] for document in envelope.versions]
    if numbers != list(range(envelope.first, envelope.first + len(numbers))) or numbers[-1] != envelope.last:
        raise EnvelopeIntegrityError(
            f"{label} should hold versions {envelope.first}-{envelope.last}; it holds {_runs(numbers)}"
        )
    identity = (envelope.owner_id, envelope.workflow_id, envelope.execution_id)
    own = {document["hash"] for document in envelope.versions if isinstance(document["hash"], str)}
    by_version = {number: digest for digest, number in known.items()}
    referenced: set[str] = set()
    for document in envelope.versions:
        number = document["version"]
        if (document["owner_id"], document["workflow_id"], document["execution_id"]) != identity:
            raise EnvelopeIntegrityError(f"{label}: v{number} is a version of another execution")
        try:
            manifest_document_check(document, execution_id=envelope.execution_id, version=number)
        except ManifestIntegrityError as exc:
            raise EnvelopeIntegrityError(f"{label}: v{number}: {exc}") from None
        parents = document["parents"]
        if number == 1 and parents:
            raise EnvelopeIntegrityError(f"{label}: v1 names parents")
        before = by_version.get(number - 1)
        if before is not None and before not in parents:
            raise EnvelopeIntegrityError(
                f"{label}: v{number} does not follow v{number - 1} (its hash is not a parent)"
            )
        for parent in parents:
            if parent in known:
                continue
            if parent in own or complete:
                raise EnvelopeIntegrityError(f"{label}: v{number} names a parent that is no earlier version")
        known[document["hash"]] = number
        by_version[number] = document["hash"]
        for name, entry in document["entries"].items():
            if _is_inline(entry):
                referenced.add(_check_hashed_inline(label, number, name, entry, envelope.values))
    for digest, text in envelope.values.items():
        if digest not in referenced:
            raise EnvelopeIntegrityError(f"{label} keeps a value no version uses ({str(digest)[:12]})")
        if sha256_hex(_utf8(label, text)) != digest:
            raise EnvelopeIntegrityError(f"{label}: the value kept for {digest[:12]} fails its digest check")


def _check_hashed_inline(
    label: str, number: int, name: str, entry: dict[str, Any], values: dict[str, str]
) -> str:
    digest = entry.get("d")
    if set(entry) != _HASHED_INLINE_FIELDS or entry["v"] != POINTER_VERSION or not is_digest(digest):
        raise EnvelopeIntegrityError(
            f"{label}: field {name!r} of v{number} is not an inline entry in hashed form"
        )
    text = values.get(digest)
    if text is None:
        raise EnvelopeIntegrityError(f"{label}: the value of field {name!r} of v{number} is not kept")
    if len(_utf8(label, text)) != entry["s"]:
        raise EnvelopeIntegrityError(f"{label}: the value kept for {digest[:12]} is not {entry['s']} bytes")
    return digest


def _utf8(label: str, text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise EnvelopeIntegrityError(f"{label} keeps a value that is not UTF-8 text") from None


def _runs(numbers: Sequence[int]) -> str:
    if not numbers:
        return "none"
    if numbers == list(range(numbers[0], numbers[0] + len(numbers))):
        return f"{numbers[0]}-{numbers[-1]}"
    return ", ".join(str(number) for number in numbers)


# Listing and whole histories ----------------------------------------------------------------
def envelope_versions(store: BlobStore, owner_id: str, execution_id: str) -> list[EnvelopeRange]:
    """The segments stored for an execution, oldest first: one LIST of its prefix."""
    prefix = execution_envelopes_prefix(owner_id, execution_id)
    ranges = []
    for key in store.list(prefix):
        named = parse_envelope_key(key)
        if named is not None and key.startswith(prefix):
            ranges.append(EnvelopeRange(key, named[2], named[3]))
    return sorted(ranges, key=lambda found: (found.first, found.last))


class EnvelopeHistory(Record, frozen=True):
    """Every stored segment of an execution, each checked and linked to the one before it.
    ``gaps``: version ranges with no segment (released by retention and collected)."""

    owner_id: str
    execution_id: str
    segments: tuple[Envelope, ...]
    gaps: tuple[tuple[int, int], ...] = ()

    @property
    def versions(self) -> list[int]:
        return [number for segment in self.segments for number in range(segment.first, segment.last + 1)]

    def envelope(self, version: int) -> Envelope:
        for segment in self.segments:
            if segment.first <= version <= segment.last:
                return segment
        raise KeyError(f"no stored segment of {self.execution_id} holds v{version}")

    def document(self, version: int) -> dict[str, Any]:
        return self.envelope(version).document(version)

    def state(
        self, version: int, *, store: BlobStore | None = None, loader: PointerLoader | None = None
    ) -> dict[str, Any]:
        return envelope_state(self.envelope(version), version, store=store, loader=loader)


def read_history(
    store: BlobStore, owner_id: str, execution_id: str, *, max_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES
) -> EnvelopeHistory:
    """Every segment of an execution, checked: one LIST and one GET a segment (one for most
    executions). Segments must not overlap; where one is missing (collected), the link across
    the gap cannot be checked and the gap is reported."""
    known: dict[str, int] = {}
    segments: list[Envelope] = []
    gaps: list[tuple[int, int]] = []
    expected = 1
    for found in envelope_versions(store, owner_id, execution_id):
        if found.first < expected:
            raise EnvelopeIntegrityError(f"{found.key} overlaps the segment before it")
        if found.first > expected:
            gaps.append((expected, found.first - 1))
        envelope = decode_envelope(store.get(found.key), key=found.key, max_bytes=max_bytes)
        if segments and envelope.workflow_id != segments[-1].workflow_id:
            raise EnvelopeIntegrityError(f"{found.key} names another workflow than the segment before it")
        _check(envelope, known, complete=not gaps)
        segments.append(envelope)
        expected = found.last + 1
    return EnvelopeHistory(owner_id, execution_id, tuple(segments), tuple(gaps))


# States -------------------------------------------------------------------------------------
def envelope_state(
    envelope: Envelope,
    version: int,
    *,
    store: BlobStore | None = None,
    loader: PointerLoader | None = None,
) -> dict[str, Any]:
    """The state of ``version``, every field loaded: inline entries from the values the
    segment keeps, blob and list pointers through ``loader`` (a BlobReader or a
    StateHydrator), else a reader of ``store``; other entries as they are. The envelope must
    have been checked (``read_envelope`` and ``read_history`` do)."""
    document = envelope.document(version)
    state: dict[str, Any] = {}
    for name, entry in document["entries"].items():
        if _is_inline(entry):
            state[name] = parse_json(envelope.values[entry["d"]].encode("utf-8"))
            continue
        pointer = parse_pointer(entry)
        if pointer is None:
            state[name] = copy.deepcopy(entry)  # a copy: the envelope stays as read
        elif isinstance(pointer, Literal):
            state[name] = copy.deepcopy(pointer.value)
        else:
            loader = loader or _default_loader(store)
            state[name] = loader.load(pointer)
    return state


def _default_loader(store: BlobStore | None) -> PointerLoader:
    if store is None:
        raise ValueError("this version holds stored values: pass the store (or a loader) to read them")
    from .cache import BlobCache
    from .reader import BlobReader

    return BlobReader(store, BlobCache(32 * 1024 * 1024), max_blob_bytes=DEFAULT_MAX_VALUE_BYTES)
