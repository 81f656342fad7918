"""Audit entries read as who did what to which flag, where, with a field-level diff in JSON
spellings; the raw JSON stays one click away; the list's queries do not grow with it."""

from __future__ import annotations

import html
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from audit.admin import field_changes, summary
from audit.models import AuditEntry
from rollout import services
from rollout.models import Environment, Flag

pytestmark = pytest.mark.django_db


def prod() -> Environment:
    return Environment.objects.get(key="prod")


def test_audit__flag_change__a_sentence_and_a_field_diff(admin_client: Any) -> None:
    services.flag_state_update(
        flag=Flag.objects.get(key="use_zstd"),
        environment=prod(),
        actor="alice",
        reason="canary",
        enabled=True,
        value=True,
        percentage="5",
    )
    entry = AuditEntry.objects.get(action="flag.update")
    assert summary(entry) == (
        "alice changed flag use_zstd in prod: enabled false → true; percentage 100.0 → 5.0; "
        "value false → true (reason: canary)"
    )
    page = html.unescape(
        admin_client.get(reverse("admin:audit_auditentry_change", args=[entry.pk])).content.decode()
    )
    assert "<td>percentage</td><td><del>100.0</del></td><td><ins>5.0</ins></td>" in page
    assert "<summary>Show the raw JSON</summary>" in page and '"percentage": 5.0' in page
    assert "False" not in page and "True" not in page
    listed = html.unescape(admin_client.get(reverse("admin:audit_auditentry_changelist")).content.decode())
    assert "changed flag" in listed and "enabled false → true" in listed


def test_audit__rollback__the_changes_it_made(admin_client: Any) -> None:
    start = prod().revisions.order_by("-number").first()
    flag = Flag.objects.get(key="use_2pc")
    services.flag_state_update(flag=flag, environment=prod(), actor="ops", enabled=True, value=True)
    services.flag_rollback(
        environment=prod(), flag_key="use_2pc", number=start.number, actor="bob", reason="oops"
    )
    entry = AuditEntry.objects.get(action="flag.rollback")
    assert field_changes(entry.detail) == [
        ("use_2pc.enabled", "true", "false"),
        ("use_2pc.value", "true", "false"),
    ]
    assert summary(entry) == (
        "bob rolled back flag use_2pc in prod: use_2pc.enabled true → false; use_2pc.value true → false "
        "(reason: oops)"
    )
    page = html.unescape(
        admin_client.get(reverse("admin:audit_auditentry_change", args=[entry.pk])).content.decode()
    )
    assert "<dt>to</dt><dd>" in page  # the other details, as facts


@pytest.mark.parametrize(
    ("detail", "rows"),
    [
        ({}, []),
        ({"before": None, "after": 3}, [("value", "null", "3")]),
        ({"before": {"owner": ""}, "after": {"owner": "web"}}, [("owner", '""', '"web"')]),
        ({"changes": ["not a change"]}, []),
    ],
)
def test_audit__field_changes__any_detail_shape(
    detail: dict[str, Any], rows: list[tuple[str, str, str]]
) -> None:
    assert field_changes(detail) == rows


def test_audit__list_query_count_does_not_grow(admin_client: Any, django_assert_max_num_queries: Any) -> None:
    url = reverse("admin:audit_auditentry_changelist")
    with CaptureQueriesContext(connection) as small:
        admin_client.get(url)
    for percentage in range(1, 60):
        services.flag_state_update(
            flag=Flag.objects.get(key="use_zstd"), environment=prod(), actor="ops", percentage=str(percentage)
        )
    with django_assert_max_num_queries(10):
        admin_client.get(url)
    with CaptureQueriesContext(connection) as large:
        admin_client.get(url)
    assert len(large.captured_queries) == len(small.captured_queries)
