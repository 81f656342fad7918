"""Telling someone a guard aborted a plan: a JSON POST to settings.ROLLOUT_WEBHOOK_URL, from a
Celery task queued when the abort commits (an abort rolled back tells no one). The POST has a
short timeout (ROLLOUT_WEBHOOK_TIMEOUT_SECONDS) and never fails anything: the abort is done
and audited before it is tried, and an unreachable or refusing endpoint is logged, once, with
its host only (a webhook URL often carries a token in its path or query).

The body: ``{"event": "plan.guard_abort", "plan": {"id", "name", "flag", "status"},
"reason": ..., "restored": {environment: revision}, "verdict": {...the guard's numbers...},
"sent_at": ISO time}``."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from celery import shared_task
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

logger = logging.getLogger("analemma.rollout")

DEFAULT_TIMEOUT_SECONDS = 5.0


def webhook_url() -> str:
    return str(getattr(settings, "ROLLOUT_WEBHOOK_URL", "") or "")


def webhook_host() -> str:
    """Where notifications go, without the path or query that may hold a secret ("" if none)."""
    url = webhook_url()
    return url_host(url) if url else ""


def url_host(url: str) -> str:
    """``url``'s host and port only: never its ``user:password@`` part (which ``netloc`` keeps),
    its path or its query, any of which may hold a secret. "?" when it has no readable host."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:  # a malformed port or bracket: say nothing rather than echo the URL
        return "?"
    if not host:
        return "?"
    if ":" in host:  # an IPv6 literal keeps its brackets, as in a URL
        host = f"[{host}]"
    return f"{host}:{port}" if port is not None else host


def webhook_notify(**payload: Any) -> None:
    """Queue the POST of ``payload`` once the current transaction commits (nothing when no
    webhook is configured)."""
    if not webhook_url():
        return
    body = json.loads(json.dumps({**payload, "sent_at": timezone.now()}, cls=DjangoJSONEncoder))
    transaction.on_commit(lambda: _enqueue(body))


def _enqueue(body: dict[str, Any]) -> None:
    try:
        post_webhook.delay(body)
    except Exception:  # the broker was away: the abort stands, only the notice is lost
        logger.exception("rollout webhook: could not queue the notification")


def webhook_post(body: dict[str, Any], *, url: str | None = None) -> int | None:
    """POST ``body``; the response's status, or None when it could not be delivered."""
    url = url or webhook_url()
    if not url:
        return None
    timeout = float(getattr(settings, "ROLLOUT_WEBHOOK_TIMEOUT_SECONDS", DEFAULT_TIMEOUT_SECONDS))
    try:
        request = urllib.request.Request(
            url,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "User-Agent": "analemma-rollout"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        logger.warning("rollout webhook at %s answered %s", url_host(url), exc.code)
        return int(exc.code)
    except (OSError, ValueError) as exc:
        logger.warning("rollout webhook at %s unreachable: %s", url_host(url), type(exc).__name__)
        return None


@shared_task(name="rollout.post_webhook", ignore_result=True)
def post_webhook(body: dict[str, Any]) -> int | None:
    return webhook_post(body)
