"""The audit log: one row per change an operator, a command, a plan or a guard made."""

from __future__ import annotations

from django.db import models


class AuditEntry(models.Model):
    environment = models.CharField(
        max_length=64, blank=True, default="", db_index=True, help_text="The environment's key, if any."
    )
    actor = models.CharField(max_length=150, blank=True, default="")
    action = models.CharField(max_length=64, db_index=True, help_text="What happened, as entity.verb.")
    target = models.CharField(max_length=200, blank=True, default="")
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.action} {self.target}"
