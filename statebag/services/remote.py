"""The two-phase commit run by a client through the API (a Lambda: storage access, no
database), scoped to the owner its write key belongs to.

prepare  — the request is checked (ids, keys under the owner's own prefix), recorded as in
           StateVersioningService.prepare, and answered with where to upload: the client's
           own store access, a presigned S3 URL, or this service's upload endpoint.
commit   — only after every object the transaction declared is in the store with the
           declared size and sha256; otherwise nothing is committed and the transaction stays
           prepared (the client may upload again, or the reaper aborts it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.exceptions import ValidationError
from django.core.files.storage import storages

from analemma_sdk.statebag import BlobNotFoundError, InvalidKeyError
from analemma_sdk.statebag.keys import validate_id, validate_key
from analemma_sdk.statebag.manifests import PackWrite, Prepared, PrepareRequest
from analemma_sdk.statebag.packs import FrameRef

from ..errors import TransactionAbortedError
from ..models import CommitTransaction, Manifest, Pack
from .stores import statebag_store
from .versioning import StateVersioningService

UPLOAD_SALT = "statebag.upload"
UPLOAD_MODES = ("direct", "presigned")


class RemoteRequestError(ValueError):
    """A malformed or out-of-scope request from a client."""


class UploadVerificationError(Exception):
    """Declared objects are missing from the store or differ from what was declared."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


# Parsing ----------------------------------------------------------------------------------
def _str(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise RemoteRequestError(f"{name} must be a string")
    return value


def _owned_key(owner_id: str, key: Any) -> str:
    try:
        validate_key(key)
    except InvalidKeyError as exc:
        raise RemoteRequestError(str(exc)) from None
    if not key.startswith(f"o/{owner_id}/"):
        raise RemoteRequestError(f"object key {key!r} is outside owner {owner_id}'s prefix")
    return key


def _digest(value: Any, what: str) -> str:
    if not (isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)):
        raise RemoteRequestError(f"{what} must be a sha256 hex digest")
    return value


def _frame(raw: Any) -> FrameRef:
    try:
        return FrameRef(
            digest=_digest(raw["digest"], "a frame digest"),
            offset=int(raw["offset"]),
            length=int(raw["length"]),
            codec=str(raw["codec"]),
            raw_size=int(raw["raw_size"]),
            dict_id=raw.get("dict_id") or None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RemoteRequestError(f"malformed frame: {exc}") from None


def _pack(owner_id: str, raw: Any) -> PackWrite:
    if not isinstance(raw, Mapping):
        raise RemoteRequestError("each pack must be an object")
    size = raw.get("size")
    if (
        isinstance(size, bool)
        or not isinstance(size, int)
        or not 0 < size <= settings.STATEBAG["MAX_BLOB_BYTES"]
    ):
        raise RemoteRequestError("a pack size must be a positive integer within the blob limit")
    kind = raw.get("kind", "pack")
    if kind not in (Pack.Kind.PACK, Pack.Kind.OBJECT):
        raise RemoteRequestError(f"unknown pack kind {kind!r}")
    frames = raw.get("frames")
    if not isinstance(frames, list) or not frames:
        raise RemoteRequestError("a pack must list its frames")
    return PackWrite(
        key=_owned_key(owner_id, raw.get("key")),
        digest=_digest(raw.get("digest"), "a pack digest"),
        size=size,
        frames=tuple(_frame(f) for f in frames),
        kind=kind,
    )


def prepare_request(owner_id: str, body: Mapping[str, Any]) -> PrepareRequest:
    """A PrepareRequest from a client's JSON, refused unless it is for the key's owner."""
    if _str(body, "owner_id") != owner_id:
        raise PermissionError("this key writes for another owner")
    try:
        workflow_id = validate_id("workflow id", _str(body, "workflow_id"))
        execution_id = validate_id("execution id", _str(body, "execution_id"))
    except InvalidKeyError as exc:
        raise RemoteRequestError(str(exc)) from None
    parents, packs, reused = body.get("parents", []), body.get("packs", []), body.get("reused", [])
    if not (isinstance(parents, list) and isinstance(packs, list) and isinstance(reused, list)):
        raise RemoteRequestError("parents, packs and reused must be lists")
    idempotency_key = body.get("idempotency_key")
    if idempotency_key is not None and not (isinstance(idempotency_key, str) and len(idempotency_key) <= 128):
        raise RemoteRequestError("idempotency_key must be a string of at most 128 characters")
    try:
        reused_pairs = tuple(
            (_owned_key(owner_id, key), _digest(digest, "a reused digest")) for key, digest in reused
        )
    except (TypeError, ValueError) as exc:
        raise RemoteRequestError(f"reused must be [key, digest] pairs: {exc}") from None
    return PrepareRequest(
        owner_id=owner_id,
        workflow_id=workflow_id,
        execution_id=execution_id,
        parents=tuple(_digest(p, "a parent") for p in parents),
        packs=tuple(_pack(owner_id, p) for p in packs),
        reused=reused_pairs,
        idempotency_key=idempotency_key,
    )


# Transactions of one owner ------------------------------------------------------------------
def owned_transaction(owner_id: str, txn_id: str) -> CommitTransaction:
    """The transaction, if it is this owner's; the same error otherwise, so a key cannot
    learn which transactions other owners have."""
    try:
        return CommitTransaction.objects.get(pk=txn_id, owner_id=owner_id)
    except (CommitTransaction.DoesNotExist, ValueError, ValidationError):
        raise TransactionAbortedError(f"no transaction {txn_id!r}") from None


def prepare(owner_id: str, body: Mapping[str, Any], upload_url: Any) -> dict[str, Any]:
    request = prepare_request(owner_id, body)
    mode = body.get("upload", "direct")
    if mode not in UPLOAD_MODES:
        raise RemoteRequestError(f"upload must be one of {', '.join(UPLOAD_MODES)}")
    prepared: Prepared = StateVersioningService(use_2pc=True).prepare(request)
    answer: dict[str, Any] = {"txn_id": prepared.txn_id or None, "expires_at": prepared.expires_at}
    if prepared.committed is not None:
        answer["committed"] = record_json(
            prepared.committed.hash, prepared.committed.version, prepared.committed.entries
        )
        return answer
    if mode == "presigned":
        answer["uploads"] = {
            write.key: upload_target(prepared.txn_id, write, upload_url) for write in request.packs
        }
    return answer


def commit(owner_id: str, txn_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
    txn = owned_transaction(owner_id, txn_id)
    entries, cohort = body.get("entries"), body.get("cohort", {})
    if not isinstance(entries, Mapping) or not isinstance(cohort, Mapping):
        raise RemoteRequestError("entries and cohort must be objects")
    if txn.state == CommitTransaction.State.PREPARED:
        verify_uploads(txn)
    record = StateVersioningService(use_2pc=True).commit(str(txn.pk), entries, cohort)
    return record_json(record.hash, record.version, record.entries)


def abort(owner_id: str, txn_id: str) -> None:
    txn = owned_transaction(owner_id, txn_id)
    StateVersioningService(use_2pc=True).abort(str(txn.pk), reason="aborted by the client")


def record_json(manifest_hash: str, version: int, entries: Mapping[str, Any] | None) -> dict[str, Any]:
    return {
        "hash": manifest_hash,
        "version": version,
        "entries": dict(entries) if entries is not None else None,
    }


def manifest_json(owner_id: str, execution_id: str, version: str) -> dict[str, Any]:
    manifests = Manifest.objects.filter(execution__owner_id=owner_id, execution__execution_id=execution_id)
    if version == "head":
        manifest = manifests.order_by("-version").first()
    else:
        manifest = manifests.filter(version=int(version)).first() if version.isdigit() else None
    if manifest is None:
        raise LookupError(f"no manifest {version} of {execution_id}")
    return {
        "hash": manifest.hash,
        "version": manifest.version,
        "execution_id": execution_id,
        "entries": {entry.field: entry.stored for entry in manifest.entries.all()},
        "cohort": manifest.cohort,
    }


# Uploads --------------------------------------------------------------------------------
def verify_uploads(txn: CommitTransaction) -> None:
    """Every object the transaction declared must be stored with its declared size and
    sha256. Reading it back costs a GET per pack; a commit that points at a missing or
    altered object would cost a dangling pointer."""
    store = statebag_store()
    problems = []
    for pack in Pack.objects.filter(key__in=txn.upload_keys, owner_id=txn.owner_id):
        try:
            data = store.get(pack.key)
        except BlobNotFoundError:
            problems.append(f"{pack.key} was not uploaded")
            continue
        if len(data) != pack.size:
            problems.append(f"{pack.key} is {len(data)} bytes, {pack.size} declared")
        elif hashlib.sha256(data).hexdigest() != pack.digest:
            problems.append(f"{pack.key} does not match its declared sha256")
    if problems:
        raise UploadVerificationError(problems)


def upload_target(txn_id: str, write: PackWrite, upload_url: Any) -> dict[str, Any]:
    """A presigned S3 PUT when the store is S3; otherwise this service's upload endpoint with
    a signed, expiring token naming exactly this object."""
    ttl = settings.STATEBAG["TRANSACTION_TTL_SECONDS"]
    storage = storages["statebag"]
    client = getattr(getattr(getattr(storage, "connection", None), "meta", None), "client", None)
    if client is not None:
        key = f"{storage.location.strip('/')}/{write.key}".lstrip("/")
        url = client.generate_presigned_url(
            "put_object", Params={"Bucket": storage.bucket_name, "Key": key}, ExpiresIn=ttl
        )
        return {"method": "PUT", "url": url, "headers": {}}
    token = signing.dumps({"t": txn_id, "k": write.key}, salt=UPLOAD_SALT, compress=True)
    return {
        "method": "PUT",
        "url": upload_url(token),
        "headers": {"Content-Type": "application/octet-stream"},
    }


def upload_accept(token: str, data: bytes) -> str:
    """Store an upload sent to this service; the token names the object, and the bytes must
    be what prepare declared for it."""
    ttl = settings.STATEBAG["TRANSACTION_TTL_SECONDS"]
    try:
        claim = signing.loads(token, salt=UPLOAD_SALT, max_age=ttl)
    except signing.BadSignature:
        raise PermissionError("invalid or expired upload token") from None
    txn = CommitTransaction.objects.filter(pk=claim["t"], state=CommitTransaction.State.PREPARED).first()
    pack = Pack.objects.filter(key=claim["k"]).first()
    if txn is None or pack is None or claim["k"] not in txn.upload_keys:
        raise PermissionError("the transaction behind this upload is no longer prepared")
    if len(data) != pack.size or hashlib.sha256(data).hexdigest() != pack.digest:
        raise RemoteRequestError("the uploaded bytes are not the object prepare declared")
    statebag_store().put(pack.key, data)
    return pack.key
