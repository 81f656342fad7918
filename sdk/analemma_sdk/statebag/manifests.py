"""Manifests as the engine sees them: a draft the hydrator hands to a manifest store, and the
hash chain both sides compute with the same function.

The store is abstract here: the service records drafts in its database, and a later HTTP
store lets a Lambda do the same through the service's API.
"""

from __future__ import annotations

from .._containers import Mapping
from .._record import Record, factory
from .canonical import canonical_json, sha256_hex
from .errors import ManifestIntegrityError, StateBagError
from .inline import hashed_form
from .packs import FrameRef

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any


MANIFEST_FORMAT = 1


class PackWrite(Record, frozen=True):
    """An object the dehydration wrote: a pack, or one legacy single-blob object."""

    key: str
    digest: str
    size: int
    frames: tuple[FrameRef, ...]
    kind: str = "pack"  # pack | object

    def to_json(self) -> dict[str, Any]:
        """The object as a prepare request declares it."""
        frames = [
            {
                "digest": f.digest,
                "offset": f.offset,
                "length": f.length,
                "codec": f.codec,
                "raw_size": f.raw_size,
                "dict_id": f.dict_id,
            }
            for f in self.frames
        ]
        return {
            "key": self.key,
            "digest": self.digest,
            "size": self.size,
            "kind": self.kind,
            "frames": frames,
        }


class ManifestDraft(Record, frozen=True):
    owner_id: str
    workflow_id: str
    execution_id: str
    parents: tuple[str, ...]
    entries: Mapping[str, Any]  # field -> stored form: inline value or pointer JSON
    packs: tuple[PackWrite, ...]
    cohort: Mapping[str, Any] = factory(default_factory=dict)
    idempotency_key: str | None = None


class ManifestRecord(Record, frozen=True):
    hash: str
    version: int
    # Set when the store replays an earlier commit (same idempotency key): the entries that
    # were committed then, which the caller must hand on instead of its own.
    entries: Mapping[str, Any] | None = None


def manifest_hash(
    *,
    owner_id: str,
    workflow_id: str,
    execution_id: str,
    version: int,
    parents: Sequence[str],
    entries: Mapping[str, Any],
    cohort: Mapping[str, Any],
) -> str:
    """Hash of a manifest over its entries and its parents' hashes: editing any version of
    the history changes the hash of every version after it. An inline frame counts by its
    digest, not its bytes (``inline.hashed_form``): a copy that keeps the decoded value
    checks the same."""
    return sha256_hex(
        canonical_json(
            {
                "format": MANIFEST_FORMAT,
                "owner": owner_id,
                "workflow": workflow_id,
                "execution": execution_id,
                "version": version,
                "parents": list(parents),
                "entries": {name: hashed_form(entry) for name, entry in entries.items()},
                "cohort": dict(cohort),
            }
        )
    )


# What a manifest document (the service's answer for one manifest) must hold for its hash to
# be recomputed; an answer from a service that predates them carries none of them.
DOCUMENT_HASH_FIELDS = ("owner_id", "workflow_id", "parents")


def manifest_document_check(
    document: Mapping[str, Any], *, execution_id: str | None = None, version: int | None = None
) -> bool:
    """Check a manifest document against its hash: True when it holds everything the hash
    covers and matches it, False when it comes from a service that does not send those fields
    (nothing to check it with). Raises ManifestIntegrityError when it does not match, names
    another execution or version than the one asked for, or is in a format this SDK cannot
    check: such a manifest must not be used."""
    if not any(name in document for name in DOCUMENT_HASH_FIELDS):
        return False
    label = f"manifest {str(document.get('hash'))[:16]}"
    form = document.get("format", MANIFEST_FORMAT)
    if form != MANIFEST_FORMAT:
        raise ManifestIntegrityError(f"{label} is in format {form!r}, which this SDK cannot check")
    try:
        claimed, version_of, parents = document["hash"], document["version"], document["parents"]
        identity = (document["owner_id"], document["workflow_id"], document["execution_id"])
        entries, cohort = document["entries"], document.get("cohort", {})
        if not (
            isinstance(claimed, str)
            and all(isinstance(part, str) for part in identity)
            and isinstance(version_of, int)
            and not isinstance(version_of, bool)
            and isinstance(parents, list)
            and all(isinstance(parent, str) for parent in parents)
            and isinstance(entries, Mapping)
            and isinstance(cohort, Mapping)
        ):
            raise TypeError("a field has the wrong type")
        expected = manifest_hash(
            owner_id=identity[0],
            workflow_id=identity[1],
            execution_id=identity[2],
            version=version_of,
            parents=parents,
            entries=entries,
            cohort=cohort,
        )
    except (KeyError, TypeError, StateBagError) as exc:
        raise ManifestIntegrityError(f"{label} cannot be checked: {exc}") from None
    if expected != claimed:
        raise ManifestIntegrityError(
            f"{label} does not match its hash: it was changed after it was committed"
        )
    if execution_id is not None and identity[2] != execution_id:
        raise ManifestIntegrityError(f"{label} is a version of {identity[2]!r}, not of {execution_id!r}")
    if version is not None and version_of != version:
        raise ManifestIntegrityError(f"{label} is version {version_of}, not {version}")
    return True


class PrepareRequest(Record, frozen=True):
    """Phase one: what a dehydration is about to upload and which stored blobs it reuses."""

    owner_id: str
    workflow_id: str
    execution_id: str
    parents: tuple[str, ...]
    packs: tuple[PackWrite, ...]
    reused: tuple[tuple[str, str], ...]  # (object key, digest) of blobs the new version keeps
    idempotency_key: str | None = None
    # "presigned" when the caller cannot write the store itself and needs upload URLs; None
    # leaves it to the manifest store's own setting.
    upload: str | None = None


class Prepared(Record, frozen=True):
    txn_id: str
    expires_at: float  # seconds since the epoch
    committed: ManifestRecord | None = None  # set when this idempotency key already committed
    # Where to upload each object instead of the caller's own store (object key -> target with
    # method, url and headers), when the manifest service hands out upload URLs.
    uploads: Mapping[str, Mapping[str, Any]] = factory(default_factory=dict)
