"""Many rows in a few statements, and few statements per request, for the writes a request
makes inside its transaction.

On SQLite that transaction holds the write lock of the whole database, so what it costs is
what every other writer waits. ``bulk_create`` prepares each value of each row through its
field (tens of microseconds a row, more than the insert itself), and its ``ignore_conflicts``
is SQLite's INSERT OR IGNORE, which also drops rows that break a CHECK or NOT NULL constraint
without a word. ``insert_rows`` takes values already in their database form and skips only
rows that duplicate an existing one on the constraint it names (ON CONFLICT ... DO NOTHING,
on SQLite and PostgreSQL alike); any other failure raises.

``values_table`` passes rows to a statement as one parameter whatever their number (a JSON
text), so a statement's text does not change with them, and ``statement_cursor`` has
PostgreSQL plan it once per connection.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import connections, models, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

# SQLite's smallest compile-time limit on a statement's parameters.
MAX_PARAMS = 999


def db_value(model: type[models.Model], field: str, value: Any) -> Any:
    """``value`` as ``model``'s ``field`` stores it (a JSON document, a date and time...)."""
    connection = connections[router.db_for_write(model)]
    return _field(model, field).get_db_prep_save(value, connection)


def _field(model: type[models.Model], name: str) -> models.Field[Any, Any]:
    field = model._meta.get_field(name)
    if not isinstance(field, models.Field) or not field.column:
        raise ValueError(f"{model.__name__}.{name} is not a column")
    return field


def insert_rows(
    model: type[models.Model],
    fields: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    unless_exists: Sequence[str] = (),
    returning: Sequence[str] = (),
) -> list[tuple[Any, ...]] | None:
    """INSERT ``rows`` (values in ``fields`` order, in database form: see ``db_value``). With
    ``unless_exists``, the fields of a unique constraint, a row that would duplicate an existing
    one on them is skipped; the caller checks what is there. With ``returning``, answers those
    fields of the rows inserted (not of the ones skipped), or None where the database cannot
    say (SQLite before 3.35)."""
    batch = list(rows)
    connection = connections[router.db_for_write(model)]
    answer = connection.features.can_return_rows_from_bulk_insert and bool(returning)
    if not batch:
        return [] if answer else None
    quote = connection.ops.quote_name

    def columns(names: Sequence[str]) -> str:
        return ", ".join(quote(str(_field(model, name).column)) for name in names)

    table = quote(model._meta.db_table)
    tail = f" ON CONFLICT ({columns(unless_exists)}) DO NOTHING" if unless_exists else ""
    tail += f" RETURNING {columns(returning)}" if answer else ""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql" and not tail:
            # COPY: several times faster than any INSERT (jsonb most of all), and no row here
            # can conflict. It is the driver's own call: its errors are made Django's here.
            with (
                connection.wrap_database_errors,
                cursor.copy(f"COPY {table} ({columns(fields)}) FROM STDIN") as copy,
            ):
                for row in batch:
                    copy.write_row(row)
            return None
        if connection.vendor == "postgresql":
            # One array per column: a few parameters whatever the number of rows.
            arrays = ", ".join(f"%s::{_field(model, name).db_type(connection)}[]" for name in fields)
            cursor.execute(
                f"INSERT INTO {table} ({columns(fields)}) SELECT * FROM unnest({arrays}){tail}",
                [list(column) for column in zip(*batch, strict=True)],
            )
            return [tuple(row) for row in cursor.fetchall()] if answer else None
        inserted: list[tuple[Any, ...]] = []
        marks = "(" + ", ".join(["%s"] * len(fields)) + ")"
        per_statement = max(1, MAX_PARAMS // len(fields))
        for start in range(0, len(batch), per_statement):
            part = batch[start : start + per_statement]
            cursor.execute(
                f"INSERT INTO {table} ({columns(fields)}) VALUES {', '.join([marks] * len(part))}{tail}",
                [value for row in part for value in row],
            )
            if answer:
                inserted += [tuple(row) for row in cursor.fetchall()]
        return inserted if answer else None


# SQL text ----------------------------------------------------------------------------------------
# Names and casts depend only on the backend and the model: worked out once, not per request.
_texts: dict[tuple[Any, ...], str] = {}


def quote(connection: BaseDatabaseWrapper, model: type[models.Model], *names: str) -> str:
    """``model``'s table, or its fields' columns (comma-separated), quoted for SQL."""
    key = ("quote", connection.vendor, model, names)
    text = _texts.get(key)
    if text is None:
        if not names:
            text = str(connection.ops.quote_name(model._meta.db_table))
        else:
            text = ", ".join(connection.ops.quote_name(str(_field(model, name).column)) for name in names)
        _texts[key] = text
    return text


def param(connection: BaseDatabaseWrapper, model: type[models.Model], name: str) -> str:
    """A placeholder for a value of ``model``'s field where SQL cannot infer its type (a SELECT
    list): cast on PostgreSQL; SQLite takes values as they come (a cast there changes them)."""
    if connection.vendor != "postgresql":
        return "%s"
    key = ("param", connection.vendor, model, name)
    text = _texts.get(key)
    if text is None:
        text = _texts[key] = f"%s::{_field(model, name).db_type(connection)}"
    return text


def column_defaults(
    connection: BaseDatabaseWrapper, model: type[models.Model], given: Iterable[str]
) -> dict[str, Any]:
    """Every other column of a new ``model`` row (not the primary key), with the value Django
    would insert (its default, or now for ``auto_now``/``auto_now_add``): raw INSERTs stay whole
    when a field is added."""
    named = set(given)
    values: dict[str, Any] = {}
    now = None
    for each in model._meta.concrete_fields:
        if each.primary_key or each.name in named or each.attname in named:
            continue
        if getattr(each, "auto_now", False) or getattr(each, "auto_now_add", False):
            value = now = now or timezone.now()
        else:
            value = each.get_default()
        values[each.name] = each.get_db_prep_save(value, connection)
    return values


@dataclass(frozen=True)
class Table:
    """Rows handed to a statement as a named table: ``sql`` defines it in a WITH clause."""

    name: str
    sql: str
    params: list[Any]


def values_table(
    connection: BaseDatabaseWrapper,
    name: str,
    columns: Sequence[tuple[str, str]],
    rows: Sequence[Sequence[Any]],
) -> Table:
    """``rows`` as table ``name`` with ``columns`` ((name, PostgreSQL type), ...), passed as one
    JSON text whatever the number of rows: the database's JSON parser splits it (arrays of
    values cost the driver more to encode, element by element, than the statement to run)."""
    names = ", ".join(column for column, _ in columns)
    data = [json.dumps([list(row) for row in rows], ensure_ascii=False, separators=(",", ":"))]
    if connection.vendor == "postgresql":
        picks = ", ".join(
            f"r->>{index}" if kind == "text" else f"(r->>{index})::{kind}"
            for index, (_, kind) in enumerate(columns)
        )
        return Table(name, f"{name}({names}) AS (SELECT {picks} FROM json_array_elements(%s::json) r)", data)
    picks = ", ".join(f"json_extract(value, '$[{index}]')" for index in range(len(columns)))
    return Table(name, f"{name}({names}) AS (SELECT {picks} FROM json_each(%s))", data)


@dataclass(frozen=True)
class Statement:
    """An INSERT, UPDATE or DELETE (without RETURNING) reading ``tables`` (WITH clauses).
    ``returning`` names the columns to hand back; without it, the answer is how many rows it
    wrote."""

    sql: str
    params: list[Any] = field(default_factory=list)
    tables: tuple[Table, ...] = ()
    returning: str = ""


Answer = int | list[tuple[Any, ...]]


def statement_cursor(connection: BaseDatabaseWrapper) -> Any:
    """A cursor for this module's statements. On PostgreSQL their values travel apart from their
    text (server-side binding: no quoting of long arrays into the text), and the text is a
    prepared statement of the connection, planned once (a request's writes as one statement
    take longer to plan than to run). Not behind a transaction-pooling proxy, which a
    connection flagged ``DISABLE_SERVER_SIDE_CURSORS`` is (Django's setting for PgBouncer):
    there the statement is planned each time."""
    if connection.vendor != "postgresql":
        return connection.cursor()
    connection.ensure_connection()
    prepare = not connection.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS")
    driver = connection.connection
    if prepare and driver.prepare_threshold is None:
        # psycopg prepares nothing while this is None (Django's default); the ORM's cursors bind
        # on the client side and are never prepared either way, so only these statements are.
        driver.prepare_threshold = 2**31 - 1
    return connection._prepare_cursor(_server_binding(prepare)(driver))  # type: ignore[attr-defined]


_cursor_classes: dict[bool, type] = {}


@dataclass(frozen=True)
class _Sent:
    query: bytes


def _server_binding(prepare: bool) -> type:
    """The psycopg cursor class: server-side binding, every statement prepared (or none)."""
    if prepare not in _cursor_classes:
        from django.db.backends.postgresql import base

        binding: Any = base.ServerBindingCursor  # type: ignore[attr-defined]  # defined with psycopg 3

        class StatementCursor(binding):  # type: ignore[misc]  # a psycopg class, untyped here
            def execute(self, query: Any, params: Any = None, **options: Any) -> Any:
                options["prepare"] = prepare
                done = super().execute(query, params, **options)
                if getattr(self, "_query", None) is None:  # a prepared statement's text, for the query log
                    self._query = _Sent(str(query).encode())
                return done

        _cursor_classes[prepare] = StatementCursor
    return _cursor_classes[prepare]


def run_statements(connection: BaseDatabaseWrapper, statements: Sequence[Statement]) -> list[Answer]:
    """Run ``statements`` in order, each answered by its row count or its ``returning`` rows."""
    answers: list[Answer] = []
    with statement_cursor(connection) as cursor:
        for statement in statements:
            tables = statement.tables
            prefix = f"WITH {', '.join(t.sql for t in tables)} " if tables else ""
            tail = f" RETURNING {statement.returning}" if statement.returning else ""
            cursor.execute(
                prefix + statement.sql + tail, [p for t in tables for p in t.params] + statement.params
            )
            if tail:
                answers.append([tuple(row) for row in cursor.fetchall()])
            elif prefix and connection.vendor == "sqlite":  # its driver counts rows only after a verb
                cursor.execute("SELECT changes()")
                answers.append(int(cursor.fetchone()[0]))
            else:
                answers.append(cursor.rowcount)
    return answers
