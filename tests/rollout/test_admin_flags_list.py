"""The flags list: each flag's state in every environment at a glance, search and filters, the
one-click switches (each a revision with a reason, only for those with the flag right), and
a query count that does not grow with the flags shown or stored."""

from __future__ import annotations

import html
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from audit.models import AuditEntry
from rollout import services
from rollout.models import Environment, Flag, FlagState, Revision
from rollout.services.tags import flag_tags_set

from ..factories import UserFactory

pytestmark = pytest.mark.django_db
LIST = "admin:rollout_flag_changelist"
LIST_QUERIES = 12  # session, user, environments, filters' choices, counts, the page, its states


def page(response: Any) -> str:
    assert response.status_code == 200
    return html.unescape(response.content.decode())


def listed(response: Any) -> list[str]:
    return [flag.key for flag in response.context["cl"].result_list]


def bulk_flags(count: int, *, prefix: str = "bulk", tags: str = "") -> None:
    """``count`` flags with a state in every environment, written straight to the tables (the
    list reads only those: no revisions needed to list them)."""
    flags = Flag.objects.bulk_create(
        Flag(
            key=f"{prefix}_{index:05d}",
            kind="boolean",
            default_value=False,
            owner=f"team{index % 7}",
            tags=tags,
        )
        for index in range(count)
    )
    environments = list(Environment.objects.all())
    FlagState.objects.bulk_create(
        FlagState(
            flag=flag,
            environment=environment,
            enabled=index % 2 == 0,
            value=True,
            percentage=Decimal(index % 100 + 1),
            variants=[{"value": True, "weight": 60000}, {"value": False, "weight": 40000}]
            if index % 5 == 0
            else [],
        )
        for index, flag in enumerate(flags)
        for environment in environments
    )


def prod() -> Environment:
    return Environment.objects.get(key="prod")


def test_flags_list__state_per_environment_owner_tags_and_last_change(admin_client: Any) -> None:
    flag = Flag.objects.get(key="use_zstd")
    flag_tags_set(flag=flag, tags="storage, codec", actor="ops")
    services.flag_state_update(
        flag=flag, environment=prod(), actor="ops", enabled=True, value=True, percentage="5"
    )
    services.flag_state_update(
        flag=Flag.objects.get(key="zstd_level"),
        environment=prod(),
        actor="ops",
        enabled=True,
        variants=[{"value": 3, "weight": 50000}, {"value": 9, "weight": 50000}],
    )
    services.flag_state_update(
        flag=Flag.objects.get(key="use_2pc"), environment=prod(), actor="ops", enabled=True, value=True
    )
    shown = page(admin_client.get(reverse(LIST)))
    table = shown.split('id="result_list"')[1].split("</table>")[0]
    rows = {
        key: next(row for row in table.split("<tr")[1:] if f">{key}</a>" in row)
        for key in ("use_zstd", "zstd_level", "use_2pc", "use_batching")
    }
    assert '<span class="state-badge state-ramping"' in rows["use_zstd"] and ">5 %<" in rows["use_zstd"]
    assert ">A/B 3 50 % · 9 50 %<" in rows["zstd_level"]  # a split, never "on 100.00 %"
    assert ">on<" in rows["use_2pc"] and "100.00" not in table
    assert ">off<" in rows["use_batching"]
    assert '<span class="tag">storage</span> <span class="tag">codec</span>' in rows["use_zstd"]
    assert "statebag" in rows["use_zstd"]  # the owner
    assert "False" not in table and "True" not in table  # JSON spellings only
    for environment in ("dev", "staging", "prod"):
        assert f"column-environment_{environment}" in shown


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"q": "zstd"}, ["use_zstd", "zstd_level"]),
        ({"q": "codec"}, ["use_zstd"]),  # a tag
        ({"tag": "codec"}, ["use_zstd"]),
        ({"tag": "storage"}, ["use_2pc", "use_zstd"]),
        ({"tag": "stor"}, []),  # whole tags only
        ({"state": "prod:ramping"}, ["use_zstd"]),
        ({"state": "prod:variants"}, ["zstd_level"]),
        ({"state": "prod:on"}, []),
        ({"state": "prod:off"}, ["use_2pc", "use_batching"]),
        ({"state": "staging:off"}, ["use_2pc", "use_batching", "use_zstd", "zstd_level"]),
        ({"kind": "number"}, ["zstd_level"]),
        ({"owner": "statebag", "state": "prod:off"}, ["use_2pc", "use_batching"]),
        ({"owner": "nobody"}, []),
    ],
)
def test_flags_list__search_and_filters(
    admin_client: Any, query: dict[str, str], expected: list[str]
) -> None:
    flag_tags_set(flag=Flag.objects.get(key="use_zstd"), tags="storage codec", actor="ops")
    flag_tags_set(flag=Flag.objects.get(key="use_2pc"), tags="storage", actor="ops")
    services.flag_state_update(
        flag=Flag.objects.get(key="use_zstd"), environment=prod(), actor="ops", enabled=True, percentage="5"
    )
    services.flag_state_update(
        flag=Flag.objects.get(key="zstd_level"),
        environment=prod(),
        actor="ops",
        enabled=True,
        variants=[{"value": 3, "weight": 50000}, {"value": 9, "weight": 50000}],
    )
    assert listed(admin_client.get(reverse(LIST), query)) == expected


def test_flags_list__kill_with_a_reason__a_revision_and_an_audit_entry(admin_client: Any) -> None:
    flag = Flag.objects.get(key="use_zstd")
    services.flag_state_update(flag=flag, environment=prod(), actor="ops", enabled=True, value=True)
    back = reverse(LIST) + "?q=zstd"
    response = admin_client.post(
        reverse("admin:rollout_flag_switch"),
        {"flag": flag.pk, "environment": prod().pk, "to": "off", "reason": "errors", "next": back},
    )
    assert response.status_code == 302 and response["Location"] == back
    assert not FlagState.objects.get(flag=flag, environment=prod()).enabled
    revision = prod().revisions.order_by("-number").first()
    assert (revision.reason, revision.created_by) == ("errors", "admin")
    assert [c["field"] for c in revision.diff] == ["enabled"]
    assert AuditEntry.objects.filter(action="flag.kill", target="use_zstd").exists()

    response = admin_client.post(
        reverse("admin:rollout_flag_switch"),
        {"flag": flag.pk, "environment": prod().pk, "to": "on", "reason": "fixed"},
    )
    assert response["Location"] == reverse(LIST)
    state = FlagState.objects.get(flag=flag, environment=prod())
    assert (state.enabled, state.value, state.percentage) == (True, True, 100)
    assert prod().revisions.order_by("-number").first().reason == "fixed"


@pytest.mark.parametrize(
    "data",
    [
        {"to": "off", "reason": ""},
        {"to": "off", "reason": "   "},
        {"to": "sideways", "reason": "x"},
        {"to": "off", "reason": "x", "environment": "nope"},
    ],
)
def test_flags_list__switch_without_reason_or_with_bad_fields__nothing_changes(
    admin_client: Any, data: dict[str, str]
) -> None:
    flag = Flag.objects.get(key="use_zstd")
    services.flag_state_update(flag=flag, environment=prod(), actor="ops", enabled=True)
    revisions = Revision.objects.count()
    body = {"flag": flag.pk, "environment": prod().pk, **data}
    response = admin_client.post(reverse("admin:rollout_flag_switch"), body, follow=True)
    assert "Nothing changed" in page(response)
    assert Revision.objects.count() == revisions
    assert FlagState.objects.get(flag=flag, environment=prod()).enabled


def test_flags_list__switch_to_the_state_it_is_in__says_so_and_makes_no_revision(admin_client: Any) -> None:
    flag = Flag.objects.get(key="use_zstd")
    revisions = Revision.objects.count()
    response = admin_client.post(
        reverse("admin:rollout_flag_switch"),
        {"flag": flag.pk, "environment": prod().pk, "to": "off", "reason": "again"},
        follow=True,
    )
    assert "already off" in page(response) and Revision.objects.count() == revisions


def test_flags_list__switch_is_post_only_and_redirects_only_to_this_site(admin_client: Any) -> None:
    flag = Flag.objects.get(key="use_zstd")
    services.flag_state_update(flag=flag, environment=prod(), actor="ops", enabled=True)
    assert admin_client.get(reverse("admin:rollout_flag_switch")).status_code == 405
    response = admin_client.post(
        reverse("admin:rollout_flag_switch"),
        {
            "flag": flag.pk,
            "environment": prod().pk,
            "to": "off",
            "reason": "x",
            "next": "https://evil.example/",
        },
    )
    assert response["Location"] == reverse(LIST)


def test_flags_list__staff_without_the_flag_right__no_switches_and_403(client: Any) -> None:
    client.force_login(UserFactory(is_staff=True, permissions=["rollout.view_flag"]))
    flag = Flag.objects.get(key="use_zstd")
    services.flag_state_update(flag=flag, environment=prod(), actor="ops", enabled=True)
    shown = page(client.get(reverse(LIST)))
    assert "use_zstd" in shown and "flag-switch" not in shown and "flag-switch-dialog" not in shown
    response = client.post(
        reverse("admin:rollout_flag_switch"),
        {"flag": flag.pk, "environment": prod().pk, "to": "off", "reason": "x"},
    )
    assert response.status_code == 403
    assert FlagState.objects.get(flag=flag, environment=prod()).enabled


def test_flags_list__switch_needs_the_csrf_token(client: Any) -> None:
    from django.test import Client

    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(UserFactory(is_staff=True, is_superuser=True))
    flag = Flag.objects.get(key="use_zstd")
    response = csrf_client.post(
        reverse("admin:rollout_flag_switch"),
        {"flag": flag.pk, "environment": prod().pk, "to": "on", "reason": "x"},
    )
    assert response.status_code == 403
    assert not FlagState.objects.get(flag=flag, environment=prod()).enabled


def _queries(client: Any, url: str, query: dict[str, str]) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, query)
    assert response.status_code == 200
    return len(captured.captured_queries)


@pytest.mark.parametrize(
    "query",
    [
        {"all": ""},
        {"all": "", "q": "bulk"},
        {"all": "", "state": "prod:ramping", "tag": "x"},
        {"all": "", "_facets": "True"},  # facet counts would add a count per filter choice
    ],
)
def test_flags_list__query_count_the_same_at_10_and_300_flags(
    admin_client: Any, django_assert_max_num_queries: Any, query: dict[str, str]
) -> None:
    bulk_flags(6, tags="x")
    small = _queries(admin_client, reverse(LIST), query)
    bulk_flags(294, prefix="bulk_more", tags="x y")
    assert Flag.objects.count() == 304 and FlagState.objects.count() == 304 * 3
    with django_assert_max_num_queries(LIST_QUERIES):
        response = admin_client.get(reverse(LIST), query)
    assert _queries(admin_client, reverse(LIST), query) == small
    if "state" not in query:
        assert len(listed(response)) == (300 if "q" in query else 304)


# Emptied afterwards rather than rolled back: the rollback's deferred foreign-key checks of
# 30,000 states take half a minute on PostgreSQL.
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("rollout_defaults")
def test_flags_list__10000_flags__paginated_filtered_and_bounded(
    admin_client: Any, django_assert_max_num_queries: Any
) -> None:
    bulk_flags(10_000, tags="fleet")
    for query in (
        {},
        {"p": "150"},
        {"q": "bulk_0999"},
        {"state": "prod:variants", "tag": "fleet"},
        {"o": "-7"},
    ):
        with django_assert_max_num_queries(LIST_QUERIES):
            response = admin_client.get(reverse(LIST), query)
        assert response.status_code == 200
    first = admin_client.get(reverse(LIST))
    assert len(listed(first)) == 50 and first.context["cl"].result_count == 10_004
    variants = admin_client.get(reverse(LIST), {"state": "prod:variants"})
    assert variants.context["cl"].result_count == 1_000
    searched = admin_client.get(reverse(LIST), {"q": "bulk_0999"})
    assert listed(searched) == [f"bulk_0999{digit}" for digit in range(10)]
