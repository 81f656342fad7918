"""The statebag's HTTP API, on the typed layer (django-ninja): request bodies are validated
from statebag.schemas before a service runs, and every refusal is a JSON error with a code.

* Dehydration jobs, for pipelines with a Django session and the model permissions.
* The two-phase commit for clients that write their own packs (Lambdas through the SDK's
  HttpManifestStore), authenticated by an owner-scoped write key; no session, so no CSRF.
* One call for a version that uploads nothing (most steps), with the same key.
* Uploads to the service's own store, authenticated by the signed token in their URL.
* Ranged reads of the owner's own stored objects, with the write key, for clients that cannot
  reach the store themselves.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar
from uuid import UUID

from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from ninja import Router, Status
from ninja.security import SessionAuth

from analemma_sdk.statebag import InvalidKeyError
from analemma_sdk.statebag.errors import (
    InvalidValueError,
    MalformedPointerError,
    ManifestConflictError,
    ManifestIntegrityError,
    StaleReferenceError,
)
from core.api import ApiError, ErrorOut, error_response
from keys.auth import KeyBearer

from .conf import statebag_settings
from .errors import DanglingPointerError, TransactionAbortedError
from .models import DehydrationJob, WriteKey
from .schemas import (
    AbortedOut,
    CommitIn,
    Id,
    JobIn,
    JobOut,
    ManifestOut,
    ManifestRecordOut,
    PreparedOut,
    PrepareIn,
    RecordIn,
    StoredOut,
    Version,
)
from .services import reads, remote
from .services.jobs import job_submit
from .tasks import run_dehydration_job as run_dehydration_job_task

router = Router(tags=["statebag"])
write_key = KeyBearer(WriteKey, "a valid write key is required")
P = ParamSpec("P")
R = TypeVar("R")

_COMMON = {400: ErrorOut, 401: ErrorOut, 413: ErrorOut, 503: ErrorOut}
_SCOPED = {**_COMMON, 403: ErrorOut, 404: ErrorOut}
_COMMITTING = {**_SCOPED, 409: ErrorOut, 410: ErrorOut, 500: ErrorOut}
_BYTES = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


def _owner(request: HttpRequest) -> str:
    """The owner of the write key that authenticated the request."""
    owner: str = request.auth  # type: ignore[attr-defined]  # set by the typed layer's auth
    return owner


def _answers_errors(view: Callable[P, R]) -> Callable[P, R]:
    """The state bag's typed errors, as the API answers them."""

    @functools.wraps(view)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return view(*args, **kwargs)
        except ManifestIntegrityError as exc:
            # Stored data failed its hash check (logged as an alert where it was found): a
            # server-side fault no request can fix, and nothing of the manifest is served.
            raise ApiError(500, "integrity_error", str(exc)) from None
        except PermissionError as exc:
            raise ApiError(403, "forbidden", str(exc)) from None
        except (remote.RemoteRequestError, InvalidKeyError, MalformedPointerError, InvalidValueError) as exc:
            raise ApiError(400, "invalid_request", str(exc)) from None
        except remote.UploadVerificationError as exc:
            raise ApiError(
                409, "upload_mismatch", "uploads do not match what was prepared", problems=exc.problems
            ) from None
        except StaleReferenceError as exc:
            raise ApiError(409, "stale_reference", str(exc), digests=list(exc.digests)) from None
        except (ManifestConflictError, DanglingPointerError) as exc:
            raise ApiError(409, "conflict", str(exc)) from None
        except TransactionAbortedError as exc:
            raise ApiError(410, "aborted", str(exc)) from None
        except LookupError as exc:
            raise ApiError(404, "not_found", str(exc)) from None

    return wrapped


# Jobs ---------------------------------------------------------------------------------------
class PermittedSession(SessionAuth):
    """A logged-in user holding ``permission``; 401 without a session, 403 without the right."""

    def __init__(self, permission: str) -> None:
        super().__init__()
        self.permission = permission

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        user = super().authenticate(request, key)
        if user is None:
            raise ApiError(401, "unauthorized", "authentication required")
        if not user.has_perm(self.permission):
            raise ApiError(403, "forbidden", f"missing permission {self.permission}")
        return user


def _job_out(request: HttpRequest, job: DehydrationJob) -> dict[str, Any]:
    return {
        "id": str(job.pk),
        "url": request.build_absolute_uri(reverse("api:statebag-job", args=[job.pk])),
        "status": job.status,
        "owner_id": job.owner_id,
        "workflow_id": job.workflow_id,
        "execution_id": job.execution_id,
        "attempts": job.attempts,
        "manifest": {"hash": job.manifest.hash, "version": job.manifest.version} if job.manifest else None,
        "payload": job.payload,
        "error": job.error or None,
    }


@router.post(
    "/jobs",
    url_name="statebag-jobs",
    auth=PermittedSession("statebag.add_dehydrationjob"),
    response={202: JobOut, **_SCOPED},
    summary="Submit a state to dehydrate into the execution's next version",
)
@_answers_errors
def job_create(request: HttpRequest, response: HttpResponse, body: JobIn) -> Any:
    job = job_submit(
        owner_id=body.owner_id,
        workflow_id=body.workflow_id,
        execution_id=body.execution_id,
        state=body.state,
        parent=body.parent or "",
        submitted_by=request.user.get_username(),
    )
    transaction.on_commit(lambda: run_dehydration_job_task.delay(str(job.pk)))
    answer = _job_out(request, job)
    response["Location"] = answer["url"]
    return Status(202, answer)


@router.get(
    "/jobs/{uuid:job_id}",
    url_name="statebag-job",
    auth=PermittedSession("statebag.view_dehydrationjob"),
    response={200: JobOut, **_SCOPED},
    summary="A dehydration job's status, manifest and payload",
)
def job_detail(request: HttpRequest, job_id: UUID) -> Any:
    job = get_object_or_404(DehydrationJob.objects.select_related("manifest"), pk=job_id)
    return _job_out(request, job)


# Two-phase commit with a write key ------------------------------------------------------------
@router.post(
    "/transactions",
    url_name="statebag-prepare",
    auth=write_key,
    response={201: PreparedOut, **_COMMITTING},
    exclude_unset=True,
    summary="Prepare a commit: record what will be uploaded and pin what is reused",
)
@_answers_errors
def transaction_prepare(request: HttpRequest, body: PrepareIn) -> Any:
    def upload_url(token: str) -> str:
        return request.build_absolute_uri(reverse("api:statebag-upload", args=[token]))

    return Status(201, remote.prepare(_owner(request), body.as_request(), body.upload, upload_url))


@router.post(
    "/transactions/{uuid:txn_id}/commit",
    url_name="statebag-commit",
    auth=write_key,
    response={200: ManifestRecordOut, **_COMMITTING},
    summary="Commit, once every declared object is stored with its declared size and sha256",
)
@_answers_errors
def transaction_commit(request: HttpRequest, txn_id: UUID, body: CommitIn) -> Any:
    return remote.commit(_owner(request), str(txn_id), body.entries, body.cohort)


@router.post(
    "/transactions/{uuid:txn_id}/abort",
    url_name="statebag-abort",
    auth=write_key,
    response={200: AbortedOut, **_COMMITTING},
    summary="Abort a prepared commit",
)
@_answers_errors
def transaction_abort(request: HttpRequest, txn_id: UUID) -> Any:
    remote.abort(_owner(request), str(txn_id))
    return {"aborted": str(txn_id)}


@router.post(
    "/manifests",
    url_name="statebag-record",
    auth=write_key,
    response={201: ManifestRecordOut, 200: ManifestRecordOut, **_SCOPED, 409: ErrorOut, 500: ErrorOut},
    summary="Record a version that uploads nothing, in one call",
    description="For a step whose state rides in its payload, or keeps blobs already stored: no "
    "transaction to prepare, since nothing is uploaded. Every blob its entries point at must be "
    "a frame of a live pack of the owner, as the pointer describes it; that is checked, and the "
    "packs held against collection, within the call's own database transaction (else 409 "
    "conflict, and nothing is written). 201 with the new version; 200 with the version an "
    "earlier call with the same idempotency key recorded, and its entries.",
)
@_answers_errors
def manifest_record(request: HttpRequest, body: RecordIn) -> Any:
    answer, created = remote.record(_owner(request), body.as_draft())
    return Status(201 if created else 200, answer)


@router.get(
    "/executions/{execution_id}/manifests/{version}",
    url_name="statebag-manifest",
    auth=write_key,
    response={200: ManifestOut, **_SCOPED, 500: ErrorOut},
    summary="One of the owner's manifests: a version number, or head",
    description="Checked against its hash before it is answered; a manifest whose stored contents "
    "fail the check is never served: the answer is 500 with code integrity_error. The answer holds "
    "everything the hash covers, so a client can check it too.",
)
@_answers_errors
def manifest_detail(request: HttpRequest, execution_id: Id, version: Version) -> Any:
    return remote.manifest_json(_owner(request), execution_id, version)


# Uploads --------------------------------------------------------------------------------------
@router.put(
    "/uploads/{token}",
    url_name="statebag-upload",
    response={201: StoredOut, 400: ErrorOut, 403: ErrorOut, 413: ErrorOut},
    summary="Upload an object prepare declared (for stores without presigned URLs)",
    description="The signed, expiring token in the URL is the credential, as a presigned URL's is. "
    "The body is the object's bytes (application/octet-stream).",
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {}}}}
    },
)
@_answers_errors
def upload(request: HttpRequest, token: str) -> Any:
    limit = statebag_settings().max_blob_bytes
    data = request.read(limit + 1)  # streamed: packs may exceed the form-data memory limit
    if len(data) > limit:
        raise ApiError(413, "payload_too_large", "object too large")
    return Status(201, {"stored": remote.upload_accept(token, data)})


# Reads ----------------------------------------------------------------------------------------
@router.get(
    "/packs/{path:key}",
    url_name="statebag-pack",
    auth=write_key,
    response={**_SCOPED, 416: ErrorOut},
    summary="Read one of the owner's stored objects (a pack, an object, a dictionary), or a byte range",
    description="For clients that cannot reach the store themselves. Only keys under the write "
    "key's owner's prefix o/<owner>/ are answered; any other key is 404, as a missing one is. "
    "With one Range (bytes=first-last, first- or -suffix) the answer is 206 with Content-Range, "
    f"holding at most {reads.MAX_READ_BYTES} bytes (a longer range is shortened; ask for the "
    "rest). Without Range the whole object, if it is within that limit.",
    openapi_extra={
        "parameters": [
            {"in": "header", "name": "Range", "required": False, "schema": {"type": "string"}},
        ],
        "responses": {
            "200": {"description": "The whole object.", "content": _BYTES},
            "206": {"description": "The range, as Content-Range says.", "content": _BYTES},
        },
    },
)
@_answers_errors
def pack_read(request: HttpRequest, key: str) -> HttpResponse:
    try:
        read = reads.owner_object_read(_owner(request), key, request.headers.get("Range"))
    except reads.RangeNotSatisfiable as exc:
        refused = error_response(416, str(exc), "range_not_satisfiable")
        refused["Content-Range"] = f"bytes */{exc.size}"
        return refused
    except reads.RangeInvalid as exc:
        raise ApiError(400, "invalid_request", str(exc)) from None
    response = HttpResponse(
        read.data, status=206 if read.partial else 200, content_type="application/octet-stream"
    )
    if read.partial:
        response["Content-Range"] = read.content_range
    response["Accept-Ranges"] = "bytes"
    # Keys name their content (digests), so an object under a key never changes.
    response["Cache-Control"] = "private, max-age=86400, immutable"
    return response
