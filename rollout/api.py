"""GET /api/v1/flagset: the SDK key's environment's current revision, from the cache."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET

from . import documents, services

CACHE_CONTROL = "private, no-cache"  # keep it, but revalidate (If-None-Match) every time


def _unauthorized() -> JsonResponse:
    # The same answer for missing, malformed, unknown and revoked keys: nothing to learn from it.
    response = JsonResponse({"error": "unauthorized"}, status=401)
    response["WWW-Authenticate"] = 'Bearer realm="flagset"'
    return response


@require_GET
def flagset(request: HttpRequest) -> HttpResponse:
    header = request.headers.get("Authorization", "")
    scheme, _, raw = header.partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        return _unauthorized()
    raw = raw.strip()
    environment = services.sdk_key_environment(raw)
    if environment is None:
        return _unauthorized()
    services.sdk_key_note_use(raw)
    entry = documents.cached(environment) or documents.publish_latest(environment)
    if entry is None:
        return JsonResponse({"error": "this environment has no flag set yet"}, status=404)
    wanted = [tag.strip() for tag in request.headers.get("If-None-Match", "").split(",") if tag.strip()]
    if entry["etag"] in wanted or "*" in wanted:
        response = HttpResponse(status=304)
    else:
        response = HttpResponse(entry["body"], content_type="application/json")
    response["ETag"] = entry["etag"]
    response["Cache-Control"] = CACHE_CONTROL
    response["Vary"] = "Authorization"
    return response
