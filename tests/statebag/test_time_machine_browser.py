"""An operator travels through an execution's history in a real browser: its versions with
their hash check, what changed between two of them, and one version's state as JSON."""

from __future__ import annotations

import json

import pytest
from selenium.webdriver.common.by import By

from statebag.models import Manifest
from statebag.services import manifest_state
from statebag.services.hydrators import service_hydrator

from ..browser import chromium, screenshot
from ..factories import UserFactory
from ..states import OWNER, WORKFLOW, commit_states, conversation

pytestmark = pytest.mark.django_db(transaction=True)
PASSWORD = "correct-horse-battery-staple"


@pytest.fixture
def browser():
    with chromium() as driver:
        yield driver


def log_in(browser, live_server):
    UserFactory(username="operator", password=PASSWORD, is_staff=True, is_superuser=True)
    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("operator")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    browser.find_element(By.ID, "user-tools")  # waits for the page after the POST


def test_browser__execution_history__versions_checked_diff_and_json_download(
    browser, live_server, service_store
):
    # Given an execution with three versions committed through the service
    execution = commit_states([conversation(1), conversation(2), conversation(2, status="done")])
    log_in(browser, live_server)
    # When the operator opens it from the list
    browser.get(f"{live_server.url}/admin/statebag/execution/")
    browser.find_element(By.LINK_TEXT, "exec-tm").click()
    rows = browser.find_elements(By.CSS_SELECTOR, "table.statebag-version-table tbody tr")
    # Then its versions are listed newest first, each with its hash verified
    assert [row.get_attribute("data-version") for row in rows] == ["3", "2", "1"]
    assert all("hash verified" in row.text for row in rows)
    screenshot(browser, "admin-execution-versions")

    # When they compare v1 with v2 through the form
    older, newer = browser.find_element(By.NAME, "older"), browser.find_element(By.NAME, "newer")
    older.clear(), older.send_keys("1"), newer.clear(), newer.send_keys("2")
    browser.find_element(By.CSS_SELECTOR, "#compare-form button[type=submit]").click()
    # Then the changed field and the appended message are listed, and nothing else
    changes = browser.find_elements(By.CSS_SELECTOR, "#diff-table tbody tr")
    assert [(c.get_attribute("data-path"), c.find_elements(By.TAG_NAME, "td")[1].text) for c in changes] == [
        ("step", "changed"),
        ("messages[1]", "added"),
    ]
    assert "2 field(s) changed" in browser.find_element(By.ID, "diff-summary").text
    screenshot(browser, "admin-execution-diff")

    # When they open v2's state from the comparison
    browser.find_element(By.LINK_TEXT, "v2").click()
    shown = json.loads(browser.find_element(By.ID, "state-json").text)
    screenshot(browser, "admin-execution-state")
    download = browser.find_element(By.ID, "download-state").get_attribute("href")
    fetched = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0], {credentials: 'same-origin'})"
        ".then(r => r.text().then(t => done([r.status, r.headers.get('content-disposition'), t])));",
        download,
    )
    # Then the page shows, and the download holds, exactly the hydrated state
    v2 = Manifest.objects.get(execution=execution, version=2)
    hydrated = manifest_state(v2, service_hydrator(OWNER, WORKFLOW)).to_dict()
    assert shown == hydrated == conversation(2)
    status, disposition, text = fetched
    assert status == 200 and disposition == 'attachment; filename="acme-exec-tm-v2.json"'
    assert json.loads(text) == hydrated
    assert list(json.loads(text)) == list(hydrated)  # fields in their order
