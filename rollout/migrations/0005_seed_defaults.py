"""dev, staging and prod, each with the state bag's own flags (off, zstd level 3) and a first
revision. Idempotent: a database seeded before this migration existed keeps what it has and
only gains what is missing.

The revision's document is built by the service's own code rather than a frozen copy: a new
database must start with the document format the service serves today, and every test run
migrates a new database, so a change that breaks this migration fails at once."""

from django.db import migrations

from analemma_sdk.flags.spec import SDK_FLAGS, flag_set_document
from rollout.services.documents import document_body, document_etag, flag_document

ENVIRONMENTS = (("dev", "Development"), ("staging", "Staging"), ("prod", "Production"))
ACTOR = "system"


def seed(apps, schema_editor):
    environment_model = apps.get_model("rollout", "Environment")
    flag_model = apps.get_model("rollout", "Flag")
    state_model = apps.get_model("rollout", "FlagState")
    revision_model = apps.get_model("rollout", "Revision")
    audit_model = apps.get_model("audit", "AuditEntry")
    for key, name in ENVIRONMENTS:
        _, created = environment_model.objects.get_or_create(key=key, defaults={"name": name})
        if created:
            audit_model.objects.create(action="environment.create", actor=ACTOR, target=key, environment=key)
    for key, declared in SDK_FLAGS.items():
        if not flag_model.objects.filter(key=key).exists():
            flag_model.objects.create(
                key=key,
                kind=declared["kind"],
                default_value=declared["default"],
                description=declared["description"],
                owner="statebag",
            )
            audit_model.objects.create(
                action="flag.create", actor=ACTOR, target=key, detail={"kind": declared["kind"], "default": declared["default"]}
            )
    for environment in environment_model.objects.all():
        missing = list(flag_model.objects.exclude(states__environment=environment))
        for flag in missing:
            state_model.objects.create(flag=flag, environment=environment, enabled=False, value=flag.default_value)
        previous = revision_model.objects.filter(environment=environment).order_by("-number").first()
        if missing or previous is None:
            _revision(revision_model, state_model, environment, previous)


def _revision(revision_model, state_model, environment, previous):
    states = state_model.objects.filter(environment=environment).select_related("flag")
    # The service's own document code: it reads only fields the historical models have too.
    flags = {state.flag.key: flag_document(state) for state in states}
    before = _flags_of(previous)
    number = previous.number + 1 if previous else 1
    document = flag_set_document(environment.key, number, flags)
    revision_model.objects.create(
        environment=environment,
        number=number,
        **{_document_field(revision_model): document},
        etag=document_etag(document_body(document)),
        diff=[
            {"flag": key, "field": "*", "before": None, "after": flags[key]}
            for key in sorted(flags)
            if key not in before
        ],
        reason="defaults",
        created_by=ACTOR,
    )


def _document_field(revision_model):
    # "document" in this migration's models; "snapshot" from 0007 on (tests seed with today's).
    names = {field.name for field in revision_model._meta.get_fields()}
    return "document" if "document" in names else "snapshot"


def _flags_of(revision):
    if revision is None:
        return {}
    stored = getattr(revision, _document_field(type(revision)))
    if stored is not None:
        return stored["flags"]
    return revision.flags()  # a revision saved by today's service (tests seed with its models)


class Migration(migrations.Migration):
    dependencies = [
        ("rollout", "0004_audit_log_moves_to_its_app"),
        ("audit", "0001_initial"),
    ]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
