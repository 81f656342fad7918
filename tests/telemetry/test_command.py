"""manage.py telemetry metrics: exposures and, for statebag flags, cohorts side by side."""

from __future__ import annotations

import json
import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from telemetry.services import telemetry_aggregate

from .conftest import make_batch
from .test_aggregate import cohort_entry, evaluation

pytestmark = pytest.mark.django_db


@pytest.fixture
def reported(post, prod_key):
    now = time.time()
    post(
        prod_key,
        make_batch(
            window=[now - 5, now],
            evaluations=[
                evaluation(90, value=False, reason="rollout", names=[f"u{i}" for i in range(90)]),
                evaluation(10, value=True, reason="rollout", names=[f"u{i}" for i in range(90, 100)]),
            ],
            statebag=[
                cohort_entry(True, 10, errors=1, hydrate=[(4, 9), (32, 1)], requests_get=20),
                cohort_entry(False, 90, hydrate=[(2, 90)], requests_get=270),
            ],
        ),
    )
    telemetry_aggregate()


def run(*args):
    out = StringIO()
    call_command("telemetry", "metrics", *args, stdout=out)
    return out.getvalue()


def test_metrics__table__exposures_and_cohorts_side_by_side(reported):
    out = run("use_zstd", "--env", "prod")
    lines = out.splitlines()
    assert lines[0].startswith("use_zstd in prod since")
    false_row = next(line.split() for line in lines if line.split()[:3] == ["-", "false", "90"])
    assert abs(int(false_row[3].lstrip("~")) - 90) <= 3 * 0.065 * 90  # an estimate
    assert any(line.split()[:3] == ["-", "true", "10"] for line in lines)
    header = next(line for line in lines if line.startswith("cohort metric"))
    assert header.index("control (off)") > header.index("treatment (on)")
    assert next(line for line in lines if line.startswith("requests per execution")).split()[-2:] == [
        "2.00",
        "3.00",
    ]
    assert next(line for line in lines if line.startswith("error rate")).split()[-2:] == ["10.00%", "0.00%"]
    assert next(line for line in lines if line.startswith("p95 hydrate")).split()[-2:] == ["32", "2"]
    assert "batches 1, dropped by SDKs 0, refused over the limit 0" in out


def test_metrics__json__the_same_numbers(reported):
    report = json.loads(run("use_zstd", "--env", "prod", "--since", "15m", "--json"))
    assert [(e["value"], e["evaluations"]) for e in report["exposures"]] == [(False, 90), (True, 10)]
    assert abs(report["exposures"][0]["units"] - 90) <= 3 * 0.065 * 90
    assert list(report["cohorts"]) == ["true", "false"]  # treatment, then control
    assert report["cohorts"]["true"]["error_rate"] == 0.1
    assert report["cohorts"]["false"]["requests_per_execution"] == 3.0
    assert report["cohorts"]["true"]["p95_hydrate_ms"] == 32
    assert report["ingestion"]["batches"] == 1


def test_metrics__other_environment__nothing(reported):
    report = json.loads(run("use_zstd", "--env", "dev", "--json"))
    assert report["exposures"] == [] and report["cohorts"] == {}
    assert "no evaluations reported" in run("use_zstd", "--env", "dev")


def test_metrics__flag_not_read_by_the_sdk__no_cohort_table(reported):
    from rollout.models import Flag

    Flag.objects.create(key="checkout", default_value=False)
    out = run("checkout", "--env", "prod")
    assert "no evaluations reported" in out and "cohort metric" not in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["use_zstd", "--env", "nowhere"], "no environment"),
        (["no-such-flag", "--env", "prod"], "no flag"),
        (["use_zstd", "--env", "prod", "--since", "yesterday"], "--since"),
        (["use_zstd", "--env", "prod", "--since", "0m"], "--since"),
        (["use_zstd", "--env", "prod", "--since", "400d"], "--since"),
    ],
)
def test_metrics__bad_arguments__command_error(args, message):
    with pytest.raises(CommandError, match=message):
        run(*args)


def test_aggregate_command__prints_counts(post, prod_key):
    post(prod_key, make_batch())
    out = StringIO()
    call_command("telemetry", "aggregate", stdout=out)
    assert json.loads(out.getvalue())["batches"] == 1


def rollout_metrics(*args):
    out = StringIO()
    call_command("rollout", "metrics", *args, stdout=out)
    return out.getvalue()


def test_rollout_metrics__the_telemetry_report__same_numbers_and_table(reported):
    # Given the same report asked of both commands
    via_rollout = json.loads(rollout_metrics("use_zstd", "--env", "prod", "--since", "15m", "--json"))
    via_telemetry = json.loads(run("use_zstd", "--env", "prod", "--since", "15m", "--json"))
    # Then they agree on everything but the instant each was asked
    for report in (via_rollout, via_telemetry):
        del report["since"], report["until"]
    assert via_rollout == via_telemetry
    assert via_rollout["cohorts"]["true"]["error_rate"] == 0.1
    table = rollout_metrics("use_zstd", "--env", "prod")
    assert table.splitlines()[0].startswith("use_zstd in prod since") and "treatment (on)" in table


def test_rollout_metrics__bad_arguments__the_same_command_errors(reported):
    with pytest.raises(CommandError, match="no environment"):
        rollout_metrics("use_zstd", "--env", "nowhere")
    with pytest.raises(CommandError, match="--since"):
        rollout_metrics("use_zstd", "--env", "prod", "--since", "yesterday")


@pytest.mark.parametrize("dotted", ["", "reporting.cli.metrics"])
def test_rollout_metrics__telemetry_not_installed__says_so(settings, dotted):
    settings.ROLLOUT_METRICS_COMMAND = dotted
    with pytest.raises(CommandError, match="needs the telemetry app"):
        rollout_metrics("use_zstd", "--env", "prod")


def test_rollout_metrics__setting_names_nothing_importable__command_error(settings):
    settings.ROLLOUT_METRICS_COMMAND = "telemetry.cli.no_such_report"
    with pytest.raises(CommandError, match="cannot be imported"):
        rollout_metrics("use_zstd", "--env", "prod")
