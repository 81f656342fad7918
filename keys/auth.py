"""Authenticating API requests with a key of one kind (a ninja auth callable)."""

from __future__ import annotations

from django.http import HttpRequest
from django.views.decorators.debug import sensitive_variables
from ninja.security import HttpBearer

from core.api import ApiError

from .models import SecretKey
from .services import key_note_use, key_scope
from .tokens import bearer_key


class KeyBearer(HttpBearer):
    """``Authorization: Bearer <key>`` with a valid key of ``model``; ``request.auth`` becomes
    the key's scope. Missing, unknown and revoked keys get the same 401."""

    def __init__(self, model: type[SecretKey], refusal: str) -> None:
        super().__init__()
        self.model = model
        self.refusal = refusal

    # Every frame under these holds the key, under one name or another: hide all of them
    # from error reports.
    @sensitive_variables()
    def __call__(self, request: HttpRequest) -> str:
        # The project's one bearer parser, and no logging of a malformed header (it may be a key).
        return self.authenticate(request, bearer_key(request.headers.get("Authorization", "")) or "")

    @sensitive_variables()
    def authenticate(self, request: HttpRequest, token: str) -> str:
        scope = key_scope(model=self.model, raw=token) if token else None
        if scope is None:
            raise ApiError(401, "unauthorized", self.refusal)
        key_note_use(model=self.model, raw=token)
        return scope
