"""An operator drives a rollout from the admin in a real browser, and an SDK key sees each step."""

import pytest
from django.urls import reverse
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from rollout import services
from rollout.models import Environment, Flag, FlagState, Revision

from ..browser import chromium, log_in, screenshot
from ..factories import UserFactory, sdk_key, sdk_key_scope

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("rollout_defaults")]
PASSWORD = "correct-horse-battery-staple"


@pytest.fixture
def browser(live_server):
    UserFactory(username="operator", password=PASSWORD, is_staff=True, is_superuser=True)
    with chromium() as driver:
        log_in(driver, live_server.url, "operator", PASSWORD)
        yield driver


def served(client, key):
    return client.get(reverse("flagset"), HTTP_AUTHORIZATION=f"Bearer {key}").json()["flags"]["use_zstd"]


def test_browser__ramp_to_5_percent_see_diff_roll_back_and_kill(browser, live_server, client):
    prod = Environment.objects.get(key="prod")
    _, raw_sdk_key = sdk_key(prod, actor="ops")
    flag = Flag.objects.get(key="use_zstd")
    before = prod.revisions.order_by("-number").first()
    assert served(client, raw_sdk_key)["enabled"] is False

    # Ramp prod to 5 %, on the flag page's prod tab.
    browser.get(f"{live_server.url}{reverse('admin:rollout_flag_change', args=[flag.pk])}")
    browser.find_element(By.ID, "env-tab-prod").click()
    panel = browser.find_element(By.ID, "env-panel-prod")
    if not panel.find_element(By.CSS_SELECTOR, "input[name$='-enabled']").is_selected():
        panel.find_element(By.CSS_SELECTOR, "label.switch").click()
    Select(panel.find_element(By.CSS_SELECTOR, "select[name$='-value']")).select_by_value("true")
    percentage = panel.find_element(By.CSS_SELECTOR, "input[name$='-percentage']")
    percentage.clear()
    percentage.send_keys("5")
    browser.find_element(By.NAME, "reason").send_keys("canary 5%")
    screenshot(browser, "rollout-ramp-form")
    browser.find_element(By.NAME, "_continue").click()
    screenshot(browser, "rollout-ramp-saved")
    assert "is now at revision" in browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text
    ramped = prod.revisions.order_by("-number").first()
    assert ramped.number == before.number + 1
    assert (served(client, raw_sdk_key)["enabled"], served(client, raw_sdk_key)["percentage"]) == (True, 5.0)

    # The new revision and its diff.
    browser.get(f"{live_server.url}{reverse('admin:rollout_revision_change', args=[ramped.pk])}")
    diff = browser.find_element(By.CSS_SELECTOR, "table.revision-diff").text
    assert "use_zstd" in diff and "percentage" in diff and "5.0" in diff
    screenshot(browser, "rollout-revision-diff")

    # Back to the revision before, for that flag: the preview, then the confirmation.
    browser.get(f"{live_server.url}{reverse('admin:rollout_revision_change', args=[before.pk])}")
    browser.find_element(By.CSS_SELECTOR, "#rollback-flag option[value=use_zstd]").click()
    browser.find_element(By.ID, "rollback-button").click()
    preview = browser.find_element(By.CSS_SELECTOR, "table.rollback-preview").text
    assert "use_zstd" in preview and "percentage" in preview
    screenshot(browser, "rollout-rollback-preview")
    browser.find_element(By.ID, "confirm-rollback").click()
    assert "rolled back" in browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text
    latest = prod.revisions.order_by("-number").first()
    assert latest.rolled_back_to == before.number and latest.document["flags"] == before.document["flags"]
    assert served(client, raw_sdk_key)["enabled"] is False

    # Kill switch from the flag states list.
    services.flag_state_update(
        flag=flag, environment=prod, actor="ops", enabled=True, value=True, percentage="25"
    )
    assert served(client, raw_sdk_key)["enabled"] is True
    state = FlagState.objects.get(flag=flag, environment=prod)
    browser.get(
        f"{live_server.url}{reverse('admin:rollout_flagstate_changelist')}?environment__id__exact={prod.pk}"
    )
    browser.find_element(By.CSS_SELECTOR, f"input[name=_selected_action][value='{state.pk}']").click()
    browser.find_element(By.CSS_SELECTOR, "select[name=action] option[value=kill]").click()
    browser.find_element(By.CSS_SELECTOR, "button[name=index]").click()
    assert "turned off" in browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text
    screenshot(browser, "rollout-killed")
    assert served(client, raw_sdk_key)["enabled"] is False
    assert Revision.objects.filter(environment=prod).order_by("-number").first().number == ramped.number + 3


def test_admin__staff_without_rollout_permissions__cannot_change_flags(client):
    user = UserFactory(username="viewer", password=PASSWORD, is_staff=True)
    client.force_login(user)
    flag = Flag.objects.get(key="use_2pc")
    assert client.get(reverse("admin:rollout_flag_change", args=[flag.pk])).status_code == 403
    revision = Revision.objects.filter(environment__key="prod").first()
    assert client.post(reverse("admin:rollout_revision_rollback", args=[revision.pk])).status_code == 403
    assert client.get(reverse("admin:rollout_sdkkey_add")).status_code == 403


def test_admin__sdk_key_created_in_admin__shown_once_and_works(client):
    user = UserFactory(username="root", password=PASSWORD, is_staff=True, is_superuser=True)
    client.force_login(user)
    prod = Environment.objects.get(key="prod")
    response = client.post(reverse("admin:rollout_sdkkey_add"), {"environment": prod.pk, "name": "lambda"})
    raw = response.content.decode().split('<code id="sdk-key">')[1].split("</code>")[0]
    assert "no-store" in response["Cache-Control"]
    assert sdk_key_scope(raw) == "prod"
    listing = client.get(reverse("admin:rollout_sdkkey_changelist")).content.decode()
    assert raw not in listing
