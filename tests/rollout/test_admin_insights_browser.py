"""An operator sees telemetry in a real browser: SDK batches ingested and rolled up per minute,
then the flag page's prod tab shows when the flag was last evaluated and its exposures chart,
and the cleanup view lists a flag that has been off for longer than ROLLOUT_STALE_DAYS."""

from __future__ import annotations

import base64
import time
from datetime import timedelta
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone
from selenium.webdriver.common.by import By

from rollout.models import Environment, Flag, FlagState
from telemetry.services import telemetry_aggregate
from telemetry.sketch import sketch_add, sketch_empty

from ..browser import chromium, log_in, screenshot
from ..factories import UserFactory, sdk_key
from ..telemetry.conftest import make_batch

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("rollout_defaults")]
PASSWORD = "correct-horse-battery-staple"


def units(first: int, count: int) -> str:
    registers = sketch_empty()
    for index in range(first, first + count):
        sketch_add(registers, f"exec-{index}")
    return base64.b64encode(bytes(registers)).decode()


def test_browser__flag_page_chart_and_last_evaluated__cleanup_view_lists_a_stale_flag(
    live_server: Any, client: Any, settings: Any
) -> None:
    settings.ROLLOUT_STALE_DAYS = 30
    _, key = sdk_key(Environment.objects.get(key="prod"), actor="ops")
    # A fleet's batches over the last 40 minutes: use_zstd ramping, about 10 % true.
    now = time.time()
    for minutes_ago in range(40, 0, -2):
        end = (now // 60) * 60 - 60 * minutes_ago + 1
        evaluations = [
            {
                "flag": "use_zstd",
                "variant": None,
                "value": True,
                "reason": "rollout",
                "count": 40 + minutes_ago,
                "units": units(minutes_ago * 10, 30),
            },
            {
                "flag": "use_zstd",
                "variant": None,
                "value": False,
                "reason": "rollout",
                "count": 400 + 5 * minutes_ago,
                "units": units(10_000 + minutes_ago * 100, 300),
            },
        ]
        # The state bag's cohorts of the same minute: the treatment errs a little more.
        cohorts = [
            {
                "cohort": {"use_zstd": on, "use_2pc": True},
                "counters": {"executions": n, "errors": errors, "requests_get": 3 * n},
                "latency_ms": {"hydrate": [[4, n]]},
            }
            for on, n, errors in ((True, 40, 2), (False, 400, 4))
        ]
        body = make_batch(window=[end - 1, end], evaluations=evaluations, statebag=cohorts)
        response = client.post(
            "/api/v1/telemetry", body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}"
        )
        assert response.status_code == 202
    assert telemetry_aggregate().batches == 20
    FlagState.objects.filter(flag__key="use_2pc", environment__key="staging").update(
        updated_at=timezone.now() - timedelta(days=45)
    )

    UserFactory(username="operator", password=PASSWORD, is_staff=True, is_superuser=True)
    flag = Flag.objects.get(key="use_zstd")
    with chromium() as browser:
        log_in(browser, live_server.url, "operator", PASSWORD)
        browser.execute_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
        browser.get(
            f"{live_server.url}{reverse('admin:rollout_flag_change', args=[flag.pk])}?window=1h#env-prod"
        )
        panel = browser.find_element(By.ID, "insights-prod")
        assert panel.is_displayed()  # the prod tab is the one open
        last = browser.find_element(By.ID, "last-evaluated-prod").text
        assert last.startswith("Last evaluated: ") and "ago" in last
        chart = browser.find_element(By.ID, "exposures-prod")
        lines = chart.find_elements(By.CSS_SELECTOR, "polyline.line")
        assert len(lines) == 4  # true and false, evaluations and distinct units
        assert chart.find_element(By.CSS_SELECTOR, "svg").size["height"] > 100
        totals = panel.find_element(By.CSS_SELECTOR, "table.insight-totals").text
        assert "false 10,100" in totals.replace("\n", " ")
        comparison = panel.find_element(
            By.CSS_SELECTOR, 'table.insight-comparison tr[data-metric="error_rate"]'
        )
        assert "n = 800" in comparison.text and "n = 8000" in comparison.text  # 20 batches of each cohort
        browser.execute_script(
            "arguments[0].scrollIntoView({block: 'start'}); window.scrollBy(0, -120)", panel
        )
        screenshot(browser, "flag-page-telemetry")

        browser.get(f"{live_server.url}{reverse('admin:rollout_flag_changelist')}")
        browser.find_element(By.ID, "stale-link").click()
        row = browser.find_element(
            By.CSS_SELECTOR, '#stale-flags tr[data-flag="use_2pc"][data-environment="staging"]'
        )
        assert "off, unchanged for 30+ days" in row.text
        screenshot(browser, "flags-cleanup-candidates")
        row.find_element(By.LINK_TEXT, "use_2pc").click()
        assert browser.find_element(By.ID, "env-panel-staging").is_displayed()
