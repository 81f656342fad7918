"""GET /api/v1/flagset: the SDK key's environment's current revision, from the cache."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET

from . import documents, services


def _unauthorized() -> JsonResponse:
    # The same answer for missing, malformed, unknown and revoked keys: nothing to learn from it.
    response = JsonResponse({"error": "unauthorized"}, status=401)
    response["WWW-Authenticate"] = 'Bearer realm="flagset"'
    return response


@require_GET
def flagset(request: HttpRequest) -> HttpResponse:
    raw = services.bearer_key(request.headers.get("Authorization", ""))
    if raw is None:
        return _unauthorized()
    environment = services.sdk_key_environment(raw)
    if environment is None:
        return _unauthorized()
    services.sdk_key_note_use(raw)
    entry = documents.cached(environment) or documents.publish_latest(environment)
    if entry is None:
        return JsonResponse({"error": "this environment has no flag set yet"}, status=404)
    status, headers, body = documents.conditional(entry, request.headers.get("If-None-Match", ""))
    response = HttpResponse(body, status=status)
    for name, value in headers:
        response[name] = value
    return response
