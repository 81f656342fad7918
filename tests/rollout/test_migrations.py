"""Data migrations: the audit log moves to its own app with every entry intact, and seeding
the defaults is idempotent (a database seeded by an earlier version gains only what it lacks)."""

from __future__ import annotations

import importlib
from datetime import timedelta

import pytest
from django.apps import apps
from django.contrib.auth.models import Group
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from audit.models import AuditEntry
from rollout.models import Environment, Flag, Revision
from rollout.services import revision_create

BEFORE_MOVE = [
    ("rollout", "0003_default_schedules"),
    ("audit", "0001_initial"),
    ("keys", "0001_default_schedules"),
    ("auth", "0012_alter_user_first_name_max_length"),
    ("contenttypes", "0002_remove_content_type_name"),
]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_audit_log_move__entries_copied_with_environment_actor_and_time():
    old = migrate(BEFORE_MOVE)
    qa = old.get_model("rollout", "Environment").objects.create(key="qa", name="QA")
    entries = old.get_model("rollout", "AuditEntry").objects
    entries.create(environment=qa, actor="alice", action="flag.update", target="use_zstd", detail={"r": 3})
    entries.create(environment=None, actor="bob", action="flag.create", target="checkout")
    long_ago = timezone.now() - timedelta(days=400)
    entries.filter(actor="alice").update(created_at=long_ago)
    old_type = old.get_model("contenttypes", "ContentType").objects.get_or_create(
        app_label="rollout", model="auditentry"
    )[0]
    viewing = old.get_model("auth", "Permission").objects.get_or_create(
        content_type=old_type, codename="view_auditentry", defaults={"name": "Can view audit entry"}
    )[0]
    old.get_model("auth", "Group").objects.create(name="auditors").permissions.add(viewing)

    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())

    alice = AuditEntry.objects.get(actor="alice")
    assert (alice.environment, alice.action, alice.target, alice.detail) == (
        "qa",
        "flag.update",
        "use_zstd",
        {"r": 3},
    )
    assert abs(alice.created_at - long_ago) < timedelta(seconds=1)
    assert AuditEntry.objects.get(actor="bob").environment == ""
    auditors = Group.objects.get(name="auditors")
    assert auditors.permissions.filter(content_type__app_label="audit", codename="view_auditentry").exists()


@pytest.mark.django_db
def test_seed_defaults__run_again__changes_nothing():
    seed = importlib.import_module("rollout.migrations.0005_seed_defaults").seed
    before = (
        Environment.objects.count(),
        Flag.objects.count(),
        Revision.objects.count(),
        AuditEntry.objects.count(),
    )
    seed(apps, None)
    after = (
        Environment.objects.count(),
        Flag.objects.count(),
        Revision.objects.count(),
        AuditEntry.objects.count(),
    )
    assert before == after == (3, 4, 3, 7)


@pytest.mark.django_db
def test_seed_defaults__a_flag_missing__gains_it_and_one_revision():
    # A database from before the flag existed: its latest revisions do not have it either.
    Flag.objects.get(key="use_2pc").delete()
    for environment in Environment.objects.all():
        revision_create(environment=environment, actor="then")
    revisions = Revision.objects.count()
    importlib.import_module("rollout.migrations.0005_seed_defaults").seed(apps, None)
    assert Flag.objects.filter(key="use_2pc").exists()
    assert Revision.objects.count() == revisions + 3
    for environment in Environment.objects.all():
        latest = environment.revisions.order_by("-number").first()
        assert "use_2pc" in latest.document["flags"]
        assert [change["flag"] for change in latest.diff] == ["use_2pc"]


@pytest.mark.django_db(transaction=True)
def test_revisions_move_to_flag_versions__older_revisions_read_and_the_next_change_is_small():
    leaves = MigrationExecutor(connection).loader.graph.leaf_nodes()
    old = migrate([("rollout", "0006_key_prefix_fits_every_environment")])
    qa = old.get_model("rollout", "Environment").objects.create(key="qa", name="QA")
    spec = {
        "kind": "boolean",
        "default": False,
        "enabled": False,
        "value": None,
        "percentage": 100.0,
        "variants": [],
        "targets": [],
        "rules": [],
        "bucket_by": "execution_id",
        "salt": "",
        "seed": None,
    }
    revisions = old.get_model("rollout", "Revision").objects
    for number, enabled in ((1, False), (2, True)):
        flags = {"checkout": {**spec, "enabled": enabled}, "search": spec}
        document = {"format": 1, "environment": "qa", "revision": number, "flags": flags}
        revisions.create(environment=qa, number=number, document=document, etag=f'"e{number}"')
    flag = old.get_model("rollout", "Flag").objects.create(
        key="checkout", kind="boolean", default_value=False
    )
    old.get_model("rollout", "FlagState").objects.create(flag=flag, environment=qa, enabled=True)

    migrate(leaves)

    qa = Environment.objects.get(key="qa")
    first, second = Revision.objects.filter(environment=qa).order_by("number")
    assert first.document["flags"]["checkout"]["enabled"] is False
    assert second.document["flags"]["checkout"]["enabled"] is True
    assert sorted(qa.flag_versions.values_list("flag_key", "since", "until")) == [
        ("checkout", 2, None),
        ("search", 2, None),
    ]
    from rollout.services import flag_state_update

    third = flag_state_update(flag=Flag.objects.get(key="checkout"), environment=qa, actor="t", enabled=False)
    assert third.snapshot is None and set(third.document["flags"]) == {"checkout", "search"}
    assert qa.flag_versions.count() == 3
