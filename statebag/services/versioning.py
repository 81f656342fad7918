"""Recording state versions as manifests: the ORM-backed manifest store the hydrator calls.

Two ways in, one set of rules:

* ``record(draft)`` — one step: a version whose uploads are done (``use_2pc=False``), or one
  that uploads nothing at all (most steps: their state rides in the payload). Nothing then
  waits between two phases for a collector to race, so one transaction is the whole protocol.
* ``prepare(request)`` → upload → ``commit(txn_id, ...)`` — the two-phase commit: prepare
  records the transaction, the packs about to be uploaded (PENDING) and pins on the stored
  blobs it reuses, so neither the reaper nor GC can delete them meanwhile; commit marks the
  packs live, creates the manifest and moves the head. A PREPARED transaction that expires
  is aborted by the reaper, which deletes what only it uploaded.

Either way the head moves only with an optimistic check on the expected parent (a lost race
is a ManifestConflictError, never an overwrite), and a repeated idempotency key returns the
first version instead of creating a second one. Every blob a version points at is checked
inside the transaction that records it: in a pack of the owner that is live (or that this very
transaction uploaded), holding the frame exactly as the pointer describes it. On PostgreSQL
that check holds a KEY SHARE lock on each such pack until the version is committed, and GC
marks a pack DELETING only under FOR UPDATE: it waits, then sees the new manifest's reference;
or it went first, and the check finds the pack DELETING. SQLite serialises writers.

At fleet scale what a commit costs is its round trips to the database: on PostgreSQL the usual
case is one statement per request (``_prepare_at_once``, ``_version_at_once``), after one
unlocked read for commit and record. Each writes all of its rows or none: every write in it
waits on a condition (the transaction still prepared, the head still where it was read, no
replay, every reused blob, pointer and parent found), checked on rows locked by that same
statement, so it needs no transaction around it. When the condition fails nothing was
written, and the transactional path runs instead: it locks, reads again and answers exactly
(a replay, a conflict, which pointer dangles). It is also the only path on SQLite.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, connections, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Model, Q
from django.utils import timezone

from analemma_sdk.statebag import (
    META_KEY,
    ManifestDraft,
    ManifestRecord,
    StateBag,
    StateHydrator,
    manifest_hash,
)
from analemma_sdk.statebag.manifests import PackWrite, Prepared, PrepareRequest
from analemma_sdk.statebag.packs import FrameRef
from analemma_sdk.statebag.pointers import BlobRef, ListRef, parse_pointer
from core import metrics as service_metrics

from ..conf import statebag_settings
from ..errors import DanglingPointerError, ManifestConflictError, StaleReferenceError, TransactionAbortedError
from ..faults import checkpoint
from ..models import Blob, CommitTransaction, Execution, Manifest, ManifestEntry, ManifestParent, Pack, Pin
from .chain import manifest_document
from .rows import (
    Statement,
    Table,
    column_defaults,
    db_value,
    insert_rows,
    param,
    quote,
    run_statements,
    statement_cursor,
    values_table,
)

logger = logging.getLogger("statebag.versioning")

PREPARED, COMMITTED = CommitTransaction.State.PREPARED, CommitTransaction.State.COMMITTED
LIVE, PENDING, DELETING = Pack.State.LIVE, Pack.State.PENDING, Pack.State.DELETING
# How a version that uploaded nothing was committed: one step, and no bypass of the two phases.
NO_UPLOAD = "noupload"
LINK_COLUMNS = [
    ("k", "text"),
    ("d", "text"),
    ("o", "bigint"),
    ("n", "bigint"),
    ("c", "text"),
    ("s", "bigint"),
    ("x", "text"),
]


class StateVersioningService:
    def __init__(self, *, use_2pc: bool | None = None, transaction_ttl: timedelta | None = None) -> None:
        configured = statebag_settings()
        self.use_2pc = configured.use_2pc if use_2pc is None else use_2pc
        self.transaction_ttl = transaction_ttl or configured.transaction_ttl

    # One step -----------------------------------------------------------------------
    @service_metrics.commit_observed("record")
    def record(self, draft: ManifestDraft) -> ManifestRecord:
        if self.use_2pc and draft.packs:
            # The caller uploaded without the two-phase path although it is required here: say
            # so. A version that uploads nothing has nothing a collector could race.
            service_metrics.increment("statebag_2pc_bypassed_total")
            logger.error(
                "manifest for %s recorded without two-phase commit while use_2pc is on", draft.execution_id
            )
        entries = EntryRows(draft.entries)  # before the transaction: nothing here needs its lock
        if not draft.packs and _at_once():
            done = _unless_refused(_record_at_once, draft, entries)
            if done is not None:
                return done
        try:
            with transaction.atomic():
                if draft.packs:
                    _record_packs(draft.packs, draft.owner_id, LIVE, None)
                head = _lock_execution(
                    draft.owner_id, draft.workflow_id, draft.execution_id, draft.idempotency_key
                )
                if head.replayed is not None:
                    return _replayed(Manifest.objects.select_related("execution").get(pk=head.replayed))
                return _write_version(
                    head,
                    parents=tuple(draft.parents),
                    entries=entries,
                    cohort=draft.cohort,
                    idempotency_key=draft.idempotency_key or "",
                    via="direct" if draft.packs else NO_UPLOAD,
                )
        except _NotLive:
            # Every blob a one-step version points at is one it keeps: as at prepare, one that
            # is gone is a stale reference (the client stores it again), one described wrongly
            # a dangling pointer.
            raise _stale_or_dangling(draft.owner_id, entries) from None
        except IntegrityError as exc:
            raise ManifestConflictError(f"concurrent commit on {draft.execution_id}: {exc}") from exc

    # Two-phase ---------------------------------------------------------------------------
    def prepare(self, request: PrepareRequest) -> Prepared:
        declared = _declared(request.packs)
        reused = list(dict.fromkeys(request.reused))  # a blob named twice is pinned once
        txn = CommitTransaction(
            id=uuid.uuid4(),
            owner_id=request.owner_id,
            workflow_id=request.workflow_id,
            execution_id=request.execution_id,
            parents=list(request.parents),
            upload_keys=list(declared),
            idempotency_key=request.idempotency_key or "",
            expires_at=timezone.now() + self.transaction_ttl,
        )
        if _at_once() and _prepare_at_once(txn, declared, reused):
            return Prepared(txn_id=str(txn.pk), expires_at=txn.expires_at.timestamp())
        try:
            with transaction.atomic():
                _prepare_rows(txn, declared, reused)
                checkpoint("prepare.recorded")
                checkpoint("prepare.pinned")
        except _Replayed:
            done = _committed_for_key(request.owner_id, request.execution_id, txn.idempotency_key)
            if done is None:  # the version it found is gone again: only a conflict explains that
                raise ManifestConflictError(f"concurrent commit on {request.execution_id}") from None
            return Prepared(txn_id="", expires_at=0.0, committed=done)
        except _Stale:
            missing = ReusedBlobs(request.owner_id, reused).missing or tuple(digest for _, digest in reused)
            raise StaleReferenceError(
                f"{len(missing)} reused blob(s) are no longer stored", missing
            ) from None
        return Prepared(txn_id=str(txn.pk), expires_at=txn.expires_at.timestamp())

    def commit(self, txn_id: str, entries: Mapping[str, Any], cohort: Mapping[str, Any]) -> ManifestRecord:
        return self.commit_rows(txn_id, EntryRows(entries), cohort)

    @service_metrics.commit_observed("two_phase")
    def commit_rows(
        self, txn_id: str, rows: EntryRows, cohort: Mapping[str, Any], read: TransactionRead | None = None
    ) -> ManifestRecord:
        """``commit`` with its entries made ready before anything is locked (``EntryRows``), and
        the transaction as ``transaction_read`` found it, when the caller read it already."""
        if _at_once():
            read = read or transaction_read(txn_id)
            done = _unless_refused(_commit_at_once, read, rows, cohort) if read is not None else None
            if done is not None:
                return done
        scope: list[Locked] = []
        try:
            with transaction.atomic():
                scope.append(_lock_transaction(txn_id))
                return _commit_locked(scope[0], rows, cohort)
        except _NotLive:
            # Refused input changes nothing: the transaction stays prepared, for a corrected
            # commit (a client that gives up aborts it, else the reaper does once it expires).
            raise _dangling(scope[0].owner_id, rows, scope[0].upload_keys) from None
        except (ManifestConflictError, IntegrityError) as exc:
            self.abort(txn_id, reason=str(exc))
            if isinstance(exc, IntegrityError):
                raise ManifestConflictError(f"concurrent commit: {exc}") from exc
            raise

    def abort(self, txn_id: str, reason: str = "aborted by the client") -> None:
        """Abort a prepared transaction; what only it uploaded becomes a GC candidate."""
        with transaction.atomic():
            try:
                txn = _locked_transaction(txn_id)
            except TransactionAbortedError:
                return
            transaction_abort(txn, reason)


def transaction_abort(txn: CommitTransaction, reason: str) -> None:
    """Mark a locked PREPARED transaction ABORTED, drop its pins, flag its uploads for GC."""
    if txn.state != PREPARED:
        return
    now = timezone.now()
    txn.state = CommitTransaction.State.ABORTED
    txn.reason = reason[:2000]
    txn.finished_at = now
    txn.save(update_fields=["state", "reason", "finished_at"])
    txn.pins.all().delete()
    Pack.objects.filter(
        key__in=txn.upload_keys, owner_id=txn.owner_id, gc_candidate_since__isnull=True
    ).update(gc_candidate_since=now)


# What the statements answer instead of raising (the transaction is rolled back) --------------
class _Replayed(Exception):
    """The idempotency key committed already."""


class _Stale(Exception):
    """A reused blob is not in a live pack any more."""


class _NotLive(Exception):
    """A pointer names no frame of a live pack of the owner."""


def _connection() -> BaseDatabaseWrapper:
    return connections[router.db_for_write(Manifest)]


def _rows(answer: Any) -> list[tuple[Any, ...]]:
    assert isinstance(answer, list), "a statement with RETURNING answers rows"
    return answer


def _json_list(value: Any) -> list[Any]:
    """A JSON column read by raw SQL: text on both backends (Django reads jsonb as text)."""
    parsed = json.loads(value) if isinstance(value, str | bytes) else value
    return list(parsed)


# Rows as SQL ----------------------------------------------------------------------------------
def _insert_row(
    connection: BaseDatabaseWrapper, model: type[Model], values: Mapping[str, Any]
) -> tuple[str, list[Any]]:
    """``INSERT INTO <model's table> (<columns>) SELECT <values>``: one row, every column given
    (``values`` in database form), to which a WHERE, ON CONFLICT or RETURNING may follow."""
    names = list(values)
    placeholders = ", ".join(param(connection, model, name) for name in names)
    sql = f"INSERT INTO {quote(connection, model)} ({quote(connection, model, *names)}) SELECT {placeholders}"
    return sql, list(values.values())


def _transaction_values(connection: BaseDatabaseWrapper, txn: CommitTransaction) -> dict[str, Any]:
    values = column_defaults(connection, CommitTransaction, ())
    values["id"] = db_value(CommitTransaction, "id", txn.pk)
    for name in (
        "owner_id",
        "workflow_id",
        "execution_id",
        "parents",
        "upload_keys",
        "idempotency_key",
        "expires_at",
    ):
        values[name] = db_value(CommitTransaction, name, getattr(txn, name))
    return values


def _execution_values(
    connection: BaseDatabaseWrapper, owner_id: str, workflow_id: str, execution_id: str
) -> dict[str, Any]:
    given = {"owner_id": owner_id, "workflow_id": workflow_id, "execution_id": execution_id}
    return {**given, **column_defaults(connection, Execution, given)}


def _manifest_values(connection: BaseDatabaseWrapper, manifest: Manifest) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for each in Manifest._meta.concrete_fields:
        value = each.pre_save(manifest, add=True)
        if not (each.primary_key and value is None):
            values[each.name] = each.get_db_prep_save(value, connection)
    return values


def _not_replayed(connection: BaseDatabaseWrapper, execution: str) -> str:
    """No manifest of ``execution`` (an SQL expression) has the idempotency key (a parameter).
    The key's condition reads as the unique index's does, so that the index is used."""
    return (
        f"NOT EXISTS (SELECT 1 FROM {quote(connection, Manifest)} WHERE execution_id = {execution} "
        "AND idempotency_key = %s AND NOT (idempotency_key = ''))"
    )


def _not_replayed_by_ids(connection: BaseDatabaseWrapper) -> str:
    """As ``_not_replayed``, the execution named by owner and execution id (parameters, before
    the key)."""
    return (
        f"NOT EXISTS (SELECT 1 FROM {quote(connection, Manifest)} m JOIN {quote(connection, Execution)} e "
        "ON e.id = m.execution_id WHERE e.owner_id = %s AND e.execution_id = %s AND m.idempotency_key = %s "
        "AND NOT (m.idempotency_key = ''))"
    )


def _reused_blobs(connection: BaseDatabaseWrapper, table: str) -> str:
    """(pack id, digest) of each reused blob (``table``: k, d) still in a pack of the owner (a
    parameter) that is not being deleted (a parameter); on PostgreSQL the pack is held (KEY
    SHARE) until the statement's transaction ends: a GC that locked it first has deleted it or
    marked it DELETING, and one that comes later sees the pin."""
    lock = " FOR KEY SHARE OF p" if connection.vendor == "postgresql" else ""
    return (
        f"SELECT p.id, {table}.d FROM {table} JOIN {quote(connection, Pack)} p ON p.key = {table}.k "
        f"AND p.owner_id = %s JOIN {quote(connection, Blob)} b ON b.pack_id = p.id AND b.digest = {table}.d "
        f"WHERE p.state <> %s{lock}"
    )


def _linked_blobs(connection: BaseDatabaseWrapper, table: str, *, uploaded: bool) -> tuple[str, list[Any]]:
    """The blob id of every frame ``table`` (``LINK_COLUMNS``) names, found exactly as named
    (pack, digest, offset, length, codec, raw size, dictionary) in a pack of the owner (a
    parameter, first): one the transaction uploaded (PENDING until its commit), or a live one,
    held (KEY SHARE) on PostgreSQL until the statement's transaction ends."""
    match = " AND ".join(
        f"b.{quote(connection, Blob, column)} = {table}.{alias}"
        for column, alias in (
            ("digest", "d"),
            ("offset", "o"),
            ("length", "n"),
            ("codec", "c"),
            ("raw_size", "s"),
            ("dict_id", "x"),
        )
    )
    if uploaded:
        states, lock, params = "p.state IN (%s, %s)", "", [PENDING, LIVE]
    else:
        states, params = "p.state = %s", [LIVE]
        lock = " FOR KEY SHARE OF p" if connection.vendor == "postgresql" else ""
    sql = (
        f"SELECT b.id FROM {table} JOIN {quote(connection, Pack)} p ON p.key = {table}.k AND p.owner_id = %s "
        f"JOIN {quote(connection, Blob)} b ON b.pack_id = p.id AND {match} WHERE {states}{lock}"
    )
    return sql, params


def _links_tables(
    connection: BaseDatabaseWrapper, entries: EntryRows, uploads: AbstractSet[str]
) -> list[tuple[Table, bool, int]]:
    """The frames the entries name as tables: those in the transaction's uploads, the others."""
    tables = []
    for name, uploaded in (("wu", True), ("wl", False)):
        links = [link for link in entries.links if (link[0] in uploads) == uploaded]
        if links:
            tables.append((values_table(connection, name, LINK_COLUMNS, links), uploaded, len(links)))
    return tables


def _frames_table(connection: BaseDatabaseWrapper, declared: Mapping[str, PackWrite]) -> Table:
    frames = [
        (w.key, f.digest, f.offset, f.length, f.codec, f.raw_size, f.dict_id or "")
        for w in declared.values()
        for f in w.frames
    ]
    return values_table(connection, "df", LINK_COLUMNS, frames)


def _packs_table(connection: BaseDatabaseWrapper, declared: Mapping[str, PackWrite]) -> Table:
    rows = [(w.key, w.digest, w.size, w.kind) for w in declared.values()]
    return values_table(
        connection, "dp", [("k", "text"), ("d", "text"), ("n", "bigint"), ("kind", "text")], rows
    )


def _packs_insert(
    connection: BaseDatabaseWrapper, txn: CommitTransaction, now: Any, where: str = "true"
) -> tuple[str, list[Any]]:
    """The declared packs (table ``dp``) that are new, PENDING under the transaction; answers
    their (id, key). One recorded before is left as it is, for ``_declared_again``."""
    given = ("key", "digest", "size", "kind", "owner_id", "state", "transaction", "created_at")
    others = column_defaults(connection, Pack, given)
    constants = ", ".join(
        param(connection, Pack, name) for name in ("owner_id", "state", "transaction", "created_at", *others)
    )
    sql = (
        f"INSERT INTO {quote(connection, Pack)} ({quote(connection, Pack, *given, *others)}) "
        f"SELECT dp.k, dp.d, dp.n, dp.kind, {constants} FROM dp "
        f"WHERE {where} "  # a WHERE also keeps SQLite from reading ON as a join's
        "ON CONFLICT (key) DO NOTHING"
    )
    return sql, [txn.owner_id, PENDING, db_value(Pack, "transaction", txn.pk), now, *others.values()]


def _pins_insert(
    connection: BaseDatabaseWrapper, source: str, alias: str, digest: str, where: str = "true"
) -> str:
    """Pins of the transaction (a parameter, then the time) on each pack (``alias``.id) of
    ``source``, for the blob ``digest`` (an SQL expression; empty for a whole upload)."""
    return (
        f"INSERT INTO {quote(connection, Pin)} (transaction_id, pack_id, digest, created_at) "
        f"SELECT {param(connection, Pin, 'transaction')}, {alias}.id, {digest}, {param(connection, Pin, 'created_at')} "
        f"FROM {source} WHERE {where}"
    )


def _blobs_insert(connection: BaseDatabaseWrapper, new: str) -> str:
    """The frames (table ``df``) of the packs in ``new`` (id, key), all new: owner and time are
    parameters."""
    columns = quote(
        connection,
        Blob,
        "pack",
        "owner_id",
        "digest",
        "offset",
        "length",
        "codec",
        "raw_size",
        "dict_id",
        "created_at",
    )
    return (
        f"INSERT INTO {quote(connection, Blob)} ({columns}) "
        f"SELECT {new}.id, {param(connection, Blob, 'owner_id')}, df.d, df.o, df.n, df.c, df.s, df.x, "
        f"{param(connection, Blob, 'created_at')} FROM df JOIN {new} ON {new}.key = df.k"
    )


def _packs_live(
    connection: BaseDatabaseWrapper,
    owner_id: str,
    keys: Sequence[str],
    used: AbstractSet[str],
    now: datetime,
    where: str = "true",
) -> Statement:
    """The transaction's uploads live, unless being deleted. Those the new version points into
    (``used``) are no longer GC candidates; one it does not use (the client declared more than
    it needed) becomes one now, since nothing else would ever flag it. A pack already live and
    not a candidate that the version uses is left alone: many executions may share it."""
    table = values_table(
        connection, "wk", [("k", "text"), ("u", "boolean")], [(key, key in used) for key in keys]
    )
    return Statement(
        f"UPDATE {quote(connection, Pack)} SET state = %s, gc_candidate_since = CASE "
        "WHEN key IN (SELECT k FROM wk WHERE u) THEN NULL ELSE COALESCE(gc_candidate_since, %s) END "
        "WHERE owner_id = %s AND key IN (SELECT k FROM wk) AND state <> %s "
        "AND (state <> %s OR gc_candidate_since IS NOT NULL OR key IN (SELECT k FROM wk WHERE NOT u)) "
        f"AND {where}",
        [LIVE, db_value(Pack, "gc_candidate_since", now), owner_id, DELETING, LIVE],
        (table,),
    )


# Prepare, the transactional path ------------------------------------------------------------------
def _declared(writes: Iterable[PackWrite]) -> dict[str, PackWrite]:
    declared: dict[str, PackWrite] = {}
    for write in writes:
        if declared.setdefault(write.key, write) != write:
            raise ManifestConflictError(f"{write.key} is declared twice, differently")
    return declared


def _prepare_rows(
    txn: CommitTransaction, declared: dict[str, PackWrite], reused: list[tuple[str, str]]
) -> None:
    """Every row a prepare writes, under its transaction: _Replayed when its idempotency key
    committed already, _Stale when a reused blob is gone."""
    connection = _connection()
    now = db_value(Pin, "created_at", timezone.now())
    txn_id = db_value(Pin, "transaction", txn.pk)
    insert, params = _insert_row(connection, CommitTransaction, _transaction_values(connection, txn))
    if txn.idempotency_key:
        insert += f" WHERE {_not_replayed_by_ids(connection)}"
        params += [txn.owner_id, txn.execution_id, txn.idempotency_key]
    execution, execution_params = _insert_row(
        connection, Execution, _execution_values(connection, txn.owner_id, txn.workflow_id, txn.execution_id)
    )
    statements = [
        Statement(insert, params),
        Statement(
            f"{execution} WHERE true ON CONFLICT (owner_id, execution_id) DO NOTHING", execution_params
        ),
    ]
    if reused:
        table = values_table(connection, "dr", [("k", "text"), ("d", "text")], reused)
        source = f"({_reused_blobs(connection, 'dr')}) rp"
        statements.append(
            Statement(
                _pins_insert(connection, source, "rp", "rp.d"),
                [txn_id, now, txn.owner_id, DELETING],
                (table,),
            )
        )
    created: dict[str, int] = {}
    if declared:
        sql, params = _packs_insert(connection, txn, now)
        statements.append(Statement(sql, params, (_packs_table(connection, declared),), returning="id, key"))
    answers = run_statements(connection, statements)
    if answers[0] != 1:
        raise _Replayed
    if reused and answers[2] != len(reused):
        raise _Stale
    if not declared:
        return
    created = {key: pack_id for pack_id, key in _rows(answers[-1])}
    if created:
        new = values_table(
            connection, "np", [("id", "bigint"), ("key", "text")], [(i, k) for k, i in created.items()]
        )
        run_statements(
            connection,
            [
                Statement(_pins_insert(connection, "np", "np", "''"), [txn_id, now], (new,)),
                Statement(
                    _blobs_insert(connection, "np"),
                    [txn.owner_id, now],
                    (new, _frames_table(connection, {k: declared[k] for k in created})),
                ),
            ],
        )
    if len(created) < len(declared):
        _declared_again({k: w for k, w in declared.items() if k not in created}, txn, now)


def _declared_again(declared: dict[str, PackWrite], txn: CommitTransaction, now: Any) -> None:
    """Declared packs that were recorded before (a retry, the same content from another
    execution, a concurrent prepare of it): each must be what is declared now; it is pinned,
    taken back from GC if it was being deleted, and its frames checked."""
    packs = _existing_packs(declared, txn.owner_id, PENDING, txn)
    txn_id = db_value(Pin, "transaction", txn.pk)
    insert_rows(
        Pin, ("transaction", "pack", "digest", "created_at"), ((txn_id, pk, "", now) for pk in packs.values())
    )
    frames = {(packs[w.key], f.digest): f for w in declared.values() for f in w.frames}
    _blob_rows(frames, txn.owner_id, checked=True)


# Commit and record, the transactional path ------------------------------------------------------
@dataclass(frozen=True)
class Head:
    """An execution about to get a new version, and its head as read."""

    execution_id: int
    label: str  # owner/execution, for messages
    workflow_id: str
    head_id: int | None
    head_hash: str | None
    head_version: int
    replayed: int | None  # the manifest its idempotency key committed, if any


def _head_columns(connection: BaseDatabaseWrapper, execution: str, key: str) -> str:
    """What a new version needs to know of ``execution`` (a table name or alias), as columns:
    its id, workflow and head (id, hash, version), and the manifest its idempotency ``key`` (an
    SQL expression) committed."""
    manifests = quote(connection, Manifest)
    return (
        f"{execution}.id, {execution}.workflow_id, {execution}.head_id, "
        f"(SELECT hash FROM {manifests} WHERE id = {execution}.head_id), "
        f"(SELECT version FROM {manifests} WHERE id = {execution}.head_id), "
        f"(SELECT id FROM {manifests} WHERE execution_id = {execution}.id AND idempotency_key = {key} "
        "AND NOT (idempotency_key = ''))"
    )


def _head(row: Sequence[Any], label: str) -> Head | None:
    """The head read by ``_head_columns``; None when it cannot be trusted: a head that moved
    while the statement waited for a lock is read from the statement's earlier snapshot (the
    new head's row is not in it), so it is read again, the lock now held."""
    head = Head(row[0], label, row[1], row[2], row[3], row[4] or 0, row[5])
    return None if head.head_id is not None and head.head_hash is None else head


def _lock_execution(owner_id: str, workflow_id: str, execution_id: str, key: str | None) -> Head:
    """Create the execution if it is new, else lock it, and read its head: one statement."""
    connection = _connection()
    table = quote(connection, Execution)
    insert, params = _insert_row(
        connection, Execution, _execution_values(connection, owner_id, workflow_id, execution_id)
    )
    sql = (
        f"{insert} WHERE true ON CONFLICT (owner_id, execution_id) DO UPDATE SET updated_at = EXCLUDED.updated_at "
        f"RETURNING {_head_columns(connection, table, '%s')}"
    )
    for _ in range(3):
        with statement_cursor(connection) as cursor:
            cursor.execute(sql, [*params, key or ""])
            head = _head(cursor.fetchone(), f"{owner_id}/{execution_id}")
        if head is not None:
            return head
    raise ManifestConflictError(f"{owner_id}/{execution_id} is being changed concurrently")


@dataclass(frozen=True)
class Locked:
    """A transaction and its execution, locked for its commit."""

    txn_id: uuid.UUID
    state: str
    manifest_id: int | None
    owner_id: str
    execution_id: str
    parents: tuple[str, ...]
    upload_keys: tuple[str, ...]
    idempotency_key: str
    head: Head


def _lock_transaction(txn_id: str) -> Locked:
    """Lock the transaction and its execution (in that order, as the reaper locks the
    transaction before its packs) and read the execution's head: one statement."""
    try:
        pk = uuid.UUID(txn_id)
    except ValueError:
        raise TransactionAbortedError(f"no transaction {txn_id!r}") from None
    connection = _connection()
    txns, executions = quote(connection, CommitTransaction), quote(connection, Execution)
    lock = " FOR UPDATE OF t, e" if connection.vendor == "postgresql" else ""
    sql = (
        "SELECT t.state, t.manifest_id, t.owner_id, t.execution_id, t.parents, t.upload_keys, t.idempotency_key, "
        f"{_head_columns(connection, 'e', 't.idempotency_key')} "
        f"FROM {txns} t JOIN {executions} e ON e.owner_id = t.owner_id AND e.execution_id = t.execution_id "
        f"WHERE t.id = %s{lock}"
    )
    for attempt in range(4):
        with statement_cursor(connection) as cursor:
            cursor.execute(sql, [db_value(CommitTransaction, "id", pk)])
            row = cursor.fetchone()
        if row is None:
            if attempt:
                break
            # A transaction prepared before prepares recorded the execution, or none at all.
            txn = _locked_transaction(txn_id)
            _lock_execution(txn.owner_id, txn.workflow_id, txn.execution_id, None)
            continue
        state, manifest_id, owner_id, execution_id, parents, uploads, key = row[:7]
        head = _head(row[7:], f"{owner_id}/{execution_id}")
        if head is None:
            continue
        return Locked(
            txn_id=pk,
            state=state,
            manifest_id=manifest_id,
            owner_id=owner_id,
            execution_id=execution_id,
            parents=tuple(_json_list(parents)),
            upload_keys=tuple(_json_list(uploads)),
            idempotency_key=key,
            head=head,
        )
    raise TransactionAbortedError(f"no transaction {txn_id!r}")


def _commit_locked(locked: Locked, rows: EntryRows, cohort: Mapping[str, Any]) -> ManifestRecord:
    if locked.state == COMMITTED and locked.manifest_id is not None:
        return _replayed(Manifest.objects.select_related("execution").get(pk=locked.manifest_id))
    if locked.state != PREPARED:
        reason = CommitTransaction.objects.filter(pk=locked.txn_id).values_list("reason", flat=True).first()
        raise TransactionAbortedError(f"transaction {locked.txn_id} was {locked.state}: {reason or ''}")
    checkpoint("commit.locked")
    if locked.head.replayed is not None:
        # Replayed after an earlier commit of the same key: this attempt's uploads are not
        # referenced, and the transaction answers that version from now on.
        connection, now = _connection(), timezone.now()
        statements = [
            _transaction_committed(connection, locked.txn_id, locked.head.replayed, now),
            _pins_dropped(connection, locked.txn_id),
        ]
        if locked.upload_keys:
            table = values_table(connection, "wk", [("k", "text")], [(key,) for key in locked.upload_keys])
            statements.append(
                Statement(
                    f"UPDATE {quote(connection, Pack)} SET gc_candidate_since = %s "
                    "WHERE owner_id = %s AND key IN (SELECT k FROM wk) AND gc_candidate_since IS NULL",
                    [db_value(Pack, "gc_candidate_since", now), locked.owner_id],
                    (table,),
                )
            )
        run_statements(connection, statements)
        checkpoint("commit.manifest")
        return _replayed(Manifest.objects.select_related("execution").get(pk=locked.head.replayed))
    record = _write_version(
        locked.head,
        parents=locked.parents,
        entries=rows,
        cohort=cohort,
        idempotency_key=locked.idempotency_key,
        via="2pc",
        txn=locked,
    )
    checkpoint("commit.manifest")
    return record


def _transaction_committed(
    connection: BaseDatabaseWrapper, txn_id: uuid.UUID, manifest_id: int, now: datetime
) -> Statement:
    return Statement(
        f"UPDATE {quote(connection, CommitTransaction)} SET state = %s, manifest_id = %s, finished_at = %s "
        "WHERE id = %s AND state = %s",
        [
            COMMITTED,
            manifest_id,
            db_value(CommitTransaction, "finished_at", now),
            db_value(CommitTransaction, "id", txn_id),
            PREPARED,
        ],
    )


def _pins_dropped(connection: BaseDatabaseWrapper, txn_id: uuid.UUID) -> Statement:
    # The manifest references what the pins held, and GC heeds only prepared transactions' pins.
    return Statement(
        f"DELETE FROM {quote(connection, Pin)} WHERE transaction_id = %s",
        [db_value(Pin, "transaction", txn_id)],
    )


def _check_parents(head: Head, parents: tuple[str, ...]) -> None:
    if head.head_hash is None:
        if parents:
            raise ManifestConflictError(f"{head.label} has no version yet; the draft names a parent")
        return
    if head.head_hash not in parents:
        raise ManifestConflictError(
            f"{head.label} is at v{head.head_version} ({head.head_hash[:12]}); the draft was based on "
            f"{', '.join(p[:12] for p in parents) or 'nothing'}"
        )


def _new_manifest(
    head: Head, parents: tuple[str, ...], entries: EntryRows, cohort: Mapping[str, Any], key: str, via: str
) -> Manifest:
    """The new version's row (not saved), its hash computed."""
    owner_id, _, execution_id = head.label.partition("/")
    version = head.head_version + 1 if head.head_hash is not None else 1
    digest = manifest_hash(
        owner_id=owner_id,
        workflow_id=head.workflow_id,
        execution_id=execution_id,
        version=version,
        parents=list(parents),
        entries=entries.entries,
        cohort=cohort,
    )
    return Manifest(
        execution_id=head.execution_id,
        version=version,
        hash=digest,
        cohort=dict(cohort),
        idempotency_key=key,
        raw_bytes=entries.raw_bytes,
        committed_via=via,
        created_at=timezone.now(),
    )


def _write_version(
    head: Head,
    *,
    parents: tuple[str, ...],
    entries: EntryRows,
    cohort: Mapping[str, Any],
    idempotency_key: str,
    via: str,
    txn: Locked | None = None,
) -> ManifestRecord:
    """The manifest and everything it brings (entries, parents, blob links, the head moved; for
    a transaction: it committed, its packs live, its pins dropped), under the caller's
    transaction and locks. _NotLive when a pointer names no frame it may reference."""
    _check_parents(head, parents)
    connection = _connection()
    manifest = _new_manifest(head, parents, entries, cohort, idempotency_key, via)
    insert, params = _insert_row(connection, Manifest, _manifest_values(connection, manifest))
    manifest_id = _rows(run_statements(connection, [Statement(insert, params, returning="id")])[0])[0][0]
    owner_id = head.label.partition("/")[0]
    named: list[tuple[str, Statement]] = []
    if entries.rows:
        table = _entries_table(connection, entries)
        named.append(
            ("entries", Statement(_entries_insert(connection, "%s", table.name), [manifest_id], (table,)))
        )
    if parents:
        table = _parents_table(connection, parents)
        named.append(
            (
                "parents",
                Statement(
                    _parents_insert(connection, "%s", table.name), [manifest_id, head.execution_id], (table,)
                ),
            )
        )
    named += [("links", link) for link in _links_inserts(connection, manifest_id, owner_id, entries, txn)]
    now = timezone.now()
    named.append(("head", _head_moved(connection, head, "%s", [manifest_id], now)))
    if txn is not None:
        named.append(("transaction", _transaction_committed(connection, txn.txn_id, manifest_id, now)))
        named.append(("pins", _pins_dropped(connection, txn.txn_id)))
        if txn.upload_keys:
            used = {link[0] for link in entries.links}
            named.append(("packs", _packs_live(connection, txn.owner_id, txn.upload_keys, used, now)))
    found: dict[str, int] = {}
    for (name, _), answer in zip(named, run_statements(connection, [st for _, st in named]), strict=True):
        found[name] = found.get(name, 0) + (answer if isinstance(answer, int) else len(answer))
    _check_written(found, head, parents, entries, txn)
    return ManifestRecord(manifest.hash, manifest.version)


def _check_written(
    found: Mapping[str, int], head: Head, parents: tuple[str, ...], entries: EntryRows, txn: Locked | None
) -> None:
    """What the version's statements wrote must be all that was asked; else the caller's
    transaction is rolled back by what this raises."""
    if found.get("links", 0) != len(entries.links):
        raise _NotLive
    if found.get("parents", 0) != len(parents):
        raise ManifestConflictError("a parent manifest is not a version of this execution")
    if found.get("entries", 0) != len(entries.rows):
        raise IntegrityError("an entry row was not recorded")
    if found["head"] != 1:
        raise ManifestConflictError(f"{head.label} moved on concurrently")
    if txn is not None and found["transaction"] != 1:
        raise TransactionAbortedError(f"transaction {txn.txn_id} is no longer prepared")


def _links_inserts(
    connection: BaseDatabaseWrapper, manifest_id: int, owner_id: str, entries: EntryRows, txn: Locked | None
) -> list[Statement]:
    """A link to each frame the entries name (the answers say how many were found)."""
    statements = []
    for table, uploaded, _ in _links_tables(
        connection, entries, set(txn.upload_keys) if txn is not None else set()
    ):
        select, params = _linked_blobs(connection, table.name, uploaded=uploaded)
        statements.append(
            Statement(
                f"INSERT INTO {quote(connection, Manifest.blobs.through)} (manifest_id, blob_id) "
                f"SELECT %s, x.id FROM ({select}) x",
                [manifest_id, owner_id, *params],
                (table,),
            )
        )
    return statements


def _entries_table(connection: BaseDatabaseWrapper, entries: EntryRows) -> Table:
    return values_table(
        connection,
        "we",
        [("i", "integer"), ("f", "text"), ("k", "text"), ("d", "text"), ("v", "text")],
        [(index, *row) for index, row in enumerate(entries.rows)],
    )


def _entries_insert(connection: BaseDatabaseWrapper, manifest: str, table: str, source: str = "") -> str:
    """The entries (``table``) of ``manifest`` (an SQL expression, over ``source`` too) in the
    order given: their ids keep it, for readers that serve it back."""
    return (
        f"INSERT INTO {quote(connection, ManifestEntry)} (manifest_id, field, kind, digest, stored) "
        f"SELECT {manifest}, {table}.f, {table}.k, {table}.d, {table}.v FROM {source}{table} ORDER BY {table}.i"
    )


def _parents_table(connection: BaseDatabaseWrapper, parents: tuple[str, ...]) -> Table:
    return values_table(
        connection, "wp", [("h", "text"), ("i", "integer")], [(h, i) for i, h in enumerate(parents)]
    )


def _parents_insert(connection: BaseDatabaseWrapper, manifest: str, table: str) -> str:
    """A link to each parent that is a version of the same execution (a parameter after the
    manifest's)."""
    return (
        f"INSERT INTO {quote(connection, ManifestParent)} (child_id, parent_id, position) "
        f"SELECT {manifest}, m.id, {table}.i FROM {table} "
        f"JOIN {quote(connection, Manifest)} m ON m.hash = {table}.h AND m.execution_id = %s"
    )


def _head_moved(
    connection: BaseDatabaseWrapper,
    head: Head,
    manifest: str,
    params: list[Any],
    now: datetime,
    where: str = "true",
) -> Statement:
    expected = "head_id IS NULL" if head.head_id is None else "head_id = %s"
    return Statement(
        f"UPDATE {quote(connection, Execution)} SET head_id = {manifest}, updated_at = %s "
        f"WHERE id = %s AND {expected} AND {where}",
        [
            *params,
            db_value(Execution, "updated_at", now),
            head.execution_id,
            *([] if head.head_id is None else [head.head_id]),
        ],
    )


# At once (PostgreSQL) ---------------------------------------------------------------------------
def _at_once() -> bool:
    """Whether the usual case runs as one statement: on PostgreSQL, and not inside a caller's
    transaction (whose locks and rollback the statement could not share)."""
    connection = _connection()
    return connection.vendor == "postgresql" and not connection.in_atomic_block


def _unless_refused(write: Callable[..., ManifestRecord | None], *args: Any) -> ManifestRecord | None:
    """``write``'s version, or None when the database refused it (a constraint that only a race
    breaks): the transactional path then reads again and answers."""
    try:
        return write(*args)
    except IntegrityError:
        return None


class _Clauses:
    """One statement's WITH clauses, text and parameters kept in step."""

    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.params: list[Any] = []

    def table(self, table: Table) -> str:
        self.clauses.append(table.sql)
        self.params += table.params
        return table.name

    def add(self, name: str, sql: str, params: Sequence[Any] = ()) -> None:
        self.clauses.append(f"{name} AS ({sql})")
        self.params += params

    def run(self, connection: BaseDatabaseWrapper, final: str) -> tuple[Any, ...]:
        with statement_cursor(connection) as cursor:
            cursor.execute(f"WITH {', '.join(self.clauses)} {final}", self.params)
            return tuple(cursor.fetchone())


def _prepare_at_once(
    txn: CommitTransaction, declared: dict[str, PackWrite], reused: list[tuple[str, str]]
) -> bool:
    """A prepare as one statement: the transaction, the execution's row, the new packs with their
    frames and pins, and a pin on each reused blob (its pack held, KEY SHARE). All of it on the
    condition that the idempotency key has not committed, every reused blob is there and no
    declared pack was recorded before (the transactional path checks those one by one); False
    when nothing was written."""
    connection = _connection()
    now, txn_id = db_value(Pin, "created_at", timezone.now()), db_value(Pin, "transaction", txn.pk)
    w = _Clauses()
    conditions: list[str] = []
    params: list[Any] = []
    if txn.idempotency_key:
        conditions.append(_not_replayed_by_ids(connection))
        params += [txn.owner_id, txn.execution_id, txn.idempotency_key]
    if reused:
        w.table(values_table(connection, "dr", [("k", "text"), ("d", "text")], reused))
        w.add("rp", _reused_blobs(connection, "dr"), [txn.owner_id, DELETING])
        conditions.append("(SELECT count(*) FROM rp) = %s")
        params.append(len(reused))
    if declared:
        w.table(_packs_table(connection, declared))
        conditions.append(
            f"NOT EXISTS (SELECT 1 FROM {quote(connection, Pack)} WHERE key IN (SELECT k FROM dp))"
        )
    insert, values = _insert_row(connection, CommitTransaction, _transaction_values(connection, txn))
    w.add("s0", f"{insert} WHERE {' AND '.join(conditions) or 'true'} RETURNING id", [*values, *params])
    # Everything else happens only with the transaction's row.
    after = "EXISTS (SELECT 1 FROM s0)"
    insert, values = _insert_row(
        connection, Execution, _execution_values(connection, txn.owner_id, txn.workflow_id, txn.execution_id)
    )
    w.add("s1", f"{insert} WHERE {after} ON CONFLICT (owner_id, execution_id) DO NOTHING", values)
    if reused:
        w.add("s2", _pins_insert(connection, "rp", "rp", "rp.d", after), [txn_id, now])
    if declared:
        sql, values = _packs_insert(connection, txn, now, after)
        w.add("s3", f"{sql} RETURNING id, key", values)
        w.add("s4", _pins_insert(connection, "s3", "s3", "''"), [txn_id, now])
        w.table(_frames_table(connection, declared))
        w.add("s5", _blobs_insert(connection, "s3"), [txn.owner_id, now])
    # The protocol's steps, as the transactional path has them: nothing is written before the
    # statement, which writes everything or nothing.
    checkpoint("prepare.recorded")
    checkpoint("prepare.pinned")
    answer = w.run(
        connection, "SELECT (SELECT count(*) FROM s0)" + (", (SELECT count(*) FROM s3)" if declared else "")
    )
    if answer[0] != 1:
        return False
    if declared and answer[1] != len(declared):
        # Another prepare recorded a declared pack between this one's check and its insert: it
        # is checked now, and the transaction aborted if it is not what was declared.
        try:
            with transaction.atomic():
                created = set(
                    Pack.objects.filter(key__in=list(declared), transaction_id=txn.pk).values_list(
                        "key", flat=True
                    )
                )
                _declared_again({k: v for k, v in declared.items() if k not in created}, txn, now)
        except (ManifestConflictError, IntegrityError):
            StateVersioningService().abort(str(txn.pk), "a declared object is recorded differently")
            raise
    return True


@dataclass(frozen=True)
class TransactionRead:
    """A transaction as one unlocked read found it, with its execution and declared objects."""

    txn_id: uuid.UUID
    state: str
    owner_id: str
    parents: tuple[str, ...]
    upload_keys: tuple[str, ...]
    idempotency_key: str
    head: Head | None  # None when its execution has no row
    declared: list[tuple[str, int, str]]  # (key, size, sha256) of each declared object recorded


def transaction_read(txn_id: str, owner_id: str | None = None) -> TransactionRead | None:
    """The transaction (if it is ``owner_id``'s, when given), its execution's head and its
    declared objects as recorded: one statement, no lock. None if there is no such one."""
    try:
        pk = uuid.UUID(txn_id)
    except ValueError:
        return None
    connection = _connection()
    packs = quote(connection, Pack)
    if connection.vendor == "postgresql":
        keys = "SELECT jsonb_array_elements_text(t.upload_keys)"
        declared = f"SELECT json_agg(json_build_array(p.key, p.size, p.digest)) FROM {packs} p"
    else:
        keys = "SELECT value FROM json_each(t.upload_keys)"
        declared = f"SELECT json_group_array(json_array(p.key, p.size, p.digest)) FROM {packs} p"
    sql = (
        "SELECT t.state, t.owner_id, t.execution_id, t.parents, t.upload_keys, t.idempotency_key, "
        f"({declared} WHERE p.owner_id = t.owner_id AND p.key IN ({keys})), "
        f"{_head_columns(connection, 'e', 't.idempotency_key')} "
        f"FROM {quote(connection, CommitTransaction)} t LEFT JOIN {quote(connection, Execution)} e "
        "ON e.owner_id = t.owner_id AND e.execution_id = t.execution_id WHERE t.id = %s"
    )
    params: list[Any] = [db_value(CommitTransaction, "id", pk)]
    if owner_id is not None:
        sql += " AND t.owner_id = %s"
        params.append(owner_id)
    with statement_cursor(connection) as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    state, owner, execution, parents, uploads, key, found = row[:7]
    return TransactionRead(
        txn_id=pk,
        state=state,
        owner_id=owner,
        parents=tuple(_json_list(parents)),
        upload_keys=tuple(_json_list(uploads)),
        idempotency_key=key,
        head=_head(row[7:], f"{owner}/{execution}") if row[7] is not None else None,
        declared=[(k, size, digest) for k, size, digest in _json_list(found or "[]")],
    )


def _commit_at_once(
    read: TransactionRead, entries: EntryRows, cohort: Mapping[str, Any]
) -> ManifestRecord | None:
    head = read.head
    if read.state != PREPARED or head is None or head.replayed is not None:
        return None
    try:
        _check_parents(head, read.parents)
    except ManifestConflictError:
        return None  # answered under the lock
    # The protocol's steps, as the transactional path has them; here nothing is locked before the
    # statement, and it has committed by the second one (a crash there is one after the commit).
    checkpoint("commit.locked")
    done = _version_at_once(head, read.parents, entries, cohort, read.idempotency_key, "2pc", read)
    if done is not None:
        checkpoint("commit.manifest")
    return done


def _record_at_once(draft: ManifestDraft, entries: EntryRows) -> ManifestRecord | None:
    """A one-step record as one statement, after one unlocked read of the execution's head (its
    row created first if it has none)."""
    connection = _connection()
    key = draft.idempotency_key or ""
    insert, params = _insert_row(
        connection,
        Execution,
        _execution_values(connection, draft.owner_id, draft.workflow_id, draft.execution_id),
    )
    executions = quote(connection, Execution)
    # In the statement's snapshot the row is either the one it inserts or one that was there.
    sql = (
        f"WITH ins AS ({insert} WHERE true ON CONFLICT (owner_id, execution_id) DO NOTHING "
        f"RETURNING {_head_columns(connection, executions, '%s')}) SELECT * FROM ins UNION ALL "
        f"SELECT {_head_columns(connection, 'e', '%s')} FROM {executions} e WHERE e.owner_id = %s AND e.execution_id = %s"
    )
    with statement_cursor(connection) as cursor:
        cursor.execute(sql, [*params, key, key, draft.owner_id, draft.execution_id])
        row = cursor.fetchone()
    head = _head(row, f"{draft.owner_id}/{draft.execution_id}") if row is not None else None
    if head is None or head.replayed is not None:
        return None
    try:
        _check_parents(head, tuple(draft.parents))
    except ManifestConflictError:
        return None  # answered under the lock
    return _version_at_once(head, tuple(draft.parents), entries, draft.cohort, key, NO_UPLOAD, None)


def _version_at_once(
    head: Head,
    parents: tuple[str, ...],
    entries: EntryRows,
    cohort: Mapping[str, Any],
    key: str,
    via: str,
    txn: TransactionRead | None,
) -> ManifestRecord | None:
    """The new version, with all ``_write_version`` writes, as one statement, on the condition
    that the head is still ``head``, no manifest has the idempotency key, the transaction (if
    any) is still prepared, and every pointer and parent is found: None when nothing was
    written. The execution and transaction rows are locked first, then the packs."""
    connection = _connection()
    manifest = _new_manifest(head, parents, entries, cohort, key, via)
    now = timezone.now()
    executions = quote(connection, Execution)
    w = _Clauses()
    rows, conditions = [f"{executions} e"], ["e.id = %s"]
    params: list[Any] = [head.execution_id]
    if txn is not None:  # the transaction first: the reaper locks it before its packs
        rows.insert(0, f"{quote(connection, CommitTransaction)} t")
        conditions[:0] = ["t.id = %s", "t.state = %s"]
        params[:0] = [db_value(CommitTransaction, "id", txn.txn_id), PREPARED]
    conditions.append("e.head_id IS NULL" if head.head_id is None else "e.head_id = %s")
    params += [] if head.head_id is None else [head.head_id]
    if key:
        conditions.append(_not_replayed(connection, "e.id"))
        params.append(key)
    locked = "t, e" if txn is not None else "e"
    w.add(
        "g",
        f"SELECT e.id FROM {', '.join(rows)} WHERE {' AND '.join(conditions)} FOR UPDATE OF {locked}",
        params,
    )
    conditions, counts = ["EXISTS (SELECT 1 FROM g)"], []
    uploads = set(txn.upload_keys) if txn is not None else set()
    linked = []
    for index, (table, uploaded, count) in enumerate(_links_tables(connection, entries, uploads)):
        select, select_params = _linked_blobs(connection, w.table(table), uploaded=uploaded)
        w.add(f"l{index}", select, [head.label.partition("/")[0], *select_params])
        conditions.append(f"(SELECT count(*) FROM l{index}) = %s")
        counts.append(count)
        linked.append(f"SELECT id FROM l{index}")
    if parents:
        named = w.table(_parents_table(connection, parents))
        w.add(
            "pr",
            f"SELECT m.id, {named}.i FROM {named} JOIN {quote(connection, Manifest)} m "
            f"ON m.hash = {named}.h AND m.execution_id = %s",
            [head.execution_id],
        )
        conditions.append("(SELECT count(*) FROM pr) = %s")
        counts.append(len(parents))
    insert, values = _insert_row(connection, Manifest, _manifest_values(connection, manifest))
    w.add("s0", f"{insert} WHERE {' AND '.join(conditions)} RETURNING id", [*values, *counts])
    # Everything else joins the manifest's row: nothing happens without it.
    if entries.rows:
        w.add(
            "s1", _entries_insert(connection, "s0.id", w.table(_entries_table(connection, entries)), "s0, ")
        )
    if parents:
        w.add(
            "s2",
            f"INSERT INTO {quote(connection, ManifestParent)} (child_id, parent_id, position) SELECT s0.id, pr.id, pr.i FROM s0, pr",
        )
    if linked:
        w.add(
            "s3",
            f"INSERT INTO {quote(connection, Manifest.blobs.through)} (manifest_id, blob_id) SELECT s0.id, x.id FROM s0, ({' UNION ALL '.join(linked)}) x",
        )
    moved = _head_moved(connection, head, "(SELECT id FROM s0)", [], now, "EXISTS (SELECT 1 FROM s0)")
    w.add("s4", moved.sql, moved.params)
    if txn is not None:
        txns = quote(connection, CommitTransaction)
        w.add(
            "s5",
            f"UPDATE {txns} SET state = %s, manifest_id = s0.id, finished_at = %s FROM s0 WHERE {txns}.id = %s",
            [
                COMMITTED,
                db_value(CommitTransaction, "finished_at", now),
                db_value(CommitTransaction, "id", txn.txn_id),
            ],
        )
        dropped = _pins_dropped(connection, txn.txn_id)
        w.add("s6", f"{dropped.sql} AND EXISTS (SELECT 1 FROM s0)", dropped.params)
        if txn.upload_keys:
            used = {link[0] for link in entries.links}
            live = _packs_live(
                connection, txn.owner_id, txn.upload_keys, used, now, "EXISTS (SELECT 1 FROM s0)"
            )
            w.table(live.tables[0])
            w.add("s7", live.sql, live.params)
    (manifest_id,) = w.run(connection, "SELECT (SELECT id FROM s0)")
    return ManifestRecord(manifest.hash, manifest.version) if manifest_id is not None else None


# Shared helpers ------------------------------------------------------------------------------
def _locked_transaction(txn_id: str) -> CommitTransaction:
    try:
        return (
            CommitTransaction.objects.select_for_update(of=("self",))
            .select_related("manifest")
            .get(pk=uuid.UUID(txn_id))
        )
    except (CommitTransaction.DoesNotExist, ValueError):
        raise TransactionAbortedError(f"no transaction {txn_id!r}") from None


def _committed_for_key(owner_id: str, execution_id: str, key: str) -> ManifestRecord | None:
    if not key:
        return None
    done = (
        Manifest.objects.select_related("execution")
        .filter(execution__owner_id=owner_id, execution__execution_id=execution_id, idempotency_key=key)
        .first()
    )
    return _replayed(done) if done is not None else None


def _replayed(manifest: Manifest) -> ManifestRecord:
    """An earlier commit, handed back to a retry: its entries go into the caller's payload, so
    they are checked against the manifest's hash first."""
    document = manifest_document(manifest, purpose="replayed commit")
    return ManifestRecord(manifest.hash, manifest.version, document["entries"])


class ReusedBlobs:
    """Which of the blobs a prepare reuses are not stored any more (in a pack of the owner that
    is not being deleted): read to answer a prepare that could not pin them all."""

    def __init__(self, owner_id: str, reused: Iterable[tuple[str, str]]) -> None:
        self.wanted = list(dict.fromkeys(reused))
        self.packs: dict[str, int] = {}
        self.missing: tuple[str, ...] = ()
        if not self.wanted:
            return
        self.packs = dict(
            Pack.objects.filter(key__in={key for key, _ in self.wanted}, owner_id=owner_id)
            .exclude(state=DELETING)
            .values_list("key", "id")
        )
        # By (owner, digest), one index probe a digest: asking for pack ids and digests at once
        # let PostgreSQL probe every pair of the two lists.
        present = set(
            Blob.objects.filter(
                owner_id=owner_id, digest__in={digest for _, digest in self.wanted}
            ).values_list("pack_id", "digest")
        )
        self.missing = tuple(
            digest
            for key, digest in self.wanted
            if key not in self.packs or (self.packs[key], digest) not in present
        )


def _record_packs(
    writes: Iterable[PackWrite], owner_id: str, state: str, txn: CommitTransaction | None
) -> None:
    """Pack and blob rows for uploaded objects (a one-step record), in a handful of statements
    however many there are (on SQLite the transaction holds the write lock).

    A row may already be there (a retry, the same content from another execution, a concurrent
    prepare of it): the insert leaves it, and it must then be exactly what is declared now, else
    ManifestConflictError. An insert is never dropped silently: a declared row that is missing
    afterwards is an error."""
    declared = _declared(writes)
    if not declared:
        return
    now = db_value(Pack, "created_at", timezone.now())
    txn_id = db_value(Pack, "transaction", txn.pk if txn else None)
    created = insert_rows(
        Pack,
        ("key", "owner_id", "digest", "size", "kind", "state", "transaction", "created_at"),
        ((w.key, owner_id, w.digest, w.size, w.kind, state, txn_id, now) for w in declared.values()),
        unless_exists=("key",),  # an existing row is left as it is, and checked next
        returning=("id", "key"),
    )
    packs = {key: pk for pk, key in created or ()}
    new = set(packs.values())
    packs.update(_existing_packs({k: w for k, w in declared.items() if k not in packs}, owner_id, state, txn))
    frames = {(packs[w.key], f.digest): f for w in declared.values() for f in w.frames}
    fresh = {key: frame for key, frame in frames.items() if key[0] in new}
    _blob_rows(fresh, owner_id, checked=False)
    _blob_rows({key: frame for key, frame in frames.items() if key not in fresh}, owner_id, checked=True)


def _existing_packs(
    declared: dict[str, PackWrite], owner_id: str, state: str, txn: CommitTransaction | None
) -> dict[str, int]:
    """The ids of declared packs recorded before: each is locked and must be what is declared;
    one being deleted is taken back (the same bytes are being uploaded again)."""
    if not declared:
        return {}
    packs: dict[str, int] = {}
    revived = []
    for pack in Pack.objects.select_for_update().filter(key__in=list(declared)):
        write = declared[pack.key]
        recorded = (pack.owner_id, pack.digest, pack.size, pack.kind)
        if recorded != (owner_id, write.digest, write.size, write.kind):
            raise ManifestConflictError(
                f"{pack.key} is already recorded as {pack.size} bytes with sha256 {pack.digest[:12]}"
            )
        packs[pack.key] = pack.pk
        # Same content being uploaded again: take it back from GC, or make it live.
        if pack.state == DELETING or (state == LIVE and pack.state != state):
            revived.append(pack.pk)
    unrecorded = declared.keys() - packs.keys()
    if unrecorded:
        raise IntegrityError(f"pack {min(unrecorded)} was not recorded")
    if revived:
        changes: dict[str, Any] = {"state": state, "gc_candidate_since": None}
        if txn is not None:
            changes["transaction"] = txn
        Pack.objects.filter(pk__in=revived).update(**changes)
    return packs


def _blob_rows(frames: dict[tuple[int, str], FrameRef], owner_id: str, *, checked: bool) -> None:
    """One row per (pack id, digest) frame. A pack created just now has no frames yet: its rows
    are inserted as they are. Frames of a pack recorded before may be there already (``checked``):
    those must match what is declared."""
    if not frames:
        return
    now = db_value(Blob, "created_at", timezone.now())
    inserted = insert_rows(
        Blob,
        ("pack", "owner_id", "digest", "offset", "length", "codec", "raw_size", "dict_id", "created_at"),
        (
            (pack_id, owner_id, f.digest, f.offset, f.length, f.codec, f.raw_size, f.dict_id or "", now)
            for (pack_id, _), f in frames.items()
        ),
        unless_exists=("pack", "digest") if checked else (),
        returning=("pack", "digest") if checked else (),
    )
    if not checked:
        return
    unseen = frames.keys() - set(inserted) if inserted is not None else frames.keys()
    if not unseen:
        return
    stored = {
        (row[0], row[1]): row[2:]
        for row in Blob.objects.filter(pack_id__in={pack_id for pack_id, _ in unseen}).values_list(
            "pack_id", "digest", "owner_id", "offset", "length", "codec", "raw_size", "dict_id"
        )
    }
    for pack_id, digest in unseen:
        f, row = frames[(pack_id, digest)], stored.get((pack_id, digest))
        if row is None:
            raise IntegrityError(f"frame {digest[:12]} of pack {pack_id} was not recorded")
        if row != (owner_id, f.offset, f.length, f.codec, f.raw_size, f.dict_id or ""):
            raise ManifestConflictError(f"frame {digest[:12]} of that pack is already recorded differently")


class EntryRows:
    """A version's entries made ready for their rows before its transaction opens: parsing the
    pointers and encoding the values is work no lock need wait for. ``rows`` are (field, kind,
    digest, stored JSON text) in the order given; ``links`` each distinct frame the pointers
    name, as (key, digest, offset, length, codec, raw size, dictionary id or "")."""

    def __init__(self, entries: Mapping[str, Any]) -> None:
        self.entries = entries
        self.refs: list[BlobRef] = []
        self.rows: list[tuple[str, str, str, Any]] = []
        for name, stored in entries.items():
            pointer = parse_pointer(stored)
            kind, digest = ManifestEntry.Kind.INLINE, ""
            if isinstance(pointer, BlobRef):
                self.refs.append(pointer)
                kind, digest = ManifestEntry.Kind.BLOB, pointer.digest
            elif isinstance(pointer, ListRef):
                self.refs.extend(pointer.blob_refs())
                kind = ManifestEntry.Kind.LIST
            self.rows.append((name, kind, digest, db_value(ManifestEntry, "stored", stored)))
        self.links = list(
            dict.fromkeys(
                (ref.key, ref.digest, ref.offset, ref.length, ref.codec, ref.raw_size, ref.dict_id or "")
                for ref in self.refs
            )
        )
        # Two links to one frame cannot both match it (they differ in what it must match), so
        # once every link is found, these are distinct frames.
        self.raw_bytes = sum(link[5] for link in self.links)


def _dangling(
    owner_id: str, entries: EntryRows, uploaded: AbstractSet[str] | Sequence[str]
) -> DanglingPointerError:
    """Why a version's pointers were refused, read again once its transaction rolled back."""
    try:
        _resolve(owner_id, entries.refs, uploaded=frozenset(uploaded))
    except DanglingPointerError as exc:
        return exc
    return DanglingPointerError(
        "a pointer names a frame that was not in a live pack when the version was recorded"
    )


class MissingBlobsError(StaleReferenceError, DanglingPointerError):
    """Blobs a one-step version points at are not stored (any more): a dangling pointer for the
    version, a stale reference for the client that thought them stored (it stores them again)."""


def _stale_or_dangling(owner_id: str, entries: EntryRows) -> DanglingPointerError:
    """Why a one-step version's pointers were refused, read again once its transaction rolled
    back: the blobs no longer in a live pack of the owner, if any, else the mismatch."""
    stored = ReusedBlobs(owner_id, [(ref.key, ref.digest) for ref in entries.refs])
    live = set(Pack.objects.filter(pk__in=stored.packs.values(), state=LIVE).values_list("key", flat=True))
    gone = tuple(
        dict.fromkeys([*stored.missing, *(ref.digest for ref in entries.refs if ref.key not in live)])
    )
    if gone:
        return MissingBlobsError(f"{len(gone)} blob(s) the version points at are not stored", gone)
    return _dangling(owner_id, entries, ())


def _resolve(
    owner_id: str, refs: list[BlobRef], *, uploaded: AbstractSet[str] = frozenset()
) -> tuple[set[int], dict[int, int]]:
    """Every pointer must name a frame of a live pack of the same owner (or one of ``uploaded``,
    pending), and decode it as recorded (its codec, raw size and dictionary, the last checked
    to be the owner's own when the frame was declared): the packs' ids, and the raw size of
    each frame named, by blob id."""
    if not refs:
        return set(), {}
    # The packs first, then their frames by pack id (a frame's owner is its pack's): one join
    # filtering frames by owner let PostgreSQL scan the owner index once per pack.
    usable = Q(state=LIVE) | Q(state=PENDING, key__in=uploaded)
    packs = dict(
        Pack.objects.filter(usable, key__in={ref.key for ref in refs}, owner_id=owner_id).values_list(
            "id", "key"
        )
    )
    index = {
        (packs[pack_id], digest, offset, length): (blob_id, codec, raw_size, dict_id)
        for blob_id, pack_id, digest, offset, length, codec, raw_size, dict_id in Blob.objects.filter(
            pack_id__in=packs
        ).values_list("id", "pack_id", "digest", "offset", "length", "codec", "raw_size", "dict_id")
    }
    found: dict[int, int] = {}
    for ref in refs:
        blob = index.get((ref.key, ref.digest, ref.offset, ref.length))
        if blob is None:
            raise DanglingPointerError(f"no live frame {ref.digest[:12]} at {ref.key}@{ref.offset}")
        blob_id, codec, raw_size, dict_id = blob
        named = {"codec": ref.codec, "raw_size": ref.raw_size, "dict_id": ref.dict_id or ""}
        recorded = {"codec": codec, "raw_size": raw_size, "dict_id": dict_id}
        wrong = [name for name in named if named[name] != recorded[name]]
        if wrong:
            raise DanglingPointerError(
                f"the pointer to frame {ref.digest[:12]} at {ref.key}@{ref.offset} does not decode it "
                "as recorded: "
                + ", ".join(f"{name} {named[name]!r}, recorded {recorded[name]!r}" for name in wrong)
            )
        found[blob_id] = raw_size
    return set(packs), found


def manifest_state(manifest: Manifest, hydrator: StateHydrator) -> StateBag:
    """The state of one version, as a lazy bag read through ``hydrator``. The manifest is
    checked against its hash first: one that fails is ManifestIntegrityError, never a state."""
    document = manifest_document(manifest, purpose="hydration")
    stored: dict[str, Any] = dict(document["entries"])
    stored[META_KEY] = {
        "v": 1,
        "owner": document["owner_id"],
        "workflow": document["workflow_id"],
        "execution": document["execution_id"],
        "manifest": manifest.hash,
        "version": manifest.version,
    }
    return hydrator.hydrate(stored)
