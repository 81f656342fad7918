"""What SDK keys and write keys share: random, shown once, stored only as a sha256 hash,
revocable, with their last use recorded."""

from __future__ import annotations

import hashlib

from django.db import models


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


class SecretKey(models.Model):
    name = models.CharField(max_length=128, blank=True, default="")
    prefix = models.CharField(max_length=24, help_text="The first characters, to recognise a key.")
    key_hash = models.CharField(max_length=64, unique=True, help_text="sha256 of the key.")
    created_by = models.CharField(max_length=150, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at"]
