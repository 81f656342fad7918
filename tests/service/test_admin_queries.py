"""Admin list pages make a fixed number of queries however many rows they show: related rows
come with the page's own queries (select_related, prefetch, annotations), never one per row."""

from __future__ import annotations

import itertools

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from analemma_sdk.statebag import StateHydrator
from rollout import services as rollout_services
from rollout.models import Environment, Flag, RolloutPlan, RolloutStep
from statebag.models import CommitTransaction, CompressionDictionary, Pack, Pin
from statebag.services import StateVersioningService
from statebag.services.collection import gc_sweep
from statebag.services.jobs import job_submit

from ..factories import sdk_key, write_key

pytestmark = pytest.mark.django_db
CHANGELISTS = [
    "rollout_environment",
    "rollout_flag",
    "rollout_flagstate",
    "rollout_revision",
    "rollout_rolloutplan",
    "rollout_sdkkey",
    "audit_auditentry",
    "statebag_execution",
    "statebag_manifest",
    "statebag_pack",
    "statebag_committransaction",
    "statebag_pin",
    "statebag_gcrun",
    "statebag_dehydrationjob",
    "statebag_compressiondictionary",
    "statebag_writekey",
]
_serial = itertools.count()


def grow(rows: int, store) -> None:
    """``rows`` more of everything the admin lists."""
    prod = Environment.objects.get(key="prod")
    hydrator = StateHydrator(
        use_batching=True,
        inline_frames=False,
        use_2pc=True,
        store=store,
        manifest_store=StateVersioningService(use_2pc=True),
    )
    for _ in range(rows):
        n = next(_serial)
        flag = rollout_services.flag_create(key=f"flag-{n}", kind="boolean", default_value=False, actor="t")
        plan = RolloutPlan.objects.create(name=f"plan-{n}", flag=flag, value=True)
        for position in range(3):
            RolloutStep.objects.create(
                plan=plan, position=position, environment=prod, percentage=10 * position
            )
        sdk_key(prod)
        write_key(f"owner-{n}")
        payload = {}
        for step in range(2):
            bag = hydrator.hydrate(payload)
            bag["messages"] = [{"text": f"{n} turn {i} " * 3000} for i in range(step + 1)]
            payload = hydrator.dehydrate(bag, owner_id="acme", workflow_id="wf", execution_id=f"exec-{n}")
        Pin.objects.create(
            transaction=CommitTransaction.objects.first(), pack=Pack.objects.first(), digest=f"{n}"
        )
        gc_sweep()
        job_submit(owner_id="acme", workflow_id="wf", execution_id=f"job-{n}", state={"n": n})
        CompressionDictionary.objects.create(
            workflow_id=f"wf-{n}", dict_id=f"{n:064x}", size=1, samples=1, active=False
        )


def queries(client, name: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(reverse(f"admin:{name}_changelist"))
    assert response.status_code == 200
    return len(captured.captured_queries)


def test_admin_changelists__more_rows__same_number_of_queries(admin_client, local_store):
    grow(2, local_store)
    few = {name: queries(admin_client, name) for name in CHANGELISTS}
    grow(4, local_store)
    many = {name: queries(admin_client, name) for name in CHANGELISTS}
    assert many == few
    assert max(many.values()) <= 12, many
    assert Flag.objects.count() >= 10
