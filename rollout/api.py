"""GET /api/v1/flagset: the SDK key's environment's current revision, from the cache.

A plain Django view, not part of the typed API layer: SDK fleets poll it, so it and its WSGI
fast path (rollout.fastpath) stay as lean as they are. The generated API description still
describes it (see analemma.api)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from core.api import error_response
from keys.services import key_note_use, key_scope
from keys.tokens import bearer_key

from .models import SdkKey
from .services.documents import conditional, document_cached, document_publish_latest


def _unauthorized() -> JsonResponse:
    # The same answer for missing, malformed, unknown and revoked keys: nothing to learn from it.
    response = error_response(401, "unauthorized", "unauthorized")
    response["WWW-Authenticate"] = 'Bearer realm="flagset"'
    return response


@csrf_exempt  # a bearer-key endpoint with no session: a POST is a 405, not a CSRF refusal
@require_GET
def flagset(request: HttpRequest) -> HttpResponse:
    raw = bearer_key(request.headers.get("Authorization", ""))
    environment = key_scope(model=SdkKey, raw=raw) if raw else None
    if raw is None or environment is None:
        return _unauthorized()
    key_note_use(model=SdkKey, raw=raw)
    entry = document_cached(environment_key=environment) or document_publish_latest(
        environment_key=environment
    )
    if entry is None:
        return error_response(404, "this environment has no flag set yet")
    status, headers, body = conditional(entry, request.headers.get("If-None-Match", ""))
    response = HttpResponse(body, status=status)
    for name, value in headers:
        response[name] = value
    return response
