"""HttpManifestStore: the two-phase commit through the service's API, for a Lambda that has
storage access but no database.

    store = HttpManifestStore("https://analemma.example.com", os.environ["STATEBAG_WRITE_KEY"])
    hydrator = get_hydrator(use_batching=True, use_2pc=True, manifest_store=store)

prepare -> upload -> commit, as StateVersioningService does in process; a version that
uploads nothing (most steps) is one call, ``record``. Packs go to the
hydrator's own store, or with ``upload="presigned"`` to the URLs the service returns (a
presigned S3 PUT, or the service's own upload endpoint for a local folder). The service checks
every declared object's size and sha256 before it commits. Errors are typed: an unreachable or
failing service is ManifestServiceUnavailableError (the hydrator then degrades to the legacy
path), a refused key WriteKeyRejectedError, a manifest that fails its hash check
ManifestIntegrityError.

A client with no store of its own (only the service's URL and a write key) reads the
service's store through the service: ``store.pack_store()`` is a BlobStore that makes ranged
GETs of the owner's objects, and a hydrator on it asks prepare for upload URLs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

from .. import _http
from .errors import (
    BlobNotFoundError,
    BlobTooLargeError,
    CorruptBlobError,
    ManifestConflictError,
    ManifestIntegrityError,
    ManifestRequestError,
    ManifestServiceUnavailableError,
    StaleReferenceError,
    StoreReadOnlyError,
    TransactionAbortedError,
    UnknownTransactionError,
    UploadRejectedError,
    WriteKeyRejectedError,
)
from .keys import validate_key
from .manifests import (
    ManifestDraft,
    ManifestRecord,
    Prepared,
    PrepareRequest,
    manifest_document_check,
)

MAX_RESPONSE_BYTES = 16 * 1024 * 1024
# Ranged reads through the service: at most this much per request (the service may answer
# less, and says so in Content-Range), and no object larger than this in all.
READ_CHUNK_BYTES = 8 * 1024 * 1024
MAX_OBJECT_BYTES = 256 * 1024 * 1024


class _NoRecordEndpoint(LookupError):
    """The service answers no one-call record (it predates it)."""


def _record(answer: Mapping[str, Any]) -> ManifestRecord:
    return ManifestRecord(answer["hash"], int(answer["version"]), answer.get("entries"))


class HttpManifestStore:
    def __init__(
        self, base_url: str, write_key: str, *, timeout: float = 10.0, upload: str = "direct"
    ) -> None:
        if upload not in ("direct", "presigned"):
            raise ValueError("upload must be 'direct' or 'presigned'")
        self.base_url = base_url.rstrip("/") + "/api/v1/statebag"
        self._key = write_key
        self.timeout = timeout
        self.upload_mode = upload
        self._pack_store: ServicePackStore | None = None
        self._one_call = True

    def __repr__(self) -> str:
        return f"<HttpManifestStore {self.base_url} upload={self.upload_mode}>"

    # Two-phase ------------------------------------------------------------------------
    def prepare(self, request: PrepareRequest) -> Prepared:
        answer = self._call(
            "POST",
            "/transactions",
            {
                "owner_id": request.owner_id,
                "workflow_id": request.workflow_id,
                "execution_id": request.execution_id,
                "parents": list(request.parents),
                "packs": [write.to_json() for write in request.packs],
                "reused": [list(pair) for pair in request.reused],
                "idempotency_key": request.idempotency_key,
                "upload": request.upload or self.upload_mode,
            },
        )
        committed = answer.get("committed")
        return Prepared(
            txn_id=answer.get("txn_id") or "",
            expires_at=float(answer.get("expires_at") or 0.0),
            committed=_record(committed) if committed else None,
            uploads=answer.get("uploads") or {},
        )

    def commit(self, txn_id: str, entries: Mapping[str, Any], cohort: Mapping[str, Any]) -> ManifestRecord:
        body = {"entries": dict(entries), "cohort": dict(cohort)}
        path = f"/transactions/{quote(txn_id, safe='')}/commit"
        try:
            return _record(self._call("POST", path, body, missing=UnknownTransactionError))
        except ManifestServiceUnavailableError:
            # Commit is idempotent on the service: a lost answer is asked for again, once.
            return _record(self._call("POST", path, body, missing=UnknownTransactionError))

    def abort(self, txn_id: str) -> None:
        path = f"/transactions/{quote(txn_id, safe='')}/abort"
        self._call("POST", path, {}, missing=UnknownTransactionError)

    def record(self, draft: ManifestDraft) -> ManifestRecord:
        """One step. A version that uploads nothing is one request (``POST /manifests``): the
        service checks every blob it points at, and holds it against collection, inside the
        transaction that records it. One whose objects were uploaded first is prepared and
        committed at once (the service still checks the uploads)."""
        if not draft.packs and self._one_call:
            body = {
                "owner_id": draft.owner_id,
                "workflow_id": draft.workflow_id,
                "execution_id": draft.execution_id,
                "parents": list(draft.parents),
                "entries": dict(draft.entries),
                "cohort": dict(draft.cohort),
                "idempotency_key": draft.idempotency_key,
            }
            try:
                try:
                    return _record(self._call("POST", "/manifests", body, missing=_NoRecordEndpoint))
                except ManifestServiceUnavailableError:
                    if not draft.idempotency_key:
                        raise  # without a key, asking again could record a second version
                    # With one, a lost answer is asked for again, once: the service replays it.
                    return _record(self._call("POST", "/manifests", body, missing=_NoRecordEndpoint))
            except _NoRecordEndpoint:
                # A service from before one-call records: two phases, as then.
                self._one_call = False
        prepared = self.prepare(
            PrepareRequest(
                owner_id=draft.owner_id,
                workflow_id=draft.workflow_id,
                execution_id=draft.execution_id,
                parents=draft.parents,
                packs=draft.packs,
                reused=(),
                idempotency_key=draft.idempotency_key,
            )
        )
        if prepared.committed is not None:
            return prepared.committed
        return self.commit(prepared.txn_id, draft.entries, draft.cohort)

    def upload(self, target: Mapping[str, Any], data: bytes) -> None:
        """PUT an object to a URL prepare returned."""
        headers = dict(target.get("headers") or {})
        try:
            response = _http.request(
                str(target.get("method", "PUT")),
                str(target["url"]),
                headers,
                data,
                timeout=self.timeout,
                max_bytes=65536,
            )
        except _http.FetchError as exc:
            raise ManifestServiceUnavailableError(f"upload failed: {exc}") from None
        if response.status >= 500:
            raise ManifestServiceUnavailableError(f"upload failed: HTTP {response.status}")
        if response.status >= 300:
            raise UploadRejectedError(f"upload refused: HTTP {response.status} {response.body[:200]!r}")

    # Reads ----------------------------------------------------------------------------
    def manifest(self, execution_id: str, version: int | str = "head") -> dict[str, Any]:
        """One of the owner's manifests, checked against its hash when the service sends what
        the hash covers (a service that predates those fields is read unchecked). A manifest
        that fails the check is ManifestIntegrityError, never returned."""
        answer = self._call("GET", f"/executions/{quote(execution_id, safe='')}/manifests/{version}", None)
        number = int(version) if str(version).isdigit() else None
        manifest_document_check(answer, execution_id=execution_id, version=number)
        return answer

    def pack_store(self) -> ServicePackStore:
        """The service's store, read through the service with this key (one per manifest store)."""
        if self._pack_store is None:
            root = self.base_url[: -len("/api/v1/statebag")]
            self._pack_store = ServicePackStore(root, self._key, timeout=self.timeout)
        return self._pack_store

    # Transport ------------------------------------------------------------------------
    def _call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        *,
        missing: type[LookupError] = LookupError,
    ) -> dict[str, Any]:
        """The service's JSON answer; an error answer raised as its typed error (a 404 as
        ``missing``)."""
        headers = {"Authorization": f"Bearer {self._key}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        try:
            response = _http.request(
                method,
                self.base_url + path,
                headers,
                data,
                timeout=self.timeout,
                max_bytes=MAX_RESPONSE_BYTES,
            )
        except _http.FetchError as exc:
            raise ManifestServiceUnavailableError(f"{method} {path}: {exc}") from None
        try:
            answer = json.loads(response.body) if response.body else {}
        except ValueError:
            answer = None
        if response.status >= 500 and isinstance(answer, dict) and answer.get("code") == "integrity_error":
            # Not an outage: the service refuses a stored manifest that fails its hash check.
            raise ManifestIntegrityError(str(answer.get("error") or "manifest fails its integrity check"))
        if response.status >= 500 or not isinstance(answer, dict):
            raise ManifestServiceUnavailableError(f"{method} {path}: HTTP {response.status}, unusable answer")
        if response.status < 300:
            return answer
        raise _error_for(response.status, answer, missing)


def _error_for(status: int, answer: Mapping[str, Any], missing: type[LookupError]) -> Exception:
    message = str(answer.get("error") or f"HTTP {status}")
    code = answer.get("code")
    if status in (401, 403):
        return WriteKeyRejectedError(message)
    if status == 409 and code == "stale_reference":
        return StaleReferenceError(message, tuple(answer.get("digests") or ()))
    if status == 409 and code == "upload_mismatch":
        return UploadRejectedError(f"{message}: {'; '.join(answer.get('problems') or [])}")
    if status == 409:
        return ManifestConflictError(message)
    if status == 410:
        return TransactionAbortedError(message)
    if status == 404:
        return missing(message)
    return ManifestRequestError(message)


class ServicePackStore:
    """The service's store as a BlobStore, for a client that has none of its own: reads are
    ranged GETs of ``/api/v1/statebag/packs/<key>`` with the write key, which answers only the
    key's owner's objects. Writes go to the upload URLs a prepared transaction hands out (a
    hydrator on this store asks for them), never through the store itself."""

    direct_writes = False

    def __init__(
        self,
        base_url: str,
        write_key: str,
        *,
        timeout: float = 10.0,
        chunk_bytes: int = READ_CHUNK_BYTES,
        max_object_bytes: int = MAX_OBJECT_BYTES,
    ) -> None:
        if chunk_bytes < 1:
            raise ValueError("chunk_bytes must be positive")
        self.base_url = base_url.rstrip("/") + "/api/v1/statebag/packs/"
        self._key = write_key
        self.timeout = timeout
        self.chunk_bytes = chunk_bytes
        self.max_object_bytes = max_object_bytes

    def __repr__(self) -> str:
        return f"<ServicePackStore {self.base_url}>"

    def get(self, key: str) -> bytes:
        data, total = self._read(key, 0, self.chunk_bytes - 1)
        if total > self.max_object_bytes:
            raise BlobTooLargeError(f"{key} is {total} bytes, over the {self.max_object_bytes}-byte limit")
        if total > len(data):
            data += self.get_range(key, len(data), total - len(data))
        if len(data) != total:
            raise CorruptBlobError(f"{key}: read {len(data)} of its {total} bytes")
        return data

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")
        parts: list[bytes] = []
        position, end = offset, offset + length
        while position < end:
            data, total = self._read(key, position, min(end, position + self.chunk_bytes) - 1)
            parts.append(data)
            position += len(data)
            if not data or position >= total:
                break  # the object ends here: a short read, as from any store
        return b"".join(parts)

    def exists(self, key: str) -> bool:
        try:
            self._read(key, 0, 0)
        except BlobNotFoundError:
            return False
        return True

    def put(self, key: str, data: bytes) -> None:
        raise StoreReadOnlyError(
            f"cannot store {key}: the service's store takes objects only at the upload URLs of a "
            "prepared transaction (set STATEBAG_STORE_URL to give this client a store of its own)"
        )

    def delete(self, key: str) -> None:
        raise StoreReadOnlyError(f"cannot delete {key}: the service's store is read-only here")

    def list(self, prefix: str = "") -> Iterator[str]:
        raise StoreReadOnlyError("the service's store cannot be listed through the service")

    def _read(self, key: str, first: int, last: int) -> tuple[bytes, int]:
        """Bytes ``first``..``last`` (inclusive) of ``key``, or fewer where the service or the
        object stops sooner, with the object's total size."""
        url = self.base_url + quote(validate_key(key), safe="/")
        headers = {"Authorization": f"Bearer {self._key}", "Range": f"bytes={first}-{last}"}
        try:
            response = _http.request(
                "GET", url, headers, timeout=self.timeout, max_bytes=max(self.chunk_bytes, 65536)
            )
        except _http.FetchError as exc:
            raise ManifestServiceUnavailableError(f"GET {key}: {exc}") from None
        status = response.status
        if status == 206:
            span = _content_range(response.headers.get("content-range", ""))
            if (
                span is None
                or span[0] != first
                or span[1] > last
                or span[1] - span[0] + 1 != len(response.body)
            ):
                raise CorruptBlobError(f"GET {key}: the answer is not the range asked for")
            return response.body, span[2]
        if status == 200:  # the whole object (a server that ignores Range)
            return response.body[first : last + 1], len(response.body)
        if status == 416:  # starts at or past the end
            span = _content_range(response.headers.get("content-range", ""))
            return b"", span[2] if span is not None else first
        if status == 404:
            raise BlobNotFoundError(key)
        if status in (401, 403):
            raise WriteKeyRejectedError(f"GET {key}: HTTP {status}")
        if status >= 500:
            raise ManifestServiceUnavailableError(f"GET {key}: HTTP {status}")
        raise ManifestRequestError(f"GET {key}: HTTP {status} {response.body[:200]!r}")


def _content_range(value: str) -> tuple[int, int, int] | None:
    """``bytes first-last/total`` as (first, last, total), ``bytes */total`` as (0, -1, total);
    None for anything else."""
    unit, _, rest = value.strip().partition(" ")
    span, _, total = rest.partition("/")
    if unit != "bytes" or not total.isdigit():
        return None
    if span == "*":
        return 0, -1, int(total)
    first, _, last = span.partition("-")
    if not (first.isdigit() and last.isdigit()) or int(first) > int(last) or int(last) >= int(total):
        return None
    return int(first), int(last), int(total)
