"""An operator browses the state bag admin in a real browser."""

import pytest
from selenium.webdriver.common.by import By

from ..browser import chromium, screenshot
from ..factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)
PASSWORD = "correct-horse-battery-staple"


@pytest.fixture
def browser():
    with chromium() as driver:
        yield driver


def log_in(browser, live_server, username):
    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys(username)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()


def test_browser__staff_opens_execution_then_manifest__sees_verified_chain(
    browser, live_server, recorded_execution
):
    UserFactory(username="operator", password=PASSWORD, is_staff=True, is_superuser=True)
    log_in(browser, live_server, "operator")
    browser.get(f"{live_server.url}/admin/statebag/execution/")
    browser.find_element(By.LINK_TEXT, "exec-recorded").click()
    screenshot(browser, "statebag-execution")
    browser.find_element(By.PARTIAL_LINK_TEXT, "v3 ").click()
    chain = browser.find_element(By.CSS_SELECTOR, "ol.statebag-chain")
    screenshot(browser, "statebag-manifest-chain")
    items = chain.find_elements(By.TAG_NAME, "li")
    assert [item.text.split()[0] for item in items] == ["v3", "v2", "v1"]
    assert all("hash verified" in item.text for item in items)
    assert recorded_execution.head.hash[:16] in browser.page_source


def test_browser__non_staff_user__cannot_enter_admin(browser, live_server, recorded_execution):
    UserFactory(username="visitor", password=PASSWORD)
    log_in(browser, live_server, "visitor")
    error = browser.find_element(By.CSS_SELECTOR, ".errornote")  # waits for the page after the POST
    assert "Please enter the correct username and password for a staff account" in error.text
    browser.get(f"{live_server.url}/admin/statebag/manifest/")
    assert "/admin/login/" in browser.current_url
