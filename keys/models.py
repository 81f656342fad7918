"""What every key kind shares: random, shown once, stored only as a sha256 hash, revocable,
with its last use recorded. Each kind is a concrete model in the app it grants access to
(SDK keys read one environment's flag set, write keys write one owner's state) and says
what it is scoped to; the services in ``keys.services`` create, revoke and resolve all kinds
the same way."""

from __future__ import annotations

from typing import ClassVar

from django.db import models


class SecretKey(models.Model):
    # The kind's name in audit actions and cache keys, e.g. "sdk_key".
    kind: ClassVar[str]
    # The lookup path of what a key is scoped to, e.g. "owner_id" or "environment__key".
    scope_field: ClassVar[str]

    name = models.CharField(max_length=128, blank=True, default="")
    prefix = models.CharField(max_length=96, help_text="The first characters, to recognise a key.")
    key_hash = models.CharField(max_length=64, unique=True, help_text="sha256 of the key.")
    created_by = models.CharField(max_length=150, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at"]

    def compose(self, secret: str) -> str:
        """The key's text around a fresh ``secret``."""
        raise NotImplementedError

    def prefix_of(self, raw: str) -> str:
        """The part of the key that may be shown and stored in clear, to recognise it."""
        raise NotImplementedError

    def scope(self) -> str:
        """What the key grants access to: an environment key, an owner id."""
        raise NotImplementedError

    def audit_environment(self) -> str:
        """The environment key its audit entries are filed under, if any."""
        return ""
