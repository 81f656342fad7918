"""POST /api/v1/telemetry: SDKs append evaluation counts and statebag cohort metrics for the
environment of their SDK key (the one write an SDK key has; the body never names an
environment). The wire format is telemetry.wire's.

A hydrator with no flag client reports with its write key instead: its batches are filed under
the key's owner's own namespace (``owner:<owner id>``, never an environment's or another
owner's, whatever the body says) and carry cohort economics only: a write key evaluates no
flags, so a batch of it with evaluations is refused (400). Everything else is the same per
namespace: body bound, batch-id idempotency, ingestion limit.

Answers: 202 stored; 200 a batch id this environment already sent (nothing changes); 400
``{"error": {"code", "message"}}`` for a body outside the wire format (the contract's shape);
401 a missing, unknown or revoked key (SDK or write key); 413 over ``TELEMETRY_MAX_BODY_BYTES``; 429 with
Retry-After over the environment's ingestion limit (counted in IngestionMinute.refused).
The limit is checked before the body is read, so a refusal costs the least it can."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.debug import sensitive_variables
from ninja import Router, Schema

from core import metrics
from core.api import ApiError, ErrorOut, error_response, parse_json_object
from keys.auth import KeyBearer
from keys.services import key_note_use, key_scope
from rollout.models import SdkKey
from statebag.models import WriteKey

from .conf import telemetry_settings
from .services import (
    batch_ingest,
    ingestion_admit,
    ingestion_count,
    ingestion_counts_flush,
    namespace_owner,
    owner_namespace,
)
from .wire import WireError, parse_batch

router = Router(tags=["telemetry"])
WRITE_KEY_EVALUATIONS = (
    "evaluations: a batch sent with a write key carries statebag cohorts only "
    "(a write key evaluates no flags; send evaluations with the SDK key of their environment)"
)


class TelemetryKey(KeyBearer):
    """An SDK key (``request.auth``: its environment's key) or a write key (its owner's
    namespace, ``owner:<owner id>``). Missing, unknown and revoked keys of either kind get the
    same 401."""

    def __init__(self) -> None:
        super().__init__(SdkKey, "a valid SDK key or write key is required")

    @sensitive_variables()
    def authenticate(self, request: HttpRequest, token: str) -> str:
        if token:
            scope = key_scope(model=SdkKey, raw=token)
            if scope is not None:
                key_note_use(model=SdkKey, raw=token)
                return scope
            owner = key_scope(model=WriteKey, raw=token)
            if owner is not None:
                key_note_use(model=WriteKey, raw=token)
                return owner_namespace(owner)
        raise ApiError(401, "unauthorized", self.refusal)


telemetry_key = TelemetryKey()


class AcceptedOut(Schema):
    accepted: bool
    batch: str


class DuplicateOut(Schema):
    accepted: bool
    duplicate: bool


def _named(namespace: str) -> str:
    owner = namespace_owner(namespace)
    return f"environment {namespace}" if owner is None else f"owner {owner}"


def _malformed(code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=400)


_REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["v", "batch", "sent_at", "window"],
                "properties": {
                    "v": {"type": "integer", "enum": [1]},
                    "batch": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                    "sent_at": {"type": "number"},
                    "window": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
                    "sdk": {"type": "object"},
                    "dropped": {"type": "integer", "minimum": 0},
                    "evaluations": {"type": "array", "maxItems": 512, "items": {"type": "object"}},
                    "statebag": {"type": "array", "maxItems": 64, "items": {"type": "object"}},
                },
            }
        }
    },
}


@router.post(
    "",
    auth=telemetry_key,
    response={202: AcceptedOut, 200: DuplicateOut, 401: ErrorOut, 413: ErrorOut, 429: ErrorOut},
    summary="Append a telemetry batch for the SDK key's environment (or the write key's owner)",
    description=(
        'A malformed body is answered 400 with {"error": {"code", "message"}}, as the wire contract fixes it.'
    ),
    openapi_extra={"requestBody": _REQUEST_BODY},
)
def telemetry_ingest(request: HttpRequest) -> Any:
    # An environment's key, or a write key's owner namespace: only ever the key's own.
    environment: str = request.auth  # type: ignore[attr-defined]  # set by the typed layer's auth
    now = time.time()
    retry_after = ingestion_admit(environment=environment, now=now)
    if retry_after is not None:
        ingestion_count(environment=environment, now=now, refused=1)
        metrics.telemetry_batch("refused")
        response = error_response(
            429, f"{_named(environment)} is over its telemetry ingestion limit", "too_many_requests"
        )
        response["Retry-After"] = str(retry_after)
        return response
    limit = telemetry_settings().max_body_bytes
    declared = request.META.get("CONTENT_LENGTH") or ""
    if (declared.isdigit() and int(declared) > limit) or len(request.body) > limit:
        metrics.telemetry_batch("too_large")
        return error_response(413, f"a telemetry batch is at most {limit} bytes", "payload_too_large")
    try:
        batch = parse_batch(parse_json_object(request.body), now=now)
    except ApiError as exc:
        metrics.telemetry_batch("malformed")
        return _malformed(exc.code, exc.message)
    except WireError as exc:
        metrics.telemetry_batch("malformed")
        return _malformed("invalid_batch", str(exc))
    if batch.evaluations and namespace_owner(environment) is not None:
        metrics.telemetry_batch("malformed")
        return _malformed("invalid_batch", WRITE_KEY_EVALUATIONS)
    if not batch_ingest(
        environment=environment, batch=batch, received_at=datetime.fromtimestamp(now, tz=UTC)
    ):
        ingestion_count(environment=environment, now=now, duplicates=1)
        metrics.telemetry_batch("duplicate")
        return HttpResponse(b'{"accepted":false,"duplicate":true}', content_type="application/json")
    ingestion_counts_flush(now=now)
    metrics.telemetry_batch("accepted", dropped=batch.dropped)
    return JsonResponse({"accepted": True, "batch": batch.batch_id}, status=202)
