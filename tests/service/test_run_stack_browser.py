"""An operator's first minutes on `make run`'s stack (web, worker and beat, the demo seeded), in
a real browser: log in with the password the first start printed, read the dashboard, kill a
demo flag from the flags list with a reason, see what an SDK key of the demo environment is
then served, and open a demo execution's verified history. Screenshots go to test-artifacts/."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from ..browser import chromium, log_in, screenshot
from ..run_stack import Stack, manage, query, running_stack, wait_for

LOGIN = re.compile(r"user: admin\s+password: (\S+)")


def served(stack: Stack, raw_key: str, flag_key: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{stack.url}/api/v1/flagset", headers={"Authorization": f"Bearer {raw_key}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # loopback only
        flag: dict[str, Any] = json.loads(response.read())["flags"][flag_key]
        return flag


@pytest.fixture(scope="module")
def demo_stack(migrated: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(migrated, tmp_path_factory.mktemp("demo-stack")) as stack:
        yield stack


def test_make_run__first_minutes__login_dashboard_kill_a_flag_and_read_an_execution(demo_stack: Stack):
    stack = demo_stack
    # Given the first start printed the admin's password, and an SDK key of the demo environment
    password = wait_for(
        lambda: next((m[1] for m in map(LOGIN.search, stack.lines) if m), None), 30, "the login", stack
    )
    raw_key = manage(stack.env, "rollout", "sdk-key", "create", "--env", "demo", "--name", "browser").split()[
        -1
    ]
    assert served(stack, raw_key, "demo-new-checkout")["enabled"] is True

    with chromium() as browser:
        # When the operator logs in, the dashboard shows the demo: a running plan, recorded versions
        log_in(browser, stack.url, "admin", password)
        body = browser.find_element(By.TAG_NAME, "body").text
        assert "Dashboard" in body and "plans running" in body
        assert "demo agent memory" in body.lower() or "demo-agent-memory" in body
        screenshot(browser, "make-run-dashboard")

        # And kills a demo flag from the flags list, with a reason
        browser.get(f"{stack.url}/admin/rollout/flag/?q=demo-new-checkout")
        button = browser.find_element(
            By.CSS_SELECTOR,
            "button.flag-switch[data-flag-key='demo-new-checkout'][data-environment-key='demo']",
        )
        button.click()
        dialog = browser.find_element(By.ID, "flag-switch-dialog")
        WebDriverWait(browser, 5).until(lambda _: dialog.get_attribute("open") is not None)
        browser.find_element(By.ID, "flag-switch-reason").send_keys("checkout errors in the demo")
        screenshot(browser, "make-run-kill-dialog")
        browser.find_element(By.ID, "flag-switch-confirm").click()
        assert "checkout errors in the demo" in str(
            query(stack.folder, "SELECT reason FROM rollout_revision ORDER BY id DESC LIMIT 1")
        )

        # Then an SDK key of the demo environment is served the flag off, within a second or so
        wait_for(
            lambda: served(stack, raw_key, "demo-new-checkout")["enabled"] is False,
            10,
            "the kill to be served",
        )

        # And a demo execution opens on its versions, each with its hash verified
        browser.get(f"{stack.url}/admin/statebag/execution/?q=demo-ticket-1")
        browser.find_element(By.CSS_SELECTOR, "#result_list tbody tr th a").click()
        versions = browser.find_element(By.ID, "versions").text
        assert "hash verified" in versions and "HASH MISMATCH" not in versions
        screenshot(browser, "make-run-execution")
