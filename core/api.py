"""The JSON API's edge, shared by every app that serves part of it.

* ``ApiError``: what a view raises when a client must be told something; it becomes
  ``{"error": message, "code": code, ...}`` with its status.
* ``BoundedJsonParser``: request bodies are JSON objects of bounded nesting, without NaN or
  Infinity, so no body can drive a later step into a RecursionError or a non-JSON value.
* ``JsonErrorsMiddleware``: under ``/api/`` every error is JSON with a stable code, even the
  ones Django or a library answers by itself (an unknown path, a wrong method, a CSRF
  refusal, a crash).
* ``database_busy``/``busy_response``: a database that could not take a lock in time is a 503
  with Retry-After, not a crash: the request may be sent again.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from django.conf import settings
from django.core.exceptions import BadRequest, PermissionDenied, SuspiciousOperation
from django.db import OperationalError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from ninja.parser import Parser
from pydantic import BaseModel

logger = logging.getLogger("analemma.api")

API_PREFIX = "/api/"
_DJANGO_ANSWERS = (Http404, PermissionDenied, BadRequest, SuspiciousOperation)
# Deep enough for any state the SDK can encode (its fast JSON encoder stops near 255 levels).
DEFAULT_MAX_JSON_DEPTH = 200
# The code each status gets when nothing more specific was said.
STATUS_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    410: "gone",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    500: "server_error",
    503: "unavailable",
}


class ErrorOut(BaseModel):
    """Every error the API answers: a message for people and a code for programs."""

    error: str
    code: str


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def status_code_name(status: int) -> str:
    return STATUS_CODES.get(status, "server_error" if status >= 500 else "invalid_request")


def error_response(status: int, message: str, code: str | None = None, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": message, "code": code or status_code_name(status), **extra}, status=status)


def api_error_response(error: ApiError) -> JsonResponse:
    return error_response(error.status, error.message, error.code, **error.extra)


def json_depth(value: Any) -> int:
    """How deeply arrays and objects nest in ``value`` (a scalar is 0), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    # 1e400 parses to infinity: no less a non-JSON value than a literal Infinity.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:32]} is out of range")
    return value


def parse_json_object(body: bytes, *, max_depth: int | None = None) -> dict[str, Any]:
    """A request body that must be a JSON object; ApiError(400) otherwise."""
    limit = max_depth or int(getattr(settings, "API_MAX_JSON_DEPTH", DEFAULT_MAX_JSON_DEPTH))
    try:
        value = json.loads(body, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise ApiError(400, "too_deep", f"the body nests deeper than {limit} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"the body must be JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    if json_depth(value) > limit:
        raise ApiError(400, "too_deep", f"the body nests deeper than {limit} levels")
    return value


# Retry-able failures to take a lock: serialization failure, deadlock, lock timeout (PostgreSQL).
_LOCK_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
_SQLITE_LOCKED = ("database is locked", "database table is locked", "database schema is locked")
RETRY_AFTER_SECONDS = 1


def database_busy(exc: BaseException) -> bool:
    """Whether ``exc`` is the database failing to take a lock in time (SQLite once its busy
    timeout has passed, PostgreSQL's lock failures): nothing the client did wrong, and nothing
    was written (the transaction rolled back), so the answer is "retry", not a crash."""
    if not isinstance(exc, OperationalError):
        return False
    if getattr(exc.__cause__, "sqlstate", None) in _LOCK_SQLSTATES:
        return True
    message = str(exc)
    return any(text in message for text in _SQLITE_LOCKED)


def busy_response() -> JsonResponse:
    response = error_response(503, "the database is busy: retry shortly", "unavailable")
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class BoundedJsonParser(Parser):
    def parse_body(self, request: HttpRequest) -> dict[str, Any]:
        return parse_json_object(request.body)


class JsonErrorsMiddleware:
    """Rewrites non-JSON error responses under /api/ as JSON errors with a stable code."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if (
            request.path.startswith(API_PREFIX)
            and response.status_code >= 400
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            return self._as_json(response)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        # Django's own HTTP exceptions get its answers (then made JSON above); only the
        # unexpected ones are answered here.
        if not request.path.startswith(API_PREFIX) or isinstance(exception, _DJANGO_ANSWERS):
            return None
        if isinstance(exception, ApiError):
            return api_error_response(exception)
        if database_busy(exception):
            logger.warning("database busy on %s %s: %s", request.method, request.path, exception)
            return busy_response()
        logger.error("unhandled error on %s %s", request.method, request.path, exc_info=exception)
        return error_response(500, "internal error")

    @staticmethod
    def _as_json(original: HttpResponseBase) -> JsonResponse:
        status = original.status_code
        try:
            message = HTTPStatus(status).phrase.lower()
        except ValueError:
            message = "error"
        response = error_response(status, message)
        for header in ("Allow", "WWW-Authenticate", "Retry-After"):
            if header in original:
                response[header] = original[header]
        return response
