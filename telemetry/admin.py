"""Operators read ingestion here (batches stored, dropped by SDKs, refused over the limit) and
when each flag was last evaluated per environment."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import FlagActivity, IngestionMinute


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


@admin.register(FlagActivity)
class FlagActivityAdmin(admin.ModelAdmin[FlagActivity]):
    """When each flag was first and last evaluated per environment (kept by the aggregation);
    the row without a flag is the environment's own. Read only."""

    list_display = ("flag", "environment", "first_evaluated_at", "last_evaluated_at")
    list_filter = ("environment",)
    search_fields = ("flag",)
    ordering = ("last_evaluated_at",)
    show_facets = admin.ShowFacets.NEVER

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
