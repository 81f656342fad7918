"""The two-phase commit run by a client through the API (a Lambda: storage access, no
database), scoped to the owner its write key belongs to.

prepare  — the request (already well-formed: see statebag.schemas) is checked against the
           key's scope (its owner, keys under the owner's own prefix), recorded as in
           StateVersioningService.prepare, and answered with where to upload: the client's
           own store access, a presigned S3 URL, or this service's upload endpoint.
commit   — only after every object the transaction declared is in the store with the
           declared size and sha256; otherwise nothing is committed and the transaction stays
           prepared (the client may upload again, or the reaper aborts it).
record   — a version that uploads nothing, in one call: nothing waits between two phases
           for a collector to race, and every blob it points at is checked live, and held, in
           its one transaction (StateVersioningService.record).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.core import signing
from django.core.exceptions import ValidationError
from django.core.files.storage import storages
from django.db import transaction

from analemma_sdk.statebag import BlobNotFoundError, ForeignDictionaryError, InvalidKeyError
from analemma_sdk.statebag.keys import validate_key
from analemma_sdk.statebag.manifests import ManifestDraft, PackWrite, Prepared, PrepareRequest

from ..conf import statebag_settings
from ..errors import ManifestConflictError
from ..models import CommitTransaction, Manifest, Pack
from ..schemas import MAX_VERSION
from .chain import manifest_document
from .dictionaries import dictionary_ids_check
from .stores import statebag_store
from .versioning import EntryRows, StateVersioningService, transaction_abort, transaction_read

UPLOAD_SALT = "statebag.upload"


class RemoteRequestError(ValueError):
    """A malformed or out-of-scope request from a client."""


class UnknownTransactionError(LookupError):
    """No such transaction, or another owner's: the same answer either way."""


class UploadVerificationError(Exception):
    """Declared objects are missing from the store or differ from what was declared."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


# Scope ------------------------------------------------------------------------------------
def _owned_key(owner_id: str, key: str) -> str:
    try:
        validate_key(key)
    except InvalidKeyError as exc:
        raise RemoteRequestError(str(exc)) from None
    if not key.startswith(f"o/{owner_id}/"):
        raise RemoteRequestError(f"object key {key!r} is outside owner {owner_id}'s prefix")
    return key


def prepare_request_check(owner_id: str, request: PrepareRequest) -> None:
    """A well-formed request may still be out of the key's scope: refuse it unless it is for
    the key's owner and names only objects and compression dictionaries of that owner."""
    if request.owner_id != owner_id:
        raise PermissionError("this key writes for another owner")
    for write in request.packs:  # sizes and layout: statebag.schemas.pack_check
        _owned_key(owner_id, write.key)
    for key, _ in request.reused:
        _owned_key(owner_id, key)
    try:
        dictionary_ids_check(
            owner_id=owner_id,
            dict_ids={frame.dict_id for write in request.packs for frame in write.frames if frame.dict_id},
        )
    except ForeignDictionaryError as exc:
        raise RemoteRequestError(str(exc)) from None


# Transactions of one owner ------------------------------------------------------------------
def owned_transaction(owner_id: str, txn_id: str, *, lock: bool = False) -> CommitTransaction:
    """The transaction, if it is this owner's; the same error otherwise, so a key cannot
    learn which transactions other owners have."""
    rows = CommitTransaction.objects.select_for_update(of=("self",)) if lock else CommitTransaction.objects
    try:
        return rows.get(pk=txn_id, owner_id=owner_id)
    except (CommitTransaction.DoesNotExist, ValueError, ValidationError):
        raise UnknownTransactionError(f"no transaction {txn_id!r}") from None


def prepare(
    owner_id: str, request: PrepareRequest, mode: str, upload_url: Callable[[str], str]
) -> dict[str, Any]:
    """Record the transaction; answer its id and, for ``mode`` "presigned", where to upload."""
    prepare_request_check(owner_id, request)
    prepared: Prepared = StateVersioningService().prepare(request)
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


def commit(
    owner_id: str, txn_id: str, entries: Mapping[str, Any], cohort: Mapping[str, Any]
) -> dict[str, Any]:
    rows = EntryRows(entries)
    read = transaction_read(txn_id, owner_id)  # and what it declared, for the store check
    if read is None:
        raise UnknownTransactionError(f"no transaction {txn_id!r}")
    if read.state == CommitTransaction.State.PREPARED:
        verify_uploads(read.declared)
    record = StateVersioningService().commit_rows(txn_id, rows, cohort, read)
    return record_json(record.hash, record.version, record.entries)


def record(owner_id: str, draft: ManifestDraft) -> tuple[dict[str, Any], bool]:
    """Record a version that uploads nothing; also whether it is new (else an earlier call
    with the same idempotency key recorded it, and its entries are answered)."""
    if draft.owner_id != owner_id:
        raise PermissionError("this key writes for another owner")
    if draft.packs:
        raise RemoteRequestError("a version that uploads objects is recorded by prepare and commit")
    done = StateVersioningService(use_2pc=False).record(draft)
    return record_json(done.hash, done.version, done.entries), done.entries is None


def abort(owner_id: str, txn_id: str) -> None:
    """Abort a prepared transaction; aborting it again is a no-op, aborting a committed one
    is refused (its version stays)."""
    with transaction.atomic():
        txn = owned_transaction(owner_id, txn_id, lock=True)
        if txn.state == CommitTransaction.State.COMMITTED:
            raise ManifestConflictError(f"transaction {txn_id} is committed: it cannot be aborted")
        transaction_abort(txn, "aborted by the client")


def record_json(manifest_hash: str, version: int, entries: Mapping[str, Any] | None) -> dict[str, Any]:
    return {
        "hash": manifest_hash,
        "version": version,
        "entries": dict(entries) if entries is not None else None,
    }


def manifest_json(owner_id: str, execution_id: str, version: str) -> dict[str, Any]:
    manifests = Manifest.objects.select_related("execution").filter(
        execution__owner_id=owner_id, execution__execution_id=execution_id
    )
    if version == "head":
        manifest = manifests.order_by("-version").first()
    else:
        # ASCII digits only: "²".isdigit() is true, and int() refuses it.
        number = int(version) if version.isascii() and version.isdigit() and len(version) <= 10 else 0
        manifest = manifests.filter(version=number).first() if 0 < number <= MAX_VERSION else None
    if manifest is None:
        raise LookupError(f"no manifest {version} of {execution_id}")
    # Everything its hash covers, checked: a manifest that fails is ManifestIntegrityError.
    return manifest_document(manifest, purpose="manifest API")


# Uploads --------------------------------------------------------------------------------
def verify_uploads(declared: Sequence[tuple[str, int, str]]) -> None:
    """Every object the transaction declared ((key, size, sha256), as recorded) must be stored
    with its declared size and sha256. Reading it back costs a GET per pack; a commit that
    points at a missing or altered object would cost a dangling pointer."""
    store = statebag_store()
    problems = []
    for key, size, digest in declared:
        try:
            data = store.get(key)
        except BlobNotFoundError:
            problems.append(f"{key} was not uploaded")
            continue
        if len(data) != size:
            problems.append(f"{key} is {len(data)} bytes, {size} declared")
        elif hashlib.sha256(data).hexdigest() != digest:
            problems.append(f"{key} does not match its declared sha256")
    if problems:
        raise UploadVerificationError(problems)


def upload_target(txn_id: str, write: PackWrite, upload_url: Callable[[str], str]) -> dict[str, Any]:
    """A presigned S3 PUT when the store is S3; otherwise this service's upload endpoint with
    a signed, expiring token naming exactly this object."""
    ttl = int(statebag_settings().transaction_ttl.total_seconds())
    storage: Any = storages["statebag"]  # an S3Storage when it has a boto3 client
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
    ttl = statebag_settings().transaction_ttl
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
