"""GET /api/v1/flagset: the SDK key's environment's current revision, from the cache.

A plain Django view, not part of the typed API layer: SDK fleets poll it, so it and its WSGI
fast path (rollout.fastpath) stay as lean as they are. ``openapi_path_item()`` describes it
for the generated API description, beside the code it describes."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_variables
from django.views.decorators.http import require_GET

from core import metrics
from core.api import error_response
from keys.services import key_note_use, key_scope
from keys.tokens import bearer_key

from .models import SdkKey
from .services.documents import CACHE_CONTROL, conditional, document_cached, document_publish_latest

PATH = "/api/v1/flagset"


def _unauthorized() -> JsonResponse:
    # The same answer for missing, malformed, unknown and revoked keys: nothing to learn from it.
    response = error_response(401, "unauthorized", "unauthorized")
    response["WWW-Authenticate"] = 'Bearer realm="flagset"'
    return response


@csrf_exempt  # a bearer-key endpoint with no session: a POST is a 405, not a CSRF refusal
@require_GET
@sensitive_variables("raw")  # the SDK key, here and in the frames under this one
def flagset(request: HttpRequest) -> HttpResponse:
    raw = bearer_key(request.headers.get("Authorization", ""))
    environment = key_scope(model=SdkKey, raw=raw) if raw else None
    if raw is None or environment is None:
        metrics.flagset_request(401)
        return _unauthorized()
    key_note_use(model=SdkKey, raw=raw)
    entry = document_cached(environment_key=environment) or document_publish_latest(
        environment_key=environment
    )
    if entry is None:
        metrics.flagset_request(404)
        return error_response(404, "this environment has no flag set yet")
    status, headers, body = conditional(entry, request.headers.get("If-None-Match", ""))
    metrics.flagset_request(status)
    response = HttpResponse(body, status=status)
    for name, value in headers:
        response[name] = value
    return response


def openapi_path_item() -> dict[str, Any]:
    """This endpoint in OpenAPI terms; its document's schemas (Flag, FlagSet) come from the
    SDK's spec and the error schema from the typed layer, both as components."""
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
    return {
        "get": {
            "operationId": "rollout_api_flagset",
            "summary": "The current revision of the key's environment",
            "tags": ["rollout"],
            "security": [{"sdkKey": []}],
            "parameters": [{"name": "If-None-Match", "in": "header", "schema": {"type": "string"}}],
            "responses": {
                "200": {
                    "description": f"The flag set; strong ETag, Cache-Control: {CACHE_CONTROL}.",
                    "headers": {"ETag": {"schema": {"type": "string"}}},
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/FlagSet"}}},
                },
                "304": {"description": "Unchanged since the ETag given in If-None-Match."},
                "401": {"description": "Missing, unknown or revoked key.", "content": error},
                "404": {"description": "The environment has no flag set yet.", "content": error},
                "405": {"description": "Only GET.", "content": error},
            },
        }
    }


OPENAPI_SECURITY = {
    "sdkKey": {"type": "http", "scheme": "bearer", "description": "Read-only SDK key of one environment."}
}
