"""A WSGI front for GET /api/v1/flagset that answers warm requests without Django's request
cycle: SDK fleets poll this URL, and on two cores the middleware stack is most of the cost.

It answers only what it can from the cache alone (a cached key and a cached document), the
same way rollout.api.flagset does; everything else — a cold cache, an unknown key, a request
that needs an HTTPS redirect or a host check — goes to Django unchanged.

With a cache every process shares (Redis), each web process also keeps what it read from it
for ROLLOUT_FASTPATH_MEMO_SECONDS (0.25 s by default): a poll then costs no round trip at all,
and a new revision or a revoked key reaches every process within that time. Without one the
cache is process memory already, checked against the database twice a second
(rollout.services.documents), so there is nothing to memoise.

Its answers carry the security headers Django's middleware would have added."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.db import close_old_connections

from core import metrics
from keys.services import key_note_use, key_scope_cached
from keys.tokens import bearer_key

from .api import PATH
from .models import SdkKey
from .services.documents import conditional, document_cached

_STATUS = {200: "200 OK", 304: "304 Not Modified"}
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _Memo:
    """Values read from the shared cache, kept for a short time in this process."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._entries: dict[str, tuple[float, Any]] = {}
        self._clock = clock

    def get(self, key: str, load: Callable[[], Any]) -> Any:
        ttl = getattr(settings, "ROLLOUT_FASTPATH_MEMO_SECONDS", 0.25 if settings.CACHE_SHARED else 0.0)
        now = self._clock()
        hit = self._entries.get(key)
        if hit is not None and now - hit[0] < ttl:
            return hit[1]
        value = load()
        if value is not None and ttl > 0:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[key] = (now, value)
        return value


class FlagsetFastPath:
    def __init__(self, app: WSGIApp, clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self._memo = _Memo(clock)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        answer = None
        if environ.get("PATH_INFO") == PATH:
            try:
                answer = self._answer(environ)
            finally:
                if not settings.CACHE_SHARED:
                    # It may have asked the database whether a flag set changed: recycle
                    # connections as Django does at the end of a request (a restarted
                    # database is then reconnected, not failed on forever).
                    close_old_connections()
        if answer is None:
            return self.app(environ, start_response)
        status, headers, body = answer
        start_response(status, headers)
        return [body]

    def _answer(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes] | None:
        if environ.get("REQUEST_METHOD") != "GET" or not self._secure_enough(environ):
            return None
        host = environ.get("HTTP_HOST", "").rsplit(":", 1)[0]
        if host not in settings.ALLOWED_HOSTS and "*" not in settings.ALLOWED_HOSTS:
            return None
        raw = bearer_key(environ.get("HTTP_AUTHORIZATION", ""))
        if raw is None:
            return None
        environment = self._memo.get("key:" + raw, lambda: key_scope_cached(model=SdkKey, raw=raw))
        if not environment:
            return None
        entry = self._memo.get("env:" + environment, lambda: document_cached(environment_key=environment))
        if entry is None:
            return None
        key_note_use(model=SdkKey, raw=raw)
        status, headers, body = conditional(entry, environ.get("HTTP_IF_NONE_MATCH", ""))
        metrics.flagset_request(status)
        return _STATUS[status], headers + security_headers(self._is_secure(environ)), body

    def _secure_enough(self, environ: dict[str, Any]) -> bool:
        return not getattr(settings, "SECURE_SSL_REDIRECT", False) or self._is_secure(environ)

    def _is_secure(self, environ: dict[str, Any]) -> bool:
        proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
        if proxy and environ.get(proxy[0]) == proxy[1]:
            return True
        return environ.get("wsgi.url_scheme") == "https"


def security_headers(secure: bool) -> list[tuple[str, str]]:
    """What SecurityMiddleware and XFrameOptionsMiddleware add to a response, from the same
    settings: the fast path skips them, not their headers."""
    headers = []
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append(("X-Content-Type-Options", "nosniff"))
    policy = settings.SECURE_REFERRER_POLICY
    if policy:
        value = policy if isinstance(policy, str) else ",".join(policy)
        headers.append(("Referrer-Policy", ",".join(part.strip() for part in value.split(","))))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append(("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY))
    if secure and settings.SECURE_HSTS_SECONDS:
        hsts = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            hsts += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            hsts += "; preload"
        headers.append(("Strict-Transport-Security", hsts))
    headers.append(("X-Frame-Options", getattr(settings, "X_FRAME_OPTIONS", "DENY").upper()))
    return headers
