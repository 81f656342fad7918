"""HTTP API for clients that commit state versions themselves (Lambdas through the SDK's
HttpManifestStore). Authenticated by an owner-scoped write key (``Authorization: Bearer``);
no session, so no CSRF token either."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from analemma_sdk.statebag.errors import ManifestConflictError, StaleReferenceError
from rollout.services import bearer_key

from .errors import DanglingPointerError, TransactionAbortedError
from .services import remote
from .services.write_keys import write_key_owner

View = Callable[..., JsonResponse]
MAX_BODY = 8 * 1024 * 1024


def _error(status: int, message: str, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": message, **extra}, status=status)


def write_key_required(view: View) -> View:
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        raw = bearer_key(request.headers.get("Authorization", ""))
        owner = write_key_owner(raw) if raw else None
        if owner is None:
            return _error(401, "a valid write key is required")  # the same for unknown and revoked
        try:
            return view(request, owner, *args, **kwargs)
        except PermissionError as exc:
            return _error(403, str(exc))
        except remote.RemoteRequestError as exc:
            return _error(400, str(exc))
        except remote.UploadVerificationError as exc:
            return _error(
                409, "uploads do not match what was prepared", code="upload_mismatch", problems=exc.problems
            )
        except StaleReferenceError as exc:
            return _error(409, str(exc), code="stale_reference", digests=list(exc.digests))
        except (ManifestConflictError, DanglingPointerError) as exc:
            return _error(409, str(exc), code="conflict")
        except TransactionAbortedError as exc:
            return _error(410, str(exc), code="aborted")
        except LookupError as exc:
            return _error(404, str(exc))

    return csrf_exempt(wrapped)


def _json_body(request: HttpRequest) -> dict[str, Any]:
    if len(request.body) > MAX_BODY:
        raise remote.RemoteRequestError("request body too large")
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        raise remote.RemoteRequestError("body must be JSON") from None
    if not isinstance(body, dict):
        raise remote.RemoteRequestError("body must be a JSON object")
    return body


@require_POST
@write_key_required
def transaction_prepare(request: HttpRequest, owner: str) -> JsonResponse:
    def upload_url(token: str) -> str:
        return request.build_absolute_uri(reverse("statebag-upload", args=[token]))

    return JsonResponse(remote.prepare(owner, _json_body(request), upload_url), status=201)


@require_POST
@write_key_required
def transaction_commit(request: HttpRequest, owner: str, txn_id: str) -> JsonResponse:
    return JsonResponse(remote.commit(owner, txn_id, _json_body(request)))


@require_POST
@write_key_required
def transaction_abort(request: HttpRequest, owner: str, txn_id: str) -> JsonResponse:
    remote.abort(owner, txn_id)
    return JsonResponse({"aborted": txn_id})


@require_GET
@write_key_required
def manifest_detail(request: HttpRequest, owner: str, execution_id: str, version: str) -> JsonResponse:
    return JsonResponse(remote.manifest_json(owner, execution_id, version))


@csrf_exempt
@require_http_methods(["PUT"])
def upload(request: HttpRequest, token: str) -> JsonResponse:
    """Presigned-style upload for stores that have no presigned URLs (a local folder): the
    signed token is the credential, as an S3 presigned URL's signature is."""
    limit = settings.STATEBAG["MAX_BLOB_BYTES"]
    data = request.read(limit + 1)  # streamed: packs may exceed the form-data memory limit
    if len(data) > limit:
        return _error(413, "object too large")
    try:
        key = remote.upload_accept(token, data)
    except PermissionError as exc:
        return _error(403, str(exc))
    except remote.RemoteRequestError as exc:
        return _error(400, str(exc))
    return JsonResponse({"stored": key}, status=201)
