"""Review fixes around the telemetry and rollout operators' surfaces: a webhook URL's
credentials never shown or logged, and a ``--since`` too large for a duration is a plain
command error rather than a traceback."""

from __future__ import annotations

import html
import logging
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from rollout import services
from rollout.models import Environment, Flag
from rollout.webhooks import url_host, webhook_post

SECRET_URL = "http://hookuser:s3cr3t-pass@127.0.0.1:9/services/secret-token?key=q-secret"


@pytest.mark.parametrize(
    ("url", "host"),
    [
        (SECRET_URL, "127.0.0.1:9"),
        ("https://user:pw@hooks.example.com/x", "hooks.example.com"),
        ("https://hooks.example.com:8443/x?token=t", "hooks.example.com:8443"),
        ("https://u:p@[::1]:8080/x", "[::1]:8080"),
        ("https://hooks.example.com:notaport/x", "?"),
        ("not a url", "?"),
    ],
)
def test_url_host__host_and_port_only(url, host):
    assert url_host(url) == host


def test_webhook__credentials_in_url__not_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="analemma.rollout"):
        assert webhook_post({"event": "test"}, url=SECRET_URL) is None
    assert "rollout webhook at 127.0.0.1:9 unreachable" in caplog.text
    for secret in ("hookuser", "s3cr3t-pass", "secret-token", "q-secret"):
        assert secret not in caplog.text


@pytest.mark.django_db
def test_plan_page__credentials_in_url__not_shown(admin_client, settings):
    settings.ROLLOUT_WEBHOOK_URL = SECRET_URL
    prod = Environment.objects.get(key="prod")
    plan = services.plan_create(
        name="zstd",
        flag=Flag.objects.get(key="use_zstd"),
        value=True,
        steps=[{"environment": prod, "percentage": 10}],
        actor="ops",
    )
    page = reverse("admin:rollout_rolloutplan_change", args=[plan.pk])
    shown = html.unescape(admin_client.get(page).content.decode())
    assert "posted to the webhook at 127.0.0.1:9 (ROLLOUT_WEBHOOK_URL)" in shown
    for secret in ("hookuser", "s3cr3t-pass", "secret-token", "q-secret"):
        assert secret not in shown


@pytest.mark.django_db
@pytest.mark.parametrize("since", ["99999999999999999999h", "99999999999999999999999999d", "9" * 400 + "s"])
@pytest.mark.parametrize("command", [("telemetry", "metrics"), ("rollout", "metrics")])
def test_metrics__since_out_of_range__command_error(since, command):
    with pytest.raises(CommandError, match=r"--since .*: from 1s to 366 days"):
        call_command(*command, "use_zstd", "--env", "prod", "--since", since, stdout=StringIO())
