"""The flag page: values typed by the flag's kind, variant weights in percent that must add up
to 100, JSON spellings only, tags, the flag's own history with a rollback that comes back to
the page, and a query count that does not grow with the history."""

from __future__ import annotations

import html
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from audit.models import AuditEntry
from rollout import services
from rollout.models import Environment, Flag, FlagState, Revision

from .admin_forms import flag_add_data, flag_change_data

pytestmark = pytest.mark.django_db
PAGE_QUERIES = 16


def prod() -> Environment:
    return Environment.objects.get(key="prod")


def state(key: str, environment: str = "prod") -> FlagState:
    return FlagState.objects.get(flag__key=key, environment__key=environment)


def change(client: Any, flag: Flag, **kwargs: Any) -> Any:
    return client.post(reverse("admin:rollout_flag_change", args=[flag.pk]), flag_change_data(flag, **kwargs))


def shown(response: Any) -> str:
    return html.unescape(response.content.decode())


@pytest.fixture
def color() -> Flag:
    return services.flag_create(key="checkout_color", kind="string", default_value="blue", actor="ops")


def test_flag_page__string_value_typed_without_quotes(admin_client: Any, color: Flag) -> None:
    response = change(admin_client, color, states={"prod": {"enabled": "on", "value": "dark green"}})
    assert response.status_code == 302
    assert state("checkout_color").value == "dark green"
    page = shown(admin_client.get(reverse("admin:rollout_flag_change", args=[color.pk])))
    assert 'value="dark green"' in page and '"dark green"' not in page.split("served-json")[0]


@pytest.mark.parametrize(
    ("key", "typed", "stored"),
    [
        ("use_zstd", "true", True),
        ("use_zstd", "false", False),
        ("zstd_level", "7", 7),
        ("use_zstd", "", None),
    ],
)
def test_flag_page__boolean_chosen_number_as_number(
    admin_client: Any, key: str, typed: str, stored: Any
) -> None:
    response = change(
        admin_client, Flag.objects.get(key=key), states={"prod": {"enabled": "on", "value": typed}}
    )
    assert response.status_code == 302
    assert state(key).value == stored and type(state(key).value) is type(stored)


@pytest.mark.parametrize(
    ("typed", "problem"),
    [('"7"', "Enter a number"), ("seven", "Enter valid JSON"), ("true", "Enter a number")],
)
def test_flag_page__number_flag_refuses_what_is_not_a_number(
    admin_client: Any, typed: str, problem: str
) -> None:
    revisions = Revision.objects.count()
    response = change(admin_client, Flag.objects.get(key="zstd_level"), states={"prod": {"value": typed}})
    assert response.status_code == 200 and problem in shown(response)
    assert Revision.objects.count() == revisions


def test_flag_page__json_flag_value_as_json(admin_client: Any) -> None:
    flag = services.flag_create(key="limits", kind="json", default_value={"rps": 10}, actor="ops")
    response = change(
        admin_client, flag, states={"prod": {"enabled": "on", "value": '{"rps": 50, "burst": true}'}}
    )
    assert response.status_code == 302
    assert state("limits").value == {"rps": 50, "burst": True}


@pytest.mark.parametrize(
    ("weights", "total"), [((50000, 40000), "90"), ((50000, 50001), "100.001"), ((0, 0), "0")]
)
def test_flag_page__variant_weights_not_adding_up_to_100_percent__refused_in_percent(
    admin_client: Any, color: Flag, weights: tuple[int, int], total: str
) -> None:
    revisions = Revision.objects.count()
    variants = f'[{{"value": "green", "weight": {weights[0]}}}, {{"value": "blue", "weight": {weights[1]}}}]'
    response = change(admin_client, color, states={"prod": {"enabled": "on", "variants": variants}})
    assert response.status_code == 200
    assert f"Variant weights must add up to 100 %; these add up to {total} %." in shown(response)
    assert Revision.objects.count() == revisions and not state("checkout_color").enabled


def test_flag_page__variant_split_saved_in_thousandths_and_listed_as_a_split(
    admin_client: Any, color: Flag
) -> None:
    variants = '[{"value": "green", "weight": 33334}, {"value": "blue", "weight": 66666}]'
    response = change(admin_client, color, states={"prod": {"enabled": "on", "variants": variants}})
    assert response.status_code == 302
    assert state("checkout_color").variants == [
        {"value": "green", "weight": 33334},
        {"value": "blue", "weight": 66666},
    ]
    page = shown(admin_client.get(reverse("admin:rollout_flag_change", args=[color.pk])))
    assert "A/B green 33.334 % · blue 66.666 %" in page
    assert "33.334 % → green" in page and "66.666 % → blue" in page  # the split drawn


def test_flag_page__json_spellings_only_and_the_default_typed(admin_client: Any) -> None:
    flag = Flag.objects.get(key="use_zstd")
    page = shown(admin_client.get(reverse("admin:rollout_flag_change", args=[flag.pk])))
    assert '<code class="flag-value">false</code>' in page
    assert "False" not in page and "True" not in page
    assert '"enabled": false' in page  # the served JSON, one click away


def test_flag_page__environment_tabs_in_order_each_with_its_state(admin_client: Any) -> None:
    services.flag_state_update(
        flag=Flag.objects.get(key="use_zstd"), environment=prod(), actor="ops", enabled=True, percentage="5"
    )
    page = shown(
        admin_client.get(reverse("admin:rollout_flag_change", args=[Flag.objects.get(key="use_zstd").pk]))
    )
    tabs = [page.index(f'id="env-tab-{key}"') for key in ("dev", "staging", "prod")]
    assert tabs == sorted(tabs)
    prod_tab = page.split('id="env-tab-prod"')[1].split("</button>")[0]
    assert "state-ramping" in prod_tab and "5 %" in prod_tab


def test_flag_page__refused_post__tabs_show_the_saved_state_not_the_refused_one(
    admin_client: Any, color: Flag
) -> None:
    variants = '[{"value": "green", "weight": 10}]'
    response = change(admin_client, color, states={"prod": {"enabled": "on", "variants": variants}})
    assert response.status_code == 200
    prod_tab = shown(response).split('id="env-tab-prod"')[1].split("</button>")[0]
    assert "has-errors" in shown(response).split('id="env-tab-prod"')[0].rsplit("<button", 1)[1]
    assert "state-off" in prod_tab


def test_flag_page__tags_saved_normalised_and_audited(admin_client: Any) -> None:
    flag = Flag.objects.get(key="use_zstd")
    response = change(admin_client, flag, tags="Storage, codec storage")
    assert response.status_code == 302
    assert Flag.objects.get(pk=flag.pk).tags == "storage codec"
    entry = AuditEntry.objects.get(action="flag.tag", target="use_zstd")
    assert entry.detail == {"before": {"tags": []}, "after": {"tags": ["storage", "codec"]}}
    revisions = Revision.objects.count()
    response = change(admin_client, flag, tags="not/a tag")
    assert response.status_code == 200 and "is not a tag" in shown(response)
    assert Revision.objects.count() == revisions and Flag.objects.get(pk=flag.pk).tags == "storage codec"


def test_flag_add__with_tags(admin_client: Any) -> None:
    response = admin_client.post(
        reverse("admin:rollout_flag_add"), flag_add_data("checkout", "string", '"a"', tags="web checkout")
    )
    assert response.status_code == 302
    assert Flag.objects.get(key="checkout").tags == "web checkout"


def test_flag_page__history_with_rollback_back_to_the_page(admin_client: Any) -> None:
    flag = Flag.objects.get(key="use_2pc")
    five = services.flag_state_update(
        flag=flag, environment=prod(), actor="ops", reason="canary", enabled=True, value=True, percentage="5"
    )
    fifty = services.flag_state_update(
        flag=flag, environment=prod(), actor="ops", reason="wider", percentage="50"
    )
    url = reverse("admin:rollout_flag_change", args=[flag.pk])
    page = shown(admin_client.get(url))
    panel = page.split('id="env-panel-prod"')[1].split("</section>")[0]
    assert f'data-revision="{fifty.number}"' in panel and f'data-revision="{five.number}"' in panel
    current = panel.split(f'data-revision="{fifty.number}"')[1].split("</tr>")[0]
    assert "current" in current and "rollback-link" not in current
    older = panel.split(f'data-revision="{five.number}"')[1].split("</tr>")[0]
    assert "canary" in older and "<b>percentage</b> <del>100.0</del> → <ins>5.0</ins>" in older
    rollback = older.split('class="button rollback-link" href="')[1].split('"')[0]
    preview = shown(admin_client.get(rollback))
    assert "percentage" in preview.split('class="rollback-preview"')[1]
    latest = prod().revisions.order_by("-number").first().number
    response = admin_client.post(
        rollback.split("?")[0], {"flag": "use_2pc", "latest": latest, "reason": "too early", "next": url}
    )
    assert response.status_code == 302 and response["Location"] == url
    assert float(state("use_2pc").percentage) == 5.0
    assert prod().revisions.order_by("-number").first().rolled_back_to == five.number


def test_flag_page__rollback_next_elsewhere__ignored(admin_client: Any) -> None:
    flag = Flag.objects.get(key="use_2pc")
    start = prod().revisions.order_by("-number").first()
    services.flag_state_update(flag=flag, environment=prod(), actor="ops", enabled=True)
    latest = prod().revisions.order_by("-number").first().number
    response = admin_client.post(
        reverse("admin:rollout_revision_rollback", args=[start.pk]),
        {"flag": "use_2pc", "latest": latest, "next": "https://evil.example/"},
    )
    assert response.status_code == 302 and "evil" not in response["Location"]


def _queries(client: Any, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured.captured_queries)


def test_flag_page__query_count_the_same_with_a_long_history(
    admin_client: Any, django_assert_max_num_queries: Any
) -> None:
    flag = Flag.objects.get(key="use_zstd")
    url = reverse("admin:rollout_flag_change", args=[flag.pk])
    short = _queries(admin_client, url)
    for percentage in range(1, 40):
        for environment in Environment.objects.all():
            services.flag_state_update(
                flag=flag, environment=environment, actor="ops", enabled=True, percentage=str(percentage)
            )
    with django_assert_max_num_queries(PAGE_QUERIES):
        page = shown(admin_client.get(url))
    assert _queries(admin_client, url) == short
    assert page.split('id="env-panel-prod"')[1].count('class="history-entry') == 20  # the latest 20 here
