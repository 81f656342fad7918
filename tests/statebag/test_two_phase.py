from datetime import timedelta

import pytest
from django.utils import timezone

from analemma_sdk.statebag import CountingStore, StateHydrator, metrics
from analemma_sdk.statebag.errors import ManifestConflictError, TransactionAbortedError
from statebag.models import CommitTransaction, Execution, GCRun, Manifest, Pack, Pin
from statebag.services import StateVersioningService, manifest_state
from statebag.services.collection import execution_finish, gc_sweep, retention_apply, transactions_reap

pytestmark = pytest.mark.django_db(transaction=True)
IDS = {"owner_id": "acme", "workflow_id": "support", "execution_id": "exec-1"}
LATER = timedelta(hours=2)


class Crash(BaseException):
    """The process dies here: no handler runs (an ordinary exception makes the client abort)."""


class CrashingStore(CountingStore):
    """Raises on the n-th put, as if the process died there."""

    def __init__(self, inner, crash_on_put=None):
        super().__init__(inner)
        self.crash_on_put = crash_on_put

    def put(self, key, data):
        if self.counts["puts"] + 1 == self.crash_on_put:
            self.counts["puts"] += 1
            raise Crash(key)
        super().put(key, data)


def state(step):
    return {
        "step": step,
        "llm_response": {"text": f"answer {step} " * 200},
        "messages": [{"role": "user", "content": f"turn {i} " * 300} for i in range(step * 3)],
        "workflow_config": {"steps": [f"s{i}" for i in range(300)]},
    }


def hydrator_for(store, **options):
    return StateHydrator(
        use_batching=True,
        inline_frames=False,
        use_zstd=True,
        use_2pc=True,
        store=store,
        manifest_store=StateVersioningService(use_2pc=True),
        **options,
    )


def advance(hydrator, payload, step, **kwargs):
    bag = hydrator.hydrate(payload)
    for name, value in state(step).items():
        bag[name] = value
    return hydrator.dehydrate(bag, **IDS, **kwargs)


def stored_keys(store):
    return set(store.list(""))


def test_two_phase__steps__commit_live_packs_and_leave_no_pins(local_store):
    hydrator = hydrator_for(local_store)
    payload = {}
    for step in range(1, 4):
        payload = advance(hydrator, payload, step)
    assert CommitTransaction.objects.filter(state="committed").count() == 3
    assert set(Pack.objects.values_list("state", flat=True)) == {"live"}
    assert not Pin.objects.exists()
    head = Execution.objects.get().head
    assert head.committed_via == "2pc" and head.version == 3
    assert manifest_state(
        head, StateHydrator(use_batching=True, inline_frames=False, store=local_store)
    ).to_dict() == state(3)


@pytest.mark.parametrize("crash_on_put", [1, 2])
def test_two_phase__crash_during_upload__reaper_removes_every_uploaded_object(local_store, crash_on_put):
    hydrator = hydrator_for(local_store)
    payload = advance(hydrator, {}, 1)
    before = stored_keys(local_store)
    crashing = hydrator_for(CrashingStore(local_store, crash_on_put=crash_on_put))
    with pytest.raises(Crash):
        advance(crashing, payload, 2)
    assert CommitTransaction.objects.filter(state="prepared").count() == 1
    run = transactions_reap(now=timezone.now() + LATER, store=local_store)
    assert CommitTransaction.objects.filter(state="aborted").count() == 1
    assert stored_keys(local_store) == before
    assert run.store_lists == 0
    assert not Pack.objects.exclude(state="live").exists()


def test_two_phase__commit_after_reaping__aborted_error(local_store):
    service = StateVersioningService(use_2pc=True)
    hydrator = hydrator_for(local_store)
    payload = advance(hydrator, {}, 1)

    class SlowCommit(StateVersioningService):
        def commit(self, txn_id, entries, cohort):
            transactions_reap(now=timezone.now() + LATER, store=local_store)  # the commit came too late
            return service.commit(txn_id, entries, cohort)

    late = StateHydrator(
        use_batching=True,
        inline_frames=False,
        use_zstd=True,
        use_2pc=True,
        store=local_store,
        manifest_store=SlowCommit(use_2pc=True),
    )
    with pytest.raises(TransactionAbortedError):
        advance(late, payload, 2)
    assert Execution.objects.get().head.version == 1


def test_two_phase__retry_with_same_key_after_lost_ack__one_version_no_upload(local_store):
    counting = CountingStore(local_store)
    hydrator = hydrator_for(counting)
    payload = advance(hydrator, {}, 1)
    first = advance(hydrator, payload, 2, idempotency_key="job-42")
    puts = counting.counts["puts"]
    again = advance(hydrator_for(counting), payload, 2, idempotency_key="job-42")
    assert again["__statebag__"]["manifest"] == first["__statebag__"]["manifest"]
    assert counting.counts["puts"] == puts
    assert Manifest.objects.count() == 2


def test_two_phase__stale_parent__conflict_and_transaction_aborted(local_store):
    hydrator = hydrator_for(local_store)
    payload = advance(hydrator, {}, 1)
    advance(hydrator, payload, 2)
    with pytest.raises(ManifestConflictError):
        advance(hydrator, payload, 3)
    assert CommitTransaction.objects.filter(state="aborted").count() == 1
    assert Execution.objects.get().head.version == 2


def test_retention_then_gc__old_versions_released__head_intact_no_list_calls(local_store):
    hydrator = hydrator_for(local_store)
    payload = {}
    for step in range(1, 7):
        payload = advance(hydrator, payload, step)
    retention_apply(keep_last=2)
    assert list(Manifest.objects.filter(retained=True).values_list("version", flat=True)) == [5, 6]
    run = gc_sweep(grace=timedelta(0), store=local_store)
    assert run.deleted_objects > 0 and run.store_lists == 0
    head = Execution.objects.get().head
    assert manifest_state(
        head, StateHydrator(use_batching=True, inline_frames=False, store=local_store)
    ).to_dict() == state(6)
    live_keys = set(Pack.objects.values_list("key", flat=True))
    assert stored_keys(local_store) == live_keys
    assert GCRun.objects.filter(kind="gc").exists()


def test_gc__pack_pinned_by_prepared_transaction__kept(local_store):
    hydrator = hydrator_for(local_store)
    payload = advance(hydrator, {}, 1)
    service = StateVersioningService(use_2pc=True)
    from analemma_sdk.statebag.manifests import PrepareRequest
    from analemma_sdk.statebag.pointers import parse_pointer

    ref = parse_pointer(payload["workflow_config"])
    service.prepare(
        PrepareRequest(
            owner_id="acme",
            workflow_id="support",
            execution_id="exec-2",
            parents=(),
            packs=(),
            reused=((ref.key, ref.digest),),
        )
    )
    Manifest.objects.update(retained=False)  # as if retention had released everything
    Pack.objects.update(gc_candidate_since=timezone.now())
    gc_sweep(grace=timedelta(0), store=local_store)
    assert local_store.exists(ref.key)


def test_two_phase__reused_blob_collected_meanwhile__stored_again_and_readable(local_store):
    hydrator = hydrator_for(local_store)
    advance(hydrator, {}, 1)
    execution_finish(owner_id="acme", execution_id="exec-1")
    retention_apply(finished_ttl=timedelta(seconds=-1))
    gc_sweep(grace=timedelta(0), store=local_store)
    assert not Pack.objects.exists()
    # The same hydrator still believes its blobs are stored; a new execution reuses them.
    other = {**IDS, "execution_id": "exec-3"}
    result = hydrator.dehydrate_result(state(1), **other)
    assert result.new_blobs > 0
    head = Execution.objects.get(execution_id="exec-3").head
    assert manifest_state(
        head, StateHydrator(use_batching=True, inline_frames=False, store=local_store)
    ).to_dict() == state(1)


def test_hydrator__use_2pc_without_two_phase_store__loud_and_counted(local_store, caplog):
    class OneStep:
        def record(self, draft):
            from analemma_sdk.statebag import ManifestRecord

            return ManifestRecord("0" * 64, 1)

    before = metrics.counters["statebag_2pc_unavailable_total"]
    hydrator = StateHydrator(
        use_batching=True, inline_frames=False, use_2pc=True, store=local_store, manifest_store=OneStep()
    )
    hydrator.dehydrate(state(1), **IDS)
    hydrator.dehydrate(state(1), **IDS)
    assert metrics.counters["statebag_2pc_unavailable_total"] == before + 2
    assert caplog.text.count("cannot run a two-phase commit") == 1
