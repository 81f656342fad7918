"""The audit log, read-only: entries are written by the services that make the changes. Each
reads as a sentence (who did what, to which target, where) with a field-level diff; the raw
JSON stays one click away."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from .models import AuditEntry

# What each action did, in words; an action not listed reads as its own name.
ACTION_LABELS = {
    "flag.create": "created flag",
    "flag.update": "changed flag",
    "flag.kill": "kill switch: turned off",
    "flag.rollback": "rolled back flag",
    "flag.describe": "described flag",
    "flag.tag": "tagged flag",
    "revision.rollback": "restored environment",
    "environment.create": "created environment",
    "environment.rename": "renamed environment",
    "plan.create": "created plan",
    "plan.update": "edited plan",
    "plan.delete": "deleted plan",
    "plan.start": "started plan",
    "plan.pause": "paused plan",
    "plan.resume": "resumed plan",
    "plan.abort": "aborted plan",
    "plan.complete": "completed plan",
    "plan.fail": "plan failed",
    "sdk_key.create": "created SDK key",
    "sdk_key.revoke": "revoked SDK key",
    "write_key.create": "created write key",
    "write_key.revoke": "revoked write key",
}
# Detail keys shown in the diff rather than as facts.
DIFF_KEYS = ("before", "after", "changes")


def action_label(action: str) -> str:
    return ACTION_LABELS.get(action, action.replace(".", " ").replace("_", " "))


def json_text(value: Any) -> str:
    """JSON spelling (``true``, ``null``), never Python's."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def field_changes(detail: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(what, before, after) for every field that differs, as JSON text: from ``before`` and
    ``after`` objects (a nested object is compared one level down, so a flag's spec reads as
    its fields) and from a revision diff in ``changes``."""
    rows: list[tuple[str, str, str]] = []
    before, after = detail.get("before"), detail.get("after")
    if isinstance(before, dict) or isinstance(after, dict):
        old = before if isinstance(before, dict) else {}
        new = after if isinstance(after, dict) else {}
        for field in sorted(set(old) | set(new)):
            if old.get(field) != new.get(field):
                rows.append((field, json_text(old.get(field)), json_text(new.get(field))))
    elif before is not None or after is not None:
        rows.append(("value", json_text(before), json_text(after)))
    for change in detail.get("changes") or []:
        if isinstance(change, dict):
            what = f"{change.get('flag', '')}.{change.get('field', '')}".strip(".")
            rows.append((what, json_text(change.get("before")), json_text(change.get("after"))))
    return rows


def facts(detail: dict[str, Any]) -> list[tuple[str, str]]:
    """The entry's other details (revision, reason, operator, …), as text."""
    return [
        (key, value if isinstance(value, str) else json_text(value))
        for key, value in detail.items()
        if key not in DIFF_KEYS
    ]


def summary(entry: AuditEntry) -> str:
    """One line: who did what, to which target, where, and the fields that changed."""
    detail = entry.detail if isinstance(entry.detail, dict) else {}
    where = f" in {entry.environment}" if entry.environment else ""
    changed = [f"{what} {old} → {new}" for what, old, new in field_changes(detail)]
    reason = detail.get("reason")
    text = f"{entry.actor or 'someone'} {action_label(entry.action)} {entry.target}{where}"
    if changed:
        shown = "; ".join(changed[:3]) + (f"; and {len(changed) - 3} more" if len(changed) > 3 else "")
        text += f": {shown}"
    if reason:
        text += f" (reason: {reason})"
    return text


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin[AuditEntry]):
    show_facets = admin.ShowFacets.NEVER  # facet counts scan whole tables
    list_display = ("created_at", "actor", "what", "target", "environment", "change_summary")
    list_filter = ("action", "environment", "actor")
    search_fields = ("target", "actor")
    fields = (
        "created_at",
        "actor",
        "what",
        "target",
        "environment",
        "sentence",
        "diff",
        "other_details",
        "raw",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="what", ordering="action")
    def what(self, entry: AuditEntry) -> str:
        return format_html('<span title="{}">{}</span>', entry.action, action_label(entry.action))

    @admin.display(description="change")
    def change_summary(self, entry: AuditEntry) -> str:
        detail = entry.detail if isinstance(entry.detail, dict) else {}
        changed = field_changes(detail)
        text = "; ".join(f"{what} {old} → {new}" for what, old, new in changed[:3])
        if len(changed) > 3:
            text += f"; and {len(changed) - 3} more"
        reason = detail.get("reason")
        return f"{text} (reason: {reason})" if reason and text else text or (reason or "")

    @admin.display(description="in words")
    def sentence(self, entry: AuditEntry) -> str:
        return summary(entry)

    @admin.display(description="what changed")
    def diff(self, entry: AuditEntry) -> SafeString | str:
        rows = field_changes(entry.detail if isinstance(entry.detail, dict) else {})
        if not rows:
            return "—"
        body = format_html_join("", "<tr><td>{}</td><td><del>{}</del></td><td><ins>{}</ins></td></tr>", rows)
        return format_html(
            '<table class="audit-diff"><thead><tr><th>field</th><th>before</th><th>after</th></tr>'
            "</thead><tbody>{}</tbody></table>",
            body,
        )

    @admin.display(description="details")
    def other_details(self, entry: AuditEntry) -> SafeString | str:
        rows = facts(entry.detail if isinstance(entry.detail, dict) else {})
        if not rows:
            return "—"
        return format_html(
            '<dl class="audit-facts">{}</dl>', format_html_join("", "<dt>{}</dt><dd>{}</dd>", rows)
        )

    @admin.display(description="raw JSON")
    def raw(self, entry: AuditEntry) -> SafeString:
        text = json.dumps(entry.detail, ensure_ascii=False, indent=2, sort_keys=True)
        return format_html(
            '<details class="audit-raw"><summary>Show the raw JSON</summary><pre>{}</pre></details>', text
        )
