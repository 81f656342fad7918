"""Admin for keys of every kind: created on a page that shows the key once and is never
cached, listed without their hashes, revoked by an action. Never changed or deleted: a
revoked row stays as the record of who had access."""

from __future__ import annotations

from typing import Any, TypeVar

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.decorators.debug import sensitive_variables

from .models import SecretKey
from .services import key_create, key_revoke

K = TypeVar("K", bound=SecretKey)


class OneTimeKeyAdmin(admin.ModelAdmin[K]):
    create_form: type[forms.Form]
    key_element_id = "new-key"
    exclude = ("key_hash",)
    actions = ["revoke"]

    def build_key(self, data: dict[str, Any]) -> K:
        """An unsaved key row with its scope, from the create form's cleaned data."""
        raise NotImplementedError

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in self.model._meta.fields if f.name not in ("id", "key_hash")]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.add_{self.opts.model_name}")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @method_decorator(sensitive_variables())
    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """Create a key and show it on this page only: it is not stored, logged or put in a
        message. The page is rendered here, so an error while rendering it is reported from
        under this frame, whose variables (the key among them) error reports hide."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = self.create_form(request.POST or None)
        raw = None
        if request.method == "POST" and form.is_valid():
            try:
                raw = key_create(key=self.build_key(form.cleaned_data), actor=request.user.get_username())
            except ValidationError as exc:
                form.add_error(None, exc)
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "raw_key": raw,
            "key_element_id": self.key_element_id,
            "changelist_url": reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist"),
            "opts": self.opts,
            "title": _("Create %(name)s") % {"name": self.opts.verbose_name},
        }
        response = TemplateResponse(request, "admin/one_time_key.html", context)
        response["Cache-Control"] = "no-store"
        return response.render()

    @admin.action(description=_("Revoke selected keys"), permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[K]) -> None:
        keys = list(queryset.filter(revoked_at__isnull=True))
        actor = request.user.get_username()
        revoked = sum(key_revoke(key=key, actor=actor) for key in keys)
        self.message_user(request, ngettext("%d key revoked.", "%d keys revoked.", revoked) % revoked)

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.delete_{self.opts.model_name}")
