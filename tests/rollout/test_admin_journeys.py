"""Operator journeys through the rollout admin in a real headless Chromium, each checked by
what an SDK key of the environment is then served (GET /api/v1/flagset). Screenshots of each
journey land in test-artifacts/."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from audit.models import AuditEntry
from rollout import services
from rollout.models import Environment, Flag, Revision, RolloutPlan
from rollout.services.tags import flag_tags_set

from ..browser import chromium, log_in, screenshot
from ..factories import UserFactory, sdk_key

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("rollout_defaults")]
PASSWORD = "correct-horse-battery-staple"


@pytest.fixture
def browser(live_server: Any) -> Iterator[Any]:
    UserFactory(username="operator", password=PASSWORD, is_staff=True, is_superuser=True)
    with chromium() as driver:
        log_in(driver, live_server.url, "operator", PASSWORD)
        # The navigation sidebar folded: the pages get the width (and the screenshots show them).
        driver.execute_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
        yield driver


@pytest.fixture
def keys() -> dict[str, str]:
    """An SDK key of every environment, by environment key."""
    return {environment.key: sdk_key(environment)[1] for environment in Environment.objects.all()}


def served(client: Any, raw_key: str, flag_key: str) -> dict[str, Any]:
    response = client.get(reverse("flagset"), HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    assert response.status_code == 200
    flag: dict[str, Any] = response.json()["flags"][flag_key]
    return flag


def shot(browser: Any, name: str, element: Any = None) -> None:
    """A screenshot, scrolled to ``element`` when given (the part of the page the step is about)."""
    if element is not None:
        browser.execute_script(
            "arguments[0].scrollIntoView({block: 'start'}); window.scrollBy(0, -10)", element
        )
    screenshot(browser, name)


def wait_for_url(browser: Any, part: str) -> None:
    """Until the browser has navigated to a URL containing ``part``."""
    WebDriverWait(browser, 10).until(lambda driver: part in driver.current_url)


def wait_for_status(browser: Any, expected: str) -> None:
    """Until the plan page shown (after a button's POST and redirect) says ``expected``."""
    WebDriverWait(browser, 10, ignored_exceptions=[StaleElementReferenceException]).until(
        lambda driver: driver.find_element(By.ID, "plan-status").text == expected
    )


def open_page(browser: Any, live_server: Any, url: str) -> None:
    browser.get(f"{live_server.url}{url}")


def message(browser: Any) -> str:
    text: str = browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text
    return text


def flag_page(browser: Any, live_server: Any, flag: Flag, environment: str) -> Any:
    """The flag's page on ``environment``'s tab; returns that tab's panel."""
    open_page(browser, live_server, reverse("admin:rollout_flag_change", args=[flag.pk]))
    browser.find_element(By.ID, f"env-tab-{environment}").click()
    panel = browser.find_element(By.ID, f"env-panel-{environment}")
    assert panel.is_displayed()
    return panel


def switch_on(panel: Any) -> None:
    """Turn the environment's Enabled toggle on (the visible switch, not the hidden box)."""
    if not panel.find_element(By.CSS_SELECTOR, "input[name$='-enabled']").is_selected():
        panel.find_element(By.CSS_SELECTOR, "label.switch").click()


def save(browser: Any, reason: str) -> None:
    browser.find_element(By.NAME, "reason").send_keys(reason)
    browser.find_element(By.NAME, "_continue").click()


def switch_from_list(browser: Any, flag_key: str, environment: str, reason: str) -> None:
    """Press a flag's switch in the list, give the reason in the dialog, confirm."""
    button = browser.find_element(
        By.CSS_SELECTOR,
        f"button.flag-switch[data-flag-key='{flag_key}'][data-environment-key='{environment}']",
    )
    button.click()
    dialog = browser.find_element(By.ID, "flag-switch-dialog")
    WebDriverWait(browser, 5).until(lambda _: dialog.get_attribute("open") is not None)
    browser.find_element(By.ID, "flag-switch-reason").send_keys(reason)
    return None


def test_journey__find_a_flag_by_search_and_filter__kill_it_from_the_list__turn_it_back_on(
    browser: Any, live_server: Any, client: Any, keys: dict[str, str]
) -> None:
    prod = Environment.objects.get(key="prod")
    flag = Flag.objects.get(key="use_zstd")
    flag_tags_set(flag=flag, tags="storage compression", actor="ops")
    services.flag_state_update(
        flag=flag, environment=prod, actor="ops", enabled=True, value=True, percentage="100"
    )
    assert served(client, keys["prod"], "use_zstd")["enabled"] is True

    # Search by a word of the description, then narrow with the state filter.
    open_page(browser, live_server, reverse("admin:rollout_flag_changelist"))
    search = browser.find_element(By.ID, "searchbar")
    search.send_keys("zstd", Keys.ENTER)
    wait_for_url(browser, "q=zstd")
    rows = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    assert {row.find_element(By.CSS_SELECTOR, "th a").text for row in rows} == {"use_zstd", "zstd_level"}
    browser.find_element(By.LINK_TEXT, "prod: on for everyone").click()
    wait_for_url(browser, "state=prod%3Aon")
    rows = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    assert [row.find_element(By.CSS_SELECTOR, "th a").text for row in rows] == ["use_zstd"]
    assert "compression" in rows[0].text and "statebag" in rows[0].text  # its tags and owner
    screenshot(browser, "journey-flags-list-found")

    # Kill it in prod from the list, with a reason.
    switch_from_list(browser, "use_zstd", "prod", "p99 latency doubled")
    screenshot(browser, "journey-flags-list-kill-dialog")
    browser.find_element(By.ID, "flag-switch-confirm").click()
    assert "Switched off: use_zstd in prod" in message(browser)
    assert served(client, keys["prod"], "use_zstd")["enabled"] is False
    killed = Revision.objects.filter(environment=prod).order_by("-number").first()
    assert killed.reason == "p99 latency doubled" and killed.created_by == "operator"
    assert AuditEntry.objects.filter(action="flag.kill", target="use_zstd", actor="operator").exists()
    # The list came back with its search and filter kept: the flag no longer matches "on".
    assert "q=zstd" in browser.current_url and "state=prod%3Aon" in browser.current_url
    assert not browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr th a")

    # Find it with the "off" filter and turn it back on.
    open_page(browser, live_server, reverse("admin:rollout_flag_changelist") + "?q=zstd")
    browser.find_element(By.LINK_TEXT, "prod: off").click()
    wait_for_url(browser, "state=prod%3Aoff")
    assert "use_zstd" in browser.find_element(By.ID, "result_list").text
    screenshot(browser, "journey-flags-list-killed")
    switch_from_list(browser, "use_zstd", "prod", "latency fixed in 1.4.2")
    browser.find_element(By.ID, "flag-switch-confirm").click()
    assert "Switched on: use_zstd in prod" in message(browser)
    back_on = served(client, keys["prod"], "use_zstd")
    assert (back_on["enabled"], back_on["value"], back_on["percentage"]) == (True, True, 100.0)
    open_page(browser, live_server, reverse("admin:rollout_flag_changelist") + "?q=use_zstd")
    badge = browser.find_element(By.CSS_SELECTOR, ".state-cell[data-environment-key='prod'] .state-badge")
    assert badge.text == "on"
    screenshot(browser, "journey-flags-list-back-on")
    assert served(client, keys["staging"], "use_zstd")["enabled"] is False  # other environments untouched


def test_journey__switch_without_a_reason__refused_by_the_dialog_and_nothing_changes(
    browser: Any, live_server: Any, client: Any, keys: dict[str, str]
) -> None:
    revisions = Revision.objects.count()
    open_page(browser, live_server, reverse("admin:rollout_flag_changelist"))
    browser.find_element(
        By.CSS_SELECTOR, "button.flag-switch[data-flag-key='use_2pc'][data-environment-key='prod']"
    ).click()
    browser.find_element(By.ID, "flag-switch-confirm").click()  # the reason is required
    assert browser.find_element(By.ID, "flag-switch-dialog").get_attribute("open") is not None
    assert Revision.objects.count() == revisions
    assert served(client, keys["prod"], "use_2pc")["enabled"] is False


def test_journey__edit_a_percentage_with_the_structured_editor(
    browser: Any, live_server: Any, client: Any, keys: dict[str, str]
) -> None:
    flag = Flag.objects.get(key="use_zstd")
    panel = flag_page(browser, live_server, flag, "prod")
    switch_on(panel)
    panel.find_element(By.CSS_SELECTOR, "select[name$='-value']").send_keys("true")
    percentage = panel.find_element(By.CSS_SELECTOR, "input[name$='-percentage']")
    percentage.clear()
    percentage.send_keys("25")
    legend = panel.find_element(By.CSS_SELECTOR, ".split-legend").text
    assert "25 % → true" in legend and "75 % → false (default)" in legend  # the split, drawn as typed
    widths = [
        rect.get_attribute("width") for rect in panel.find_elements(By.CSS_SELECTOR, "svg.split-bar rect")
    ]
    assert widths == ["25", "75"]
    shot(browser, "journey-flag-page-percentage", panel)
    save(browser, "canary 25%")
    assert "use_zstd is now at revision" in message(browser)
    flag_served = served(client, keys["prod"], "use_zstd")
    assert (flag_served["enabled"], flag_served["value"], flag_served["percentage"]) == (True, True, 25.0)
    assert served(client, keys["staging"], "use_zstd")["enabled"] is False
    # The page came back on the same tab, the badge saying what is served.
    tab = browser.find_element(By.ID, "env-tab-prod")
    assert "25 %" in tab.text


def test_journey__edit_a_variant_split__a_split_short_of_100_percent_is_refused(
    browser: Any, live_server: Any, client: Any, keys: dict[str, str]
) -> None:
    flag = services.flag_create(key="checkout_color", kind="string", default_value="blue", actor="ops")
    panel = flag_page(browser, live_server, flag, "prod")
    switch_on(panel)
    for _ in range(2):
        panel.find_element(By.CSS_SELECTOR, "button.add-variants").click()
    rows = panel.find_elements(By.CSS_SELECTOR, "[data-editor=variants] tr.list-row")
    for row, (value, weight) in zip(rows, [("green", "50"), ("blue", "40")], strict=True):
        row.find_element(By.CSS_SELECTOR, ".variant-value").send_keys(value)  # typed plainly: no quotes
        weight_input = row.find_element(By.CSS_SELECTOR, ".variant-weight")
        weight_input.clear()
        weight_input.send_keys(weight)
    total = panel.find_element(By.CSS_SELECTOR, ".variant-total")
    assert total.text == "Total: 90 % (must be 100 %)" and "bad" in total.get_attribute("class")
    save(browser, "A/B the button")
    panel = browser.find_element(By.ID, "env-panel-prod")
    assert panel.is_displayed()  # the tab with the error is the one shown
    assert "Variant weights must add up to 100 %; these add up to 90 %." in panel.text
    shot(browser, "journey-flag-page-variants-refused", panel)
    assert served(client, keys["prod"], "checkout_color")["enabled"] is False  # nothing saved

    # The raw JSON holds what the editor wrote, in thousandths of a percent.
    panel.find_element(By.CSS_SELECTOR, ".raw-toggle").click()
    raw = panel.find_element(By.CSS_SELECTOR, "textarea[name$='-variants']")
    assert (
        raw.get_attribute("value")
        == '[{"value": "green", "weight": 50000}, {"value": "blue", "weight": 40000}]'
    )
    panel.find_element(By.CSS_SELECTOR, ".raw-toggle").click()
    # Back in the editor, fix the split.
    rows = panel.find_elements(By.CSS_SELECTOR, "[data-editor=variants] tr.list-row")
    weight_input = rows[1].find_element(By.CSS_SELECTOR, ".variant-weight")
    weight_input.clear()
    weight_input.send_keys("50")
    assert panel.find_element(By.CSS_SELECTOR, ".variant-total").text == "Total: 100 %"
    assert "these add up to 90 %" not in panel.text  # the refusal is gone once the split is edited
    legend = panel.find_element(By.CSS_SELECTOR, ".split-legend").text
    assert "50 % → green" in legend and "50 % → blue" in legend
    shot(browser, "journey-flag-page-variants", panel)
    browser.find_element(By.NAME, "_continue").click()
    assert "checkout_color is now at revision" in message(browser)
    flag_served = served(client, keys["prod"], "checkout_color")
    assert flag_served["enabled"] is True
    assert flag_served["variants"] == [
        {"value": "green", "weight": 50000},
        {"value": "blue", "weight": 50000},
    ]
    # Listed as a split, not as "on 100 %".
    open_page(browser, live_server, reverse("admin:rollout_flag_changelist") + "?q=checkout")
    badge = browser.find_element(
        By.CSS_SELECTOR, ".state-cell[data-environment-key='prod'] .state-badge"
    ).text
    assert badge == "A/B green 50 % · blue 50 %"


def test_journey__edit_a_string_flag_without_quoting__with_a_target_and_a_rule(
    browser: Any, live_server: Any, client: Any, keys: dict[str, str]
) -> None:
    flag = services.flag_create(key="banner_text", kind="string", default_value="Welcome", actor="ops")
    panel = flag_page(browser, live_server, flag, "staging")
    switch_on(panel)
    value = panel.find_element(By.CSS_SELECTOR, "input[name$='-value']")
    value.clear()
    value.send_keys("Winter sale: 20% off")
    # A target: two units get another text, typed plainly too.
    panel.find_element(By.CSS_SELECTOR, "button.add-targets").click()
    target = panel.find_element(By.CSS_SELECTOR, "[data-editor=targets] tr.list-row")
    target.find_element(By.CSS_SELECTOR, ".target-units").send_keys("exec-1, exec-2")
    target.find_element(By.CSS_SELECTOR, ".target-value").send_keys("Hello, tester")
    # A rule: executions of two workflows get a third text.
    panel.find_element(By.CSS_SELECTOR, "button.add-rules").click()
    rule = panel.find_element(By.CSS_SELECTOR, "[data-editor=rules] tr.list-row")
    rule.find_element(By.CSS_SELECTOR, ".rule-attribute").send_keys("workflow_id")
    Select(rule.find_element(By.CSS_SELECTOR, ".rule-op")).select_by_value("in")
    rule.find_element(By.CSS_SELECTOR, ".rule-values").send_keys("wf-a, wf-b")
    rule.find_element(By.CSS_SELECTOR, ".rule-value").send_keys("Hello, workflow")
    shot(browser, "journey-flag-page-string", panel)
    save(browser, "winter banner")
    assert "banner_text is now at revision" in message(browser)
    flag_served = served(client, keys["staging"], "banner_text")
    assert (flag_served["enabled"], flag_served["value"]) == (True, "Winter sale: 20% off")
    assert flag_served["targets"] == [{"units": ["exec-1", "exec-2"], "value": "Hello, tester"}]
    assert flag_served["rules"] == [
        {"attribute": "workflow_id", "op": "in", "values": ["wf-a", "wf-b"], "value": "Hello, workflow"}
    ]
    # Shown back as typed, without quotes; the default too.
    panel = browser.find_element(By.ID, "env-panel-staging")
    assert (
        panel.find_element(By.CSS_SELECTOR, "input[name$='-value']").get_attribute("value")
        == "Winter sale: 20% off"
    )
    assert browser.find_element(By.CSS_SELECTOR, "code.flag-value").text == "Welcome"


def test_journey__roll_one_flag_back_from_its_page_with_a_preview(
    browser: Any, live_server: Any, client: Any, keys: dict[str, str]
) -> None:
    prod = Environment.objects.get(key="prod")
    flag = Flag.objects.get(key="use_2pc")
    five = services.flag_state_update(
        flag=flag, environment=prod, actor="ops", reason="canary", enabled=True, value=True, percentage="5"
    )
    services.flag_state_update(flag=flag, environment=prod, actor="ops", reason="wider", percentage="50")
    other = services.flag_state_update(
        flag=Flag.objects.get(key="use_batching"), environment=prod, actor="bob", enabled=True, value=True
    )
    assert served(client, keys["prod"], "use_2pc")["percentage"] == 50.0

    panel = flag_page(browser, live_server, flag, "prod")
    entry = panel.find_element(By.CSS_SELECTOR, f"tr.history-entry[data-revision='{five.number}']")
    assert "canary" in entry.text and "percentage" in entry.text
    shot(browser, "journey-flag-history", panel.find_element(By.CSS_SELECTOR, ".flag-history"))
    entry.find_element(By.CSS_SELECTOR, "a.rollback-link").click()
    preview = browser.find_element(By.CSS_SELECTOR, "table.rollback-preview").text
    assert "use_2pc" in preview and "percentage" in preview and "50.0" in preview and "5.0" in preview
    assert "use_batching" not in preview  # only this flag goes back
    screenshot(browser, "journey-rollback-preview")
    browser.find_element(By.ID, "rollback-reason").send_keys("50% was too early")
    browser.find_element(By.ID, "confirm-rollback").click()
    assert "rolled back to r" in message(browser)
    assert f"/admin/rollout/flag/{flag.pk}/change/" in browser.current_url  # back on the flag's page
    flag_served = served(client, keys["prod"], "use_2pc")
    assert (flag_served["enabled"], flag_served["percentage"]) == (True, 5.0)
    assert served(client, keys["prod"], "use_batching")["enabled"] is True  # bob's change stays
    latest = prod.revisions.order_by("-number").first()
    assert latest.rolled_back_to == five.number and latest.number == other.number + 1


def test_journey__run_a_plan_from_its_page__start_pause_resume_abort(
    browser: Any, live_server: Any, client: Any, keys: dict[str, str]
) -> None:
    flag = Flag.objects.get(key="use_batching")
    staging, prod = Environment.objects.get(key="staging"), Environment.objects.get(key="prod")
    plan = services.plan_create(
        name="batching to prod",
        flag=flag,
        value=True,
        steps=[
            {"environment": staging, "percentage": 100, "min_soak_seconds": 3600},
            {"environment": prod, "percentage": 5},
        ],
        actor="ops",
    )
    page = reverse("admin:rollout_rolloutplan_change", args=[plan.pk])
    open_page(browser, live_server, page)
    assert browser.find_element(By.ID, "plan-status").text == "Draft"
    assert "No guard configured" in browser.find_element(By.ID, "plan-guards").text

    browser.find_element(By.ID, "plan-start").click()
    wait_for_status(browser, "Running")
    assert "started" in message(browser)
    steps = browser.find_elements(By.CSS_SELECTOR, "#plan-timeline li.timeline-step")
    assert "current" in steps[0].get_attribute("class") and "next" in steps[1].get_attribute("class")
    due = timezone.localtime(
        RolloutPlan.objects.get(pk=plan.pk).steps.get(position=0).applied_at + timedelta(hours=1)
    )
    assert f"due {due:%Y-%m-%d %H:%M}" in browser.find_element(By.ID, "plan-next").text
    assert "step 1: prod at 5 %" in browser.find_element(By.ID, "plan-next").text
    screenshot(browser, "journey-plan-running")
    assert served(client, keys["staging"], "use_batching")["enabled"] is True
    assert served(client, keys["prod"], "use_batching")["enabled"] is False

    browser.find_element(By.ID, "plan-pause").click()
    wait_for_status(browser, "Paused")
    assert "paused; once resumed" in browser.find_element(By.ID, "plan-next").text
    assert not browser.find_elements(By.ID, "plan-pause")
    browser.find_element(By.ID, "plan-resume").click()
    wait_for_status(browser, "Running")

    browser.find_element(By.ID, "plan-abort-reason").send_keys("error rate up in staging")
    browser.find_element(By.ID, "plan-abort").click()
    wait_for_status(browser, "Aborted")
    assert "error rate up in staging" in browser.find_element(By.ID, "plan-panel").text
    screenshot(browser, "journey-plan-aborted")
    assert served(client, keys["staging"], "use_batching")["enabled"] is False  # restored
    assert not browser.find_elements(By.CSS_SELECTOR, ".plan-operation")  # nothing left to press
    actions = list(
        AuditEntry.objects.filter(target="batching to prod").order_by("pk").values_list("action", flat=True)
    )
    assert actions == ["plan.create", "plan.start", "plan.pause", "plan.resume", "plan.abort"]


def test_journey__audit_entry_reads_as_a_sentence_with_raw_json_one_click_away(
    browser: Any, live_server: Any
) -> None:
    prod = Environment.objects.get(key="prod")
    services.flag_state_update(
        flag=Flag.objects.get(key="zstd_level"), environment=prod, actor="alice", reason="denser", value=9
    )
    entry = AuditEntry.objects.get(action="flag.update", target="zstd_level")
    open_page(browser, live_server, reverse("admin:audit_auditentry_changelist"))
    listed = browser.find_element(By.ID, "result_list").text
    assert "changed flag" in listed and "value 3 → 9" in listed
    open_page(browser, live_server, reverse("admin:audit_auditentry_change", args=[entry.pk]))
    content = browser.find_element(By.ID, "content-main")
    assert "alice changed flag zstd_level in prod: value 3 → 9 (reason: denser)" in content.text
    raw = browser.find_element(By.CSS_SELECTOR, "details.audit-raw pre")
    assert not raw.is_displayed()
    browser.find_element(By.CSS_SELECTOR, "details.audit-raw summary").click()
    WebDriverWait(browser, 5).until(expected_conditions.visibility_of(raw))
    assert '"reason": "denser"' in raw.text
    screenshot(browser, "journey-audit-entry")
