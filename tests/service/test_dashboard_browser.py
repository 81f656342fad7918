"""The home dashboard in a real browser, with figures from commits a Lambda makes over the
HTTP API (only the service's URL and a write key, as the README configures one)."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By

from analemma_sdk.statebag import get_hydrator
from rollout import services as rollout_services
from rollout.models import Environment
from statebag.models import Manifest, Pack

from ..browser import chromium, screenshot
from ..factories import UserFactory, write_key
from ..states import noise

pytestmark = pytest.mark.django_db(transaction=True)
PASSWORD = "correct-horse-battery-staple"


@pytest.fixture
def browser():
    with chromium() as driver:
        yield driver


@pytest.fixture
def lambda_env(live_server, statebag_storage, tmp_path, monkeypatch):
    """An SDK in this process that reaches the service over HTTP and nothing else."""
    statebag_storage(folder=tmp_path / "service")
    monkeypatch.setenv("STATEBAG_SERVICE_URL", live_server.url)
    monkeypatch.setenv("STATEBAG_WRITE_KEY", write_key("acme")[1])
    monkeypatch.delenv("STATEBAG_STORE_URL", raising=False)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "container"))
    (tmp_path / "container").mkdir()


def lambda_steps(execution_id: str, steps: int) -> None:
    hydrator = get_hydrator(use_batching=True, inline_frames=False, use_2pc=True)
    payload: dict = {}
    for step in range(steps):
        state = hydrator.hydrate(payload)
        state["step"] = step
        state["llm_response"] = {"text": noise(f"{execution_id}/{step}", 20_000)}
        payload = hydrator.dehydrate(state, owner_id="acme", workflow_id="support", execution_id=execution_id)
        assert "degraded" not in payload["__statebag__"]


def figure(browser, css: str) -> str:
    return browser.find_element(By.CSS_SELECTOR, css).text.strip()


def test_browser__dashboard__shows_the_commits_a_lambda_made_over_http(
    browser,
    live_server,
    lambda_env,
    rollout_defaults,
):
    # Given a Lambda that committed two executions of three steps over HTTP, all two-phase
    lambda_steps("exec-a", 3)
    lambda_steps("exec-b", 3)
    assert set(Manifest.objects.values_list("committed_via", flat=True)) == {"2pc"}
    # And a flag rolling out under a running plan
    operator = UserFactory(username="operator", password=PASSWORD, is_staff=True, is_superuser=True)
    prod = Environment.objects.get(key="prod")
    flag = rollout_services.flag_create(
        key="new-checkout", kind="boolean", default_value=False, actor="operator"
    )
    plan = rollout_services.plan_create(
        name="new checkout to everyone",
        flag=flag,
        value=True,
        actor="operator",
        steps=[{"environment": prod, "percentage": 5}, {"environment": prod, "percentage": 100}],
    )
    rollout_services.plan_start(plan=plan, user=operator)
    # When the operator logs in
    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("operator")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    # Then the home page is the dashboard, with those commits counted
    two_phase = browser.find_element(By.CSS_SELECTOR, 'tr[data-outcome="2pc"]')
    assert two_phase.find_element(By.CSS_SELECTOR, '[data-figure="hour"]').text == "6"
    assert two_phase.find_element(By.CSS_SELECTOR, '[data-figure="day"]').text == "6"
    assert figure(browser, "#kpi-commits-hour .analemma-kpi-value") == "6"
    stored = browser.find_element(By.CSS_SELECTOR, '[data-figure="stored-bytes"]').get_attribute("data-bytes")
    assert int(stored) == sum(Pack.objects.filter(state=Pack.State.LIVE).values_list("size", flat=True)) > 0
    assert len(browser.find_elements(By.CSS_SELECTOR, "#card-commits svg rect.series-2pc")) >= 2
    # And the running plan, the flags by state and the latest change are there
    assert "new checkout to everyone" in figure(browser, "#card-plans")
    assert "step 1 of 2" in figure(browser, "#card-plans")
    assert figure(browser, 'tr[data-environment="prod"] [data-figure="rolling"]') != "0"
    assert "new checkout to everyone" in figure(browser, "#card-changes")
    # And the page wears the product's look (its stylesheet loaded), with no "View site" link to a 404
    loaded = browser.execute_script(
        "return Array.from(document.styleSheets).filter(s => s.href && s.href.endsWith(arguments[0]))"
        ".map(s => s.cssRules.length);",
        "/static/analemma/admin.css",
    )
    assert loaded and loaded[0] > 0, loaded
    assert "Analemma" in browser.title and not browser.find_elements(By.LINK_TEXT, "View site")
    browser.set_window_size(1280, 1500)
    screenshot(browser, "admin-dashboard")
