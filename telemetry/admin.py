"""Operators read ingestion here (batches stored, dropped by SDKs, refused over the limit) and
when each flag was last evaluated per environment. Both are kept by the aggregation: read only."""

from __future__ import annotations

from typing import Any, TypeVar

from django.contrib import admin
from django.db import models
from django.http import HttpRequest

from .models import FlagActivity, IngestionMinute

M = TypeVar("M", bound=models.Model)


class ReadOnlyAdmin(admin.ModelAdmin[M]):
    """Rows the aggregation writes: nobody adds, changes or deletes them here. No facet counts
    (whole-table COUNTs over tables that grow by the minute)."""

    show_facets = admin.ShowFacets.NEVER

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(IngestionMinute)
class IngestionMinuteAdmin(ReadOnlyAdmin[IngestionMinute]):
    list_display = ("minute", "environment", "batches", "evaluations", "dropped", "refused", "duplicates")
    list_filter = ("environment",)
    date_hierarchy = "minute"


@admin.register(FlagActivity)
class FlagActivityAdmin(ReadOnlyAdmin[FlagActivity]):
    """When each flag was first and last evaluated per environment; the row without a flag is
    the environment's own."""

    list_display = ("flag", "environment", "first_evaluated_at", "last_evaluated_at")
    list_filter = ("environment",)
    search_fields = ("flag",)
    ordering = ("last_evaluated_at",)
