"""POST /api/v1/telemetry with a write key (a hydrator with no flag client): cohort economics
filed under the key's owner's namespace (``owner:<owner id>``), never an environment's or
another owner's whatever the body says; evaluations refused; the same body bound, idempotency
and limit per namespace; a revoked key refused; the metrics command reads the namespace."""

from __future__ import annotations

import json
import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from keys.services import key_revoke
from statebag.models import WriteKey
from telemetry.conf import telemetry_settings
from telemetry.models import CohortRollup, IngestionMinute, RawBatch
from telemetry.services import ingestion_admit, ingestion_counts_flush, owner_namespace, telemetry_aggregate

from ..factories import write_key
from .conftest import make_batch
from .test_aggregate import cohort_entry

pytestmark = pytest.mark.django_db


def cohorts_only(**overrides):
    now = time.time()
    body = {
        "window": [now - 5, now],
        "evaluations": [],
        "statebag": [cohort_entry(True, 10, errors=1, requests_get=20), cohort_entry(False, 90)],
    }
    return make_batch(**{**body, **overrides})


@pytest.fixture
def acme():
    return write_key("acme")[1]


def filed():
    return sorted(RawBatch.objects.values_list("environment", flat=True))


def test_write_key__cohorts_only__202_filed_under_its_owner_and_replay_is_a_duplicate(post, acme):
    batch = cohorts_only()
    response = post(acme, batch)
    assert response.status_code == 202 and response.json() == {"accepted": True, "batch": batch["batch"]}
    assert filed() == ["owner:acme"]
    again = post(acme, batch)
    assert again.status_code == 200 and again.json() == {"accepted": False, "duplicate": True}
    assert filed() == ["owner:acme"]


def test_write_key__evaluations__400_a_write_key_evaluates_no_flags(post, acme):
    response = post(acme, make_batch())  # evaluations and cohorts
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_batch" and "write key evaluates no flags" in error["message"]
    assert filed() == []


@pytest.mark.parametrize(
    "claims",
    [
        {"environment": "prod"},
        {"owner_id": "globex", "environment": "owner:globex"},
        {"sdk": {"name": "owner:globex", "version": "prod"}},
    ],
)
def test_write_key__body_names_another_namespace__filed_under_its_own_or_refused(
    post, acme, prod_key, claims
):
    write_key("globex")
    response = post(acme, cohorts_only(**claims))
    assert response.status_code in (202, 400)
    assert set(filed()) <= {"owner:acme"}
    assert not RawBatch.objects.filter(environment__in=["prod", "owner:globex"]).exists()


def test_namespaces__same_batch_id__an_environment_and_two_owners_each_keep_theirs(post, acme, prod_key):
    globex = write_key("globex")[1]
    batch = cohorts_only()
    assert [post(key, batch).status_code for key in (acme, globex, prod_key)] == [202, 202, 202]
    assert filed() == ["owner:acme", "owner:globex", "prod"]


def test_write_key__revoked__401_and_unknown__401(post, acme, django_capture_on_commit_callbacks):
    assert post(acme, cohorts_only()).status_code == 202
    with django_capture_on_commit_callbacks(execute=True):
        key_revoke(key=WriteKey.objects.get(owner_id="acme"), actor="ops")
    response = post(acme, cohorts_only())
    assert response.status_code == 401 and "write key" in response.json()["error"]
    assert post("awk_" + "x" * 43, cohorts_only()).status_code == 401
    assert filed() == ["owner:acme"]


def test_write_key__body_over_the_bound__413(post, acme, settings):
    body = json.dumps(cohorts_only()).encode()
    settings.TELEMETRY_MAX_BODY_BYTES = len(body) - 1
    assert post(acme, None, raw=body).status_code == 413
    assert filed() == []


def test_write_key__over_its_owners_limit__429_others_unaffected(post, acme, prod_key, settings):
    settings.TELEMETRY_MAX_BATCHES_PER_SECOND = 1
    settings.TELEMETRY_LIMIT_WINDOW_SECONDS = 3600  # the requests below fall in one window
    for _ in range(telemetry_settings().batches_per_window):  # acme's window, spent
        assert ingestion_admit(environment=owner_namespace("acme"), now=time.time()) is None
    refused = post(acme, cohorts_only())
    assert refused.status_code == 429 and refused.json()["error"] == (
        "owner acme is over its telemetry ingestion limit"
    )
    assert int(refused["Retry-After"]) >= 1
    assert post(write_key("globex")[1], cohorts_only()).status_code == 202
    assert post(prod_key, make_batch()).status_code == 202
    ingestion_counts_flush(now=time.time(), force=True)
    assert IngestionMinute.objects.get(environment="owner:acme").refused == 1


def test_write_key__longest_owner_id__fits(post):
    owner = "a" * 128
    assert post(write_key(owner)[1], cohorts_only()).status_code == 202
    telemetry_aggregate()
    assert {row.environment for row in CohortRollup.objects.all()} == {f"owner:{owner}"}


def metrics(*args):
    out = StringIO()
    call_command("telemetry", "metrics", *args, stdout=out)
    return out.getvalue()


def test_metrics__owner_namespace__cohorts_rolled_up_and_shown(post, acme, prod_key):
    assert post(acme, cohorts_only()).status_code == 202
    telemetry_aggregate()
    report = json.loads(metrics("use_zstd", "--env", "owner:acme", "--since", "15m", "--json"))
    assert report["environment"] == "owner:acme" and report["exposures"] == []
    assert report["cohorts"]["true"]["executions"] == 10 and report["cohorts"]["false"]["executions"] == 90
    assert report["ingestion"]["batches"] == 1
    table = metrics("use_zstd", "--env", "owner:acme")
    assert table.startswith("use_zstd in owner:acme since") and "treatment (on)" in table
    # prod saw nothing of it
    assert "cohorts" in (prod := json.loads(metrics("use_zstd", "--env", "prod", "--json")))
    assert prod["cohorts"] == {} and prod["ingestion"]["batches"] == 0
    out = StringIO()
    call_command("rollout", "metrics", "use_zstd", "--env", "owner:acme", "--json", stdout=out)
    assert json.loads(out.getvalue())["cohorts"]["true"]["executions"] == 10


@pytest.mark.parametrize("env", ["owner:globex", "owner:"])
def test_metrics__owner_without_a_write_key__command_error(acme, env):
    with pytest.raises(CommandError, match="no write key of owner"):
        metrics("use_zstd", "--env", env)
