"""get_hydrator from flags: precedence of arguments, environment, the execution's recorded
configuration and the flag set; safe fallback when flags or zstandard are missing."""

from __future__ import annotations

import sys
import time

import pytest

from analemma_sdk import FlagClient
from analemma_sdk.statebag import META_KEY, LocalFolderStore, get_hydrator, metrics
from analemma_sdk.statebag.config import read_config_tag, resolve_config, unit_from_event

from .flag_server import document, flag

ENV = ("USE_BATCHING", "USE_ZSTD", "ZSTD_LEVEL", "USE_2PC")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def store(tmp_path):
    return LocalFolderStore(tmp_path / "blobs")


def flags_with(revision=5, **states):
    snapshot = {"document": document(revision, **states), "fetched_at": time.time()}
    return FlagClient(
        "http://127.0.0.1:9", "ask_prod_" + "k" * 43, cache_path=None, ttl=3600, bootstrap=snapshot
    )


ALL_ON = {
    "use_batching": flag(),
    "use_zstd": flag(),
    "zstd_level": flag(kind="number", default=3, value=9),
    "use_2pc": flag(enabled=False),
}


def test_flags__configure_the_hydrator_for_the_unit(store):
    hydrator = get_hydrator(flags=flags_with(**ALL_ON), unit="exec-1", store=store)
    assert (hydrator.use_batching, hydrator.use_zstd, hydrator.zstd_level, hydrator.use_2pc) == (
        True,
        True,
        9,
        False,
    )
    config = resolve_config(flags=flags_with(**ALL_ON), unit="exec-1")
    assert (config.sources["use_batching"], config.flags_revision) == ("flags", 5)


def test_flags__percentage__units_split_and_each_keeps_its_answer(store):
    flags = flags_with(use_batching=flag(percentage=50.0))
    modes = {
        unit: get_hydrator(flags=flags, unit=unit, store=store).use_batching for unit in map(str, range(200))
    }
    assert set(modes.values()) == {True, False}
    assert all(get_hydrator(flags=flags, unit=u, store=store).use_batching == m for u, m in modes.items())


def test_env__overrides_the_flag_set(monkeypatch, store):
    monkeypatch.setenv("USE_BATCHING", "false")
    monkeypatch.setenv("ZSTD_LEVEL", "5")
    hydrator = get_hydrator(flags=flags_with(**ALL_ON), unit="exec-1", store=store)
    assert (hydrator.use_batching, hydrator.zstd_level) == (False, 5)
    sources = resolve_config(flags=flags_with(**ALL_ON), unit="exec-1").sources
    assert (sources["use_batching"], sources["use_zstd"]) == ("env", "flags")


def test_argument__overrides_the_environment(monkeypatch, store):
    monkeypatch.setenv("USE_BATCHING", "false")
    assert get_hydrator(use_batching=True, flags=flags_with(), unit="u", store=store).use_batching is True


def test_event__execution_keeps_its_configuration_while_the_rollout_moves(store):
    state = {"notes": "x" * 5000}
    ramped = flags_with(**ALL_ON)
    first = get_hydrator(flags=ramped, event={"execution_id": "exec-9"}, store=store)
    payload = first.dehydrate(state, owner_id="acme", workflow_id="wf", execution_id="exec-9")
    killed = flags_with(revision=6, use_batching=flag(enabled=False), use_zstd=flag(enabled=False))
    later = get_hydrator(flags=killed, event={"state_data": payload}, store=store)
    assert later is first  # same configuration, same hydrator (and its warm cache)
    assert resolve_config(flags=killed, event={"state_data": payload}).sources["use_batching"] == "execution"
    fresh = get_hydrator(flags=killed, event={"execution_id": "exec-10"}, store=store)
    assert fresh.use_batching is False


def test_event__environment_override_still_wins_over_the_recorded_configuration(monkeypatch, store):
    hydrator = get_hydrator(flags=flags_with(**ALL_ON), unit="exec-3", store=store)
    payload = hydrator.dehydrate({"a": "b" * 3000}, owner_id="acme", workflow_id="wf", execution_id="exec-3")
    monkeypatch.setenv("USE_BATCHING", "0")
    assert get_hydrator(flags=flags_with(**ALL_ON), event=payload, store=store).use_batching is False


def test_unit_from_event__three_shapes():
    assert unit_from_event({"execution_id": "a"}) == "a"
    assert unit_from_event({"state_data": {"executionId": "b"}}) == "b"
    assert unit_from_event({"state_data": {"bag": {"__statebag__": {"execution": "c"}}}}) == "c"
    assert unit_from_event({"nothing": 1}) is None


def test_unreachable_flag_server__legacy_path(store):
    client = FlagClient("http://127.0.0.1:9", "ask_prod_" + "k" * 43, cache_path=None, timeout=0.2)
    hydrator = get_hydrator(flags=client, unit="exec-1", store=store)
    assert hydrator.mode == "legacy"


def test_broken_flags_object__legacy_path_with_metric(store):
    class Broken:
        def bool(self, *args, **kwargs):
            raise RuntimeError("boom")

    before = metrics.counters["statebag_flags_unavailable_total"]
    assert get_hydrator(flags=Broken(), unit="u", store=store).mode == "legacy"
    assert metrics.counters["statebag_flags_unavailable_total"] == before + 1


def test_zstandard_missing__legacy_path_with_warning_and_metric(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "zstandard", None)  # as if it were not installed
    before = metrics.counters["statebag_zstd_unavailable_total"]
    config = resolve_config(flags=flags_with(**ALL_ON), unit="exec-1")
    assert (config.use_batching, config.use_zstd, config.sources["use_zstd"]) == (False, False, "fallback")
    assert metrics.counters["statebag_zstd_unavailable_total"] == before + 1
    assert "zstandard" in caplog.text


def test_invalid_environment_value__ignored_with_a_warning(monkeypatch, caplog):
    monkeypatch.setenv("USE_ZSTD", "perhaps")
    monkeypatch.setenv("ZSTD_LEVEL", "99")
    config = resolve_config()
    assert (config.use_zstd, config.zstd_level) == (False, 3)
    assert "USE_ZSTD" in caplog.text and "ZSTD_LEVEL" in caplog.text


def test_config_tag__payload_records_it_keyed_by_field_name(store):
    hydrator = get_hydrator(flags=flags_with(**ALL_ON), unit="exec-4", store=store)
    payload = hydrator.dehydrate({"a": 1}, owner_id="acme", workflow_id="wf", execution_id="exec-4")
    assert payload[META_KEY]["cfg"] == {
        "use_batching": True,
        "use_zstd": True,
        "zstd_level": 9,
        "use_2pc": False,
    }


@pytest.mark.parametrize(
    "tag",
    [
        [1, 1, 9, 0],  # positional, as payloads written before the keyed tag carry it
        {"use_batching": True, "use_zstd": True, "zstd_level": 9, "use_2pc": False},
    ],
)
def test_config_tag__positional_and_keyed__execution_keeps_its_configuration(store, tag):
    event = {"state_data": {"bag": {"a": 1, META_KEY: {"v": 1, "execution": "exec-5", "cfg": tag}}}}
    killed = flags_with(revision=6, use_batching=flag(enabled=False), use_zstd=flag(enabled=False))
    config = resolve_config(flags=killed, event=event)
    assert (config.use_batching, config.use_zstd, config.zstd_level, config.use_2pc) == (True, True, 9, False)
    assert {config.sources[name] for name in ("use_batching", "use_zstd", "zstd_level", "use_2pc")} == {
        "execution"
    }
    hydrator = get_hydrator(flags=killed, event=event, store=store)
    assert (hydrator.mode, hydrator.zstd_level) == ("batched_zstd", 9)


@pytest.mark.parametrize(
    "tag",
    [
        [1, 1, 9],
        [1, 1, 99, 0],
        [1, 1, None, 0],
        {"use_batching": True, "use_zstd": True, "zstd_level": "high", "use_2pc": False},
        "1,1,9,0",
        None,
    ],
)
def test_config_tag__malformed__ignored(tag):
    assert read_config_tag(tag) == {}
    event = {META_KEY: {"execution": "exec-6", "cfg": tag}}
    assert resolve_config(event=event).sources["use_batching"] == "default"


def test_config_tag__keyed_tag_without_a_setting__the_others_still_pin():
    # A setting added after the payload was written: what the payload did record still holds.
    tag = {"use_batching": True, "use_zstd": True, "zstd_level": 9}
    assert read_config_tag(tag) == tag
    config = resolve_config(event={META_KEY: {"execution": "exec-7", "cfg": tag}}, unit="exec-7")
    assert (config.zstd_level, config.sources["zstd_level"], config.sources["use_2pc"]) == (
        9,
        "execution",
        "default",
    )
