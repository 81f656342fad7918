"""Operators read ingestion here: batches stored, dropped by SDKs, refused over the limit."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import IngestionMinute


@admin.register(IngestionMinute)
class IngestionMinuteAdmin(admin.ModelAdmin[IngestionMinute]):
    list_display = ("minute", "environment", "batches", "evaluations", "dropped", "refused", "duplicates")
    list_filter = ("environment",)
    date_hierarchy = "minute"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
