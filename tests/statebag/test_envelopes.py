"""Envelope segments written by the service: one object per execution per flush, recorded
before its upload, readable and checkable with nothing but the store; a crash anywhere loses
nothing and never writes a range under two keys; retention and GC delete them from their rows.

``ANALEMMA_CORPUS_DIR`` points the size test at another folder of conversations (default: the
repository's test corpus); run it with ``-s`` to see the figures."""

from __future__ import annotations

import json
import logging
import os
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from analemma_sdk.statebag import CountingStore, LocalFolderStore, StateHydrator
from analemma_sdk.statebag.envelopes import envelope_versions, read_envelope, read_history
from analemma_sdk.statebag.keys import envelope_key
from statebag import faults
from statebag.models import EnvelopeSegment, Execution, Manifest, ManifestEntry
from statebag.services import StateVersioningService
from statebag.services.collection import execution_finish, gc_sweep, retention_apply
from statebag.services.envelopes import envelopes_write
from statebag.tasks import write_envelopes

pytestmark = pytest.mark.django_db(transaction=True)
IDS = {"owner_id": "acme", "workflow_id": "airline", "execution_id": "exec-1"}
QUIET = timedelta(seconds=60)


@pytest.fixture
def service_folder(statebag_storage, tmp_path) -> Path:
    """The service's store is this folder; a storage-only reader opens it on its own."""
    statebag_storage(folder=tmp_path / "svc")
    return tmp_path / "svc"


@pytest.fixture
def service_store(service_folder) -> CountingStore:
    return CountingStore(LocalFolderStore(service_folder))


def conversation(corpus: Path, steps: int = 25) -> list[dict]:
    for path in sorted(corpus.glob("*.json")):
        messages = json.loads(path.read_text())["traj"]
        if len(messages) >= steps:
            return messages
    raise AssertionError(f"no conversation of {steps} messages in {corpus}")


def step_state(messages: list[dict], step: int) -> dict:
    # Fields out of sorted order, and messages keep theirs ("role" before "content").
    return {"step": step, "messages": messages[:step], "status": "open" if step % 5 else "review"}


def numbered_state(step: int) -> dict:
    return {
        "step": step,
        "messages": [{"role": "user", "content": f"turn {i} " * 40} for i in range(step)],
        "notes": {"zeta": step, "alpha": "kept"},
    }


def record(store, states, *, ids=IDS, use_2pc=False, payload=None, **options) -> dict:
    """Dehydrate each state in turn through the service, as a workflow's steps would (after
    ``payload``, the last step's); returns the last payload."""
    hydrator = StateHydrator(
        use_batching=True,
        use_zstd=True,
        use_2pc=use_2pc,
        store=store,
        manifest_store=StateVersioningService(use_2pc=use_2pc),
        **options,
    )
    payload = payload or {}
    for values in states:
        bag = hydrator.hydrate(payload)
        for name, value in values.items():
            bag[name] = value
        payload = hydrator.dehydrate(bag, **ids)
    return payload


def later(seconds: float = 61):
    return timezone.now() + timedelta(seconds=seconds)


def execution(ids=IDS) -> Execution:
    return Execution.objects.get(owner_id=ids["owner_id"], execution_id=ids["execution_id"])


def read_back(folder: Path, ids=IDS):
    """What a reader with only the store sees: every segment, checked."""
    return read_history(LocalFolderStore(folder), ids["owner_id"], ids["execution_id"])


def same_states(folder: Path, states: list[dict], first: int = 1) -> None:
    """Each version rebuilt from the store alone is the state that was dehydrated, key order
    included."""
    store = LocalFolderStore(folder)
    history = read_history(store, IDS["owner_id"], IDS["execution_id"])
    for version, expected in enumerate(states, start=first):
        assert json.dumps(history.state(version, store=store)) == json.dumps(expected)


# Writing --------------------------------------------------------------------------------------
def test_write_envelopes__quiet_conversation__one_put_and_every_state_rebuilt(service_folder, corpus_dir):
    # Given a 25-step agent conversation recorded through the service
    corpus = Path(os.environ.get("ANALEMMA_CORPUS_DIR", corpus_dir))
    messages = conversation(corpus)
    states = [step_state(messages, step) for step in range(1, 26)]
    steps_store = CountingStore(LocalFolderStore(service_folder))
    record(steps_store, states)
    service = CountingStore(LocalFolderStore(service_folder))

    # When its last commit is older than the quiet period
    run = envelopes_write(now=later(), store=service)

    # Then one segment holds all 25 versions, and a storage-only reader rebuilds each one
    assert [(w.first, w.last) for w in run.written] == [(1, 25)]
    assert service.counts["puts"] == 1 and service.counts["lists"] == 0
    assert execution().enveloped_version == 25
    history = read_back(service_folder)
    assert history.versions == list(range(1, 26))
    same_states(service_folder, states)
    assert history.document(25)["hash"] == execution().head.hash
    size = run.written[0].size
    print(  # noqa: T201 - the figures, shown with -s
        f"\nenvelope of a 25-step conversation: {size} bytes, {size / 25:.0f} bytes/version; "
        f"PUTs per execution: {steps_store.counts['puts']} by the steps + 1 envelope"
    )
    assert size / 25 < 1024


def test_write_envelopes__values_in_packs_through_two_phase_commits__read_from_the_store(service_folder):
    # Given versions whose values go to packs (a payload budget they do not fit), committed in
    # two phases
    states = [
        {"step": step, "history": [{"role": "tool", "content": f"row {i} " * 60} for i in range(40 * step)]}
        for step in range(1, 4)
    ]
    record(LocalFolderStore(service_folder), states, use_2pc=True, payload_budget=2048)

    # When they are flushed
    envelopes_write(now=later(), store=LocalFolderStore(service_folder))

    # Then the segment keeps their pointers, and the reader loads them from the store
    assert Manifest.objects.filter(committed_via="2pc").exists()
    history = read_back(service_folder)
    assert any(
        isinstance(entry, dict) and entry.get("$sb") in ("blob", "list")
        for entry in history.document(3)["entries"].values()
    )
    same_states(service_folder, states)


def test_write_envelopes__within_quiet_period__waits(service_folder, service_store):
    record(service_store, [numbered_state(step) for step in (1, 2, 3)])

    assert envelopes_write(now=later(10), quiet=QUIET, store=service_store).written == []
    assert execution().enveloped_version == 0 and not EnvelopeSegment.objects.exists()

    run = envelopes_write(now=later(61), quiet=QUIET, store=service_store)
    assert [(w.first, w.last) for w in run.written] == [(1, 3)]


def test_write_envelopes__finished__written_without_waiting(service_folder, service_store):
    record(service_store, [numbered_state(step) for step in (1, 2)])
    execution_finish(owner_id="acme", execution_id="exec-1")

    run = envelopes_write(now=timezone.now(), quiet=timedelta(hours=1), store=service_store)

    assert [(w.first, w.last) for w in run.written] == [(1, 2)]


def test_write_envelopes__many_versions_waiting__flushed_while_running(
    settings, service_folder, service_store
):
    settings.STATEBAG = {**settings.STATEBAG, "ENVELOPE_MAX_VERSIONS": 4}
    states = [numbered_state(step) for step in range(1, 7)]
    record(service_store, states)

    busy = timedelta(hours=1)  # never quiet
    first = envelopes_write(now=timezone.now(), quiet=busy, store=service_store)
    second = envelopes_write(now=timezone.now(), quiet=busy, store=service_store)
    execution_finish(owner_id="acme", execution_id="exec-1")
    third = envelopes_write(now=timezone.now(), quiet=busy, store=service_store)

    assert [(w.first, w.last) for w in first.written] == [(1, 4)]
    assert second.written == []
    assert [(w.first, w.last) for w in third.written] == [(5, 6)]
    history = read_back(service_folder)
    assert history.gaps == () and [(s.first, s.last) for s in history.segments] == [(1, 4), (5, 6)]
    same_states(service_folder, states)


def test_write_envelopes__body_over_max_bytes__cut_into_linked_segments(
    settings, service_folder, service_store
):
    settings.STATEBAG = {**settings.STATEBAG, "ENVELOPE_MAX_BYTES": 6000}
    states = [numbered_state(step) for step in range(1, 9)]
    record(service_store, states)

    run = envelopes_write(now=later(), store=service_store)

    assert len(run.written) > 1
    assert run.written[0].first == 1 and run.written[-1].last == 8
    assert all(a.last + 1 == b.first for a, b in zip(run.written, run.written[1:], strict=False))
    same_states(service_folder, states)


def test_write_envelopes__batch__bounds_segments_per_run(service_folder, service_store):
    for n in range(3):
        record(service_store, [numbered_state(1)], ids={**IDS, "execution_id": f"exec-{n}"})

    first = envelopes_write(now=later(), store=service_store, batch=2)
    second = envelopes_write(now=later(), store=service_store, batch=2)

    assert len(first.written) == 2 and len(second.written) == 1
    assert set(Execution.objects.values_list("enveloped_version", flat=True)) == {1}


def test_write_envelopes_task__quiet_zero__writes_and_reports(settings, service_folder):
    settings.STATEBAG = {**settings.STATEBAG, "ENVELOPE_QUIET_SECONDS": 0}
    record(LocalFolderStore(service_folder), [numbered_state(step) for step in (1, 2, 3)])

    summary = write_envelopes.delay().get()

    assert (summary["segments"], summary["versions"], summary["failed"]) == (1, 3, [])
    assert summary["store_requests"]["puts"] == 1
    assert envelope_versions(LocalFolderStore(service_folder), "acme", "exec-1")[0].last == 3


def test_write_envelopes__same_range_twice__same_key_same_bytes(service_folder, service_store):
    record(service_store, [numbered_state(step) for step in (1, 2, 3)])
    envelopes_write(now=later(), store=service_store)
    segment = EnvelopeSegment.objects.get()
    written = service_store.get(segment.key)

    # A flush whose confirmation was lost writes the range again
    EnvelopeSegment.objects.update(written_at=None)
    Execution.objects.update(enveloped_version=0)
    envelopes_write(now=later(), store=service_store)

    assert list(EnvelopeSegment.objects.values_list("key", flat=True)) == [segment.key]
    assert service_store.get(segment.key) == written


# Crashes ---------------------------------------------------------------------------------------
@pytest.fixture
def crash_at():
    def install(point: str) -> None:
        def hook(name: str) -> None:
            if name == point:
                raise faults.InjectedFault(name)

        faults.install(hook)

    yield install
    faults.install(None)


@pytest.mark.parametrize("point", ["envelope.recorded", "envelope.written"])
def test_write_envelopes__crash_before_advance__rerun_writes_the_recorded_range(
    service_folder, service_store, crash_at, point
):
    # Given a flush that died after recording its range (and, at envelope.written, uploading it)
    states = [numbered_state(step) for step in range(1, 6)]
    payload = record(service_store, states[:3])
    crash_at(point)
    crashed = envelopes_write(now=later(), store=service_store)
    faults.install(None)
    key = envelope_key("acme", "exec-1", 1, 3)
    assert crashed.written == [] and crashed.failed == [str(execution().pk)]
    assert execution().enveloped_version == 0
    assert service_store.exists(key) == (point == "envelope.written")
    stored_then = service_store.get(key) if point == "envelope.written" else None
    # ... and two more versions committed meanwhile
    record(service_store, states[3:], payload=payload)

    # When the next run flushes
    envelopes_write(now=later(), store=service_store)

    # Then the recorded range is written under its key first, the rest after, nothing lost
    assert list(EnvelopeSegment.objects.values_list("first_version", "last_version")) == [(1, 3), (4, 5)]
    if stored_then is not None:
        assert service_store.get(key) == stored_then
    assert execution().enveloped_version == 5
    history = read_back(service_folder)
    assert history.gaps == ()
    assert {name for name in LocalFolderStore(service_folder).list("o/acme/e/")} == set(
        EnvelopeSegment.objects.values_list("key", flat=True)
    )


def test_write_envelopes__manifest_fails_hash_check__nothing_written_and_alert(
    service_folder, service_store, caplog
):
    record(service_store, [numbered_state(step) for step in (1, 2)])
    entry = ManifestEntry.objects.filter(manifest__version=1, field="step").get()
    entry.stored = 99
    entry.save()

    with caplog.at_level(logging.CRITICAL, logger="statebag.integrity"):
        run = envelopes_write(now=later(), store=service_store)

    assert run.written == [] and run.failed == [str(execution().pk)]
    assert "fails its hash check on envelope" in caplog.text
    assert service_store.counts["puts"] == 0 and execution().enveloped_version == 0


def test_read_envelope__segment_edited_in_the_store__integrity_error(service_folder, service_store):
    record(service_store, [numbered_state(step) for step in (1, 2)])
    envelopes_write(now=later(), store=service_store)
    key = EnvelopeSegment.objects.get().key
    store = LocalFolderStore(service_folder)
    data = store.get(key)
    store.put(key, data[:-1] + bytes([data[-1] ^ 1]))

    from analemma_sdk.statebag.errors import StateBagError

    with pytest.raises(StateBagError):
        read_envelope(store, key)


# Retention and GC -------------------------------------------------------------------------------
def test_retention__finished_execution_expired__gc_deletes_its_segments(service_folder, service_store):
    record(service_store, [numbered_state(step) for step in (1, 2, 3)])
    finished = execution_finish(owner_id="acme", execution_id="exec-1")
    envelopes_write(now=later(), store=service_store)
    key = EnvelopeSegment.objects.get().key
    assert service_store.exists(key)

    expired = finished.finished_at + timedelta(days=31)
    retention_apply(now=expired)
    run = gc_sweep(now=expired, store=service_store)

    assert not service_store.exists(key) and not EnvelopeSegment.objects.exists()
    assert run.detail["envelopes_deleted"] == 1 and run.store_lists == 0


def test_retention__pinned_version__keeps_its_segment(service_folder, service_store):
    record(service_store, [numbered_state(step) for step in (1, 2, 3)])
    finished = execution_finish(owner_id="acme", execution_id="exec-1")
    envelopes_write(now=later(), store=service_store)
    Manifest.objects.filter(version=2).update(pinned=True)

    expired = finished.finished_at + timedelta(days=31)
    retention_apply(now=expired)
    gc_sweep(now=expired, store=service_store)

    segment = EnvelopeSegment.objects.get()
    assert service_store.exists(segment.key) and segment.gc_candidate_since is None
    assert read_back(service_folder).versions == [1, 2, 3]


def test_retention__running_execution__only_fully_released_segments_go(
    settings, service_folder, service_store
):
    settings.STATEBAG = {**settings.STATEBAG, "ENVELOPE_MAX_VERSIONS": 4}
    busy = timedelta(hours=1)
    states = [numbered_state(step) for step in range(1, 9)]
    record(service_store, states)
    envelopes_write(now=timezone.now(), quiet=busy, store=service_store)  # 1-4, 5-8
    first, second = EnvelopeSegment.objects.order_by("first_version")

    retention_apply(keep_last=3)  # releases v1-v5
    gc_sweep(store=service_store)

    assert not service_store.exists(first.key)
    assert service_store.exists(second.key)
    assert list(EnvelopeSegment.objects.values_list("first_version", flat=True)) == [5]
    history = read_back(service_folder)
    assert history.gaps == ((1, 4),)
    same_states(service_folder, states[4:], first=5)


def test_write_envelopes__versions_released_before_the_flush__passed_over(service_folder, service_store):
    # Given versions that retention released before any segment was written (their packs may
    # be gone already)
    states = [numbered_state(step) for step in range(1, 7)]
    record(service_store, states)
    retention_apply(keep_last=2)  # releases v1-v4

    # When the execution is flushed
    run = envelopes_write(now=later(), store=service_store)

    # Then only what is retained is written, and a reader sees the rest as a gap
    assert [(w.first, w.last) for w in run.written] == [(5, 6)]
    assert execution().enveloped_version == 6
    assert read_back(service_folder).gaps == ((1, 4),)
    same_states(service_folder, states[4:], first=5)


def test_write_envelopes__every_version_released__nothing_written(service_folder, service_store):
    record(service_store, [numbered_state(step) for step in (1, 2)])
    finished = execution_finish(owner_id="acme", execution_id="exec-1")
    expired = finished.finished_at + timedelta(days=31)
    retention_apply(now=expired)

    run = envelopes_write(now=expired, store=service_store)

    assert run.written == [] and service_store.counts["puts"] == 0
    assert execution().enveloped_version == 2 and not EnvelopeSegment.objects.exists()


def test_retention__released_while_segment_pending__collected_once_written(
    service_folder, service_store, crash_at
):
    # Given a segment recorded but not confirmed when retention released its versions
    record(service_store, [numbered_state(step) for step in (1, 2)])
    finished = execution_finish(owner_id="acme", execution_id="exec-1")
    crash_at("envelope.written")
    envelopes_write(now=later(), store=service_store)
    faults.install(None)
    expired = finished.finished_at + timedelta(days=31)
    retention_apply(now=expired)
    gc_sweep(now=expired, store=service_store)  # an unconfirmed segment is left alone
    segment = EnvelopeSegment.objects.get()
    assert segment.written_at is None and service_store.exists(segment.key)

    # When the flush is retried, then GC runs
    envelopes_write(now=expired, store=service_store)
    gc_sweep(now=expired, store=service_store)

    # Then the segment is gone from the store and the rows
    assert not EnvelopeSegment.objects.exists() and not service_store.exists(segment.key)
    assert execution().enveloped_version == 2


# Schedule --------------------------------------------------------------------------------------
def test_envelopes_schedule__migration__creates_it_once():
    from importlib import import_module

    from django.apps import apps
    from django_celery_beat.models import PeriodicTask

    migration = import_module("statebag.migrations.0010_envelopes")
    migration.create(apps, None)
    migration.create(apps, None)

    task = PeriodicTask.objects.get(task="statebag.write_envelopes")
    assert (task.interval.every, task.interval.period) == (1, "minutes")


def test_store_audit__envelope_segments__known_not_deleted(service_folder, service_store):
    from statebag.services.store_audit import store_audit

    record(service_store, [numbered_state(step) for step in (1, 2)])
    envelopes_write(now=later(), quiet=QUIET)
    (segment,) = EnvelopeSegment.objects.all()
    report = store_audit(delete=True, grace=timedelta(0))
    assert segment.key not in report.unknown and LocalFolderStore(service_folder).exists(segment.key)
