"""The JSON API at /api/v1/, assembled from the apps' routers, with one way to answer errors
and one generated description (/api/v1/openapi.json) that covers every route — the flag-set
endpoint too, which stays a plain Django view with its WSGI fast path."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.openapi.schema import OpenAPISchema

from analemma_sdk.flags.spec import json_schemas
from core.api import (
    ApiError,
    BoundedJsonParser,
    api_error_response,
    busy_response,
    database_busy,
    error_response,
)
from rollout import api as flagset_api
from statebag.api import router as statebag_router
from telemetry.api import router as telemetry_router

logger = logging.getLogger("analemma.api")


class AnalemmaAPI(NinjaAPI):
    def get_openapi_schema(self, *, path_prefix: str | None = None, path_params: Any = None) -> OpenAPISchema:
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        components = schema.setdefault("components", {})
        components.setdefault("schemas", {}).update(json_schemas())
        components.setdefault("securitySchemes", {}).update(flagset_api.OPENAPI_SECURITY)
        schema["paths"][flagset_api.PATH] = flagset_api.openapi_path_item()
        return schema


api = AnalemmaAPI(
    title="Analemma StateBag & Rollout API",
    version="1",
    urls_namespace="api",
    docs_url=None,  # the description is served; a docs page would load scripts from elsewhere
    parser=BoundedJsonParser(),
)
api.add_router("/statebag", statebag_router)
api.add_router("/telemetry", telemetry_router)


@api.exception_handler(ApiError)
def _api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
    return api_error_response(exc)


def _location(loc: Any) -> list[str]:
    """Where a problem is: ["body", "packs", "0", "size"], ["path", "txn_id"]. The layer puts
    the body parameter's own name after "body"; a client never sees that name."""
    parts = [str(part) for part in loc]
    return parts[:1] + parts[2:] if parts[:1] == ["body"] else parts


@api.exception_handler(ValidationError)
def _invalid(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    problems = [
        {"loc": _location(error.get("loc", ())), "msg": str(error.get("msg", ""))} for error in exc.errors
    ]
    summary = "; ".join(f"{'.'.join(p['loc'][1:]) or 'body'}: {p['msg']}" for p in problems[:5])
    return error_response(400, f"invalid request: {summary}", "invalid_request", problems=problems)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return error_response(401, "authentication required", "unauthorized")


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    if isinstance(exc.__cause__, ApiError):  # the body parser's refusal, wrapped by the layer
        return api_error_response(exc.__cause__)
    return error_response(exc.status_code, str(exc))


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return error_response(404, "not found")


@api.exception_handler(RequestDataTooBig)
def _too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return error_response(413, f"the request body is over {limit} bytes", "payload_too_large")


@api.exception_handler(SuspiciousOperation)
def _suspicious(request: HttpRequest, exc: SuspiciousOperation) -> HttpResponse:
    return error_response(400, "the request was refused as malformed", "invalid_request")


@api.exception_handler(Exception)
def _crashed(request: HttpRequest, exc: Exception) -> HttpResponse:
    if database_busy(exc):  # a lock not taken in time: retry, not a crash
        logger.warning("database busy on %s %s: %s", request.method, request.path, exc)
        return busy_response()
    logger.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return error_response(500, "internal error")
