import pytest

from analemma_sdk.statebag import StateHydrator
from statebag.errors import DanglingPointerError, ManifestConflictError
from statebag.models import Execution, Manifest, ManifestEntry, Pack
from statebag.services import StateVersioningService, manifest_chain, manifest_state, manifest_verify

pytestmark = pytest.mark.django_db(transaction=True)
IDS = {"owner_id": "acme", "workflow_id": "support", "execution_id": "exec-1"}


def make_state(step):
    return {
        "status": "RUNNING",
        "step": step,
        "messages": [{"role": "user", "content": f"turn {i} " * 60} for i in range(step)],
        "workflow_config": {"steps": [f"s{i}" for i in range(200)]},
    }


@pytest.fixture
def hydrator(local_store):
    return StateHydrator(
        use_batching=True,
        inline_frames=False,
        use_zstd=True,
        store=local_store,
        manifest_store=StateVersioningService(use_2pc=False),
    )


def run_steps(hydrator, steps, ids=IDS):
    payload = {}
    for step in range(1, steps + 1):
        bag = hydrator.hydrate(payload)
        for name, value in make_state(step).items():
            if name not in bag or bag[name] != value:
                bag[name] = value
        payload = hydrator.dehydrate(bag, **ids)
    return payload


def test_record__steps__chain_of_versions_each_hydrates_and_verifies(hydrator, local_store):
    payload = run_steps(hydrator, 6)
    execution = Execution.objects.get(execution_id="exec-1")
    assert execution.head.version == 6 == payload["__statebag__"]["version"]
    assert execution.head.hash == payload["__statebag__"]["manifest"]
    for manifest in Manifest.objects.filter(execution=execution):
        assert manifest_verify(manifest)
        reader = StateHydrator(use_batching=True, inline_frames=False, store=local_store)
        assert manifest_state(manifest, reader).to_dict() == make_state(manifest.version)
    chain = manifest_chain(execution.head)
    assert [link.manifest.version for link in chain] == [6, 5, 4, 3, 2, 1]
    assert all(link.valid for link in chain)
    assert Pack.objects.filter(owner_id="acme").exists()


def test_verify__tampered_entry__detected_down_the_chain(hydrator):
    run_steps(hydrator, 3)
    entry = ManifestEntry.objects.get(manifest__version=2, field="step")
    ManifestEntry.objects.filter(pk=entry.pk).update(stored=99)
    head = Execution.objects.get(execution_id="exec-1").head
    assert [link.valid for link in manifest_chain(head)] == [True, False, True]


def test_record__stale_parent__raises_conflict(hydrator):
    first = run_steps(hydrator, 1)
    bag_a = hydrator.hydrate(first)
    bag_b = hydrator.hydrate(first)
    bag_a["step"] = 2
    hydrator.dehydrate(bag_a, **IDS)
    bag_b["step"] = 3
    with pytest.raises(ManifestConflictError):
        hydrator.dehydrate(bag_b, **IDS)
    assert Execution.objects.get(execution_id="exec-1").head.version == 2


def test_record__same_idempotency_key__returns_first_version(hydrator):
    first = run_steps(hydrator, 1)
    bag = hydrator.hydrate(first)
    bag["step"] = 2
    one = hydrator.dehydrate_result(bag, idempotency_key="job-7", **IDS)
    retry = hydrator.hydrate(first)
    retry["step"] = 2
    again = hydrator.dehydrate_result(retry, idempotency_key="job-7", **IDS)
    assert (one.manifest, one.version) == (again.manifest, again.version)
    assert Manifest.objects.filter(execution__execution_id="exec-1").count() == 2


def test_record__merge_of_two_parents__links_both(hydrator, local_store):
    from analemma_sdk.statebag import ManifestDraft

    service = StateVersioningService(use_2pc=False)
    run_steps(hydrator, 2)
    head = Execution.objects.get(execution_id="exec-1").head
    parent = head.parent_links.get().parent
    record = service.record(
        ManifestDraft(
            owner_id="acme",
            workflow_id="support",
            execution_id="exec-1",
            parents=(head.hash, parent.hash),
            entries={"merged": True},
            packs=(),
        )
    )
    merged = Manifest.objects.get(hash=record.hash)
    assert list(merged.parents.order_by("version")) == [parent, head]
    assert manifest_verify(merged)


def test_record__pointer_to_unrecorded_object__dangling_error(hydrator, local_store):
    payload = StateHydrator(use_batching=True, inline_frames=False, store=local_store).dehydrate(
        make_state(2), **IDS
    )  # no manifest store
    from analemma_sdk.statebag import ManifestDraft

    entries = {k: v for k, v in payload.items() if k != "__statebag__"}
    with pytest.raises(DanglingPointerError):
        StateVersioningService(use_2pc=False).record(
            ManifestDraft(
                owner_id="acme",
                workflow_id="support",
                execution_id="exec-9",
                parents=(),
                entries=entries,
                packs=(),
            )
        )
    assert not Manifest.objects.filter(execution__execution_id="exec-9").exists()


def test_record__other_owners_pack__dangling_error(hydrator, local_store):
    run_steps(hydrator, 1, ids=IDS)
    payload = run_steps(hydrator, 1, ids={**IDS, "execution_id": "exec-2"})
    from analemma_sdk.statebag import ManifestDraft

    entries = {k: v for k, v in payload.items() if k != "__statebag__"}
    with pytest.raises(DanglingPointerError):
        StateVersioningService(use_2pc=False).record(
            ManifestDraft(
                owner_id="mallory", workflow_id="w", execution_id="e", parents=(), entries=entries, packs=()
            )
        )


def test_record__service_requires_2pc__logs_and_counts_the_bypass(caplog, local_store):
    from analemma_sdk.statebag import metrics

    before = metrics.counters["statebag_2pc_bypassed_total"]
    hydrator = StateHydrator(
        use_batching=True,
        inline_frames=False,
        store=local_store,
        manifest_store=StateVersioningService(use_2pc=True),
    )
    hydrator.dehydrate(make_state(1), **IDS)
    assert "without two-phase commit" in caplog.text
    assert metrics.counters["statebag_2pc_bypassed_total"] == before + 1
    assert Manifest.objects.get().committed_via == "direct"
