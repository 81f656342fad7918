"""Key material: how a secret is made, stored (sha256) and presented (a bearer header)."""

from __future__ import annotations

import hashlib
import secrets

from django.views.decorators.debug import sensitive_variables


def new_secret() -> str:
    return secrets.token_urlsafe(32)


@sensitive_variables("raw")
def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


@sensitive_variables("authorization", "raw")
def bearer_key(authorization: str) -> str | None:
    """The key from an ``Authorization: Bearer <key>`` header, or None."""
    scheme, _, raw = authorization.partition(" ")
    raw = raw.strip()
    return raw if scheme.lower() == "bearer" and raw else None
