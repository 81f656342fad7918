"""HttpManifestStore: the two-phase commit through the service's API, for a Lambda that has
storage access but no database.

    store = HttpManifestStore("https://analemma.example.com", os.environ["STATEBAG_WRITE_KEY"])
    hydrator = get_hydrator(use_batching=True, use_2pc=True, manifest_store=store)

prepare -> upload -> commit, as StateVersioningService does in process. Packs go to the
hydrator's own store, or with ``upload="presigned"`` to the URLs the service returns (a
presigned S3 PUT, or the service's own upload endpoint for a local folder). The service checks
every declared object's size and sha256 before it commits. Errors are typed: an unreachable or
failing service is ManifestServiceUnavailableError (the hydrator then degrades to the legacy
path), a refused key WriteKeyRejectedError.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from .. import _http
from .errors import (
    ManifestConflictError,
    ManifestRequestError,
    ManifestServiceUnavailableError,
    StaleReferenceError,
    TransactionAbortedError,
    UploadRejectedError,
    WriteKeyRejectedError,
)
from .manifests import ManifestDraft, ManifestRecord, PackWrite, Prepared, PrepareRequest

MAX_RESPONSE_BYTES = 16 * 1024 * 1024


def _pack_json(write: PackWrite) -> dict[str, Any]:
    return {
        "key": write.key,
        "digest": write.digest,
        "size": write.size,
        "kind": write.kind,
        "frames": [
            {
                "digest": f.digest,
                "offset": f.offset,
                "length": f.length,
                "codec": f.codec,
                "raw_size": f.raw_size,
                "dict_id": f.dict_id,
            }
            for f in write.frames
        ],
    }


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
                "packs": [_pack_json(write) for write in request.packs],
                "reused": [list(pair) for pair in request.reused],
                "idempotency_key": request.idempotency_key,
                "upload": self.upload_mode,
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
            return _record(self._call("POST", path, body))
        except ManifestServiceUnavailableError:
            # Commit is idempotent on the service: a lost answer is asked for again, once.
            return _record(self._call("POST", path, body))

    def abort(self, txn_id: str) -> None:
        self._call("POST", f"/transactions/{quote(txn_id, safe='')}/abort", {})

    def record(self, draft: ManifestDraft) -> ManifestRecord:
        """One step for a caller that uploaded first: prepare and commit at once (the service
        still checks the uploads)."""
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
        return self._call("GET", f"/executions/{quote(execution_id, safe='')}/manifests/{version}", None)

    # Transport ------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: Mapping[str, Any] | None) -> dict[str, Any]:
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
        if response.status >= 500 or not isinstance(answer, dict):
            raise ManifestServiceUnavailableError(f"{method} {path}: HTTP {response.status}, unusable answer")
        if response.status < 300:
            return answer
        raise _error_for(response.status, answer)


def _error_for(status: int, answer: Mapping[str, Any]) -> Exception:
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
        return LookupError(message)
    return ManifestRequestError(message)
