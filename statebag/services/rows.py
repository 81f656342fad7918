"""Many rows in a few statements, for the writes a request makes inside its transaction.

On SQLite that transaction holds the write lock of the whole database, so what it costs is
what every other writer waits. ``bulk_create`` prepares each value of each row through its
field (tens of microseconds a row, more than the insert itself), and its ``ignore_conflicts``
is SQLite's INSERT OR IGNORE, which also drops rows that break a CHECK or NOT NULL constraint
without a word. ``insert_rows`` takes values already in their database form and skips only
rows that duplicate an existing one on the constraint it names (ON CONFLICT ... DO NOTHING,
on SQLite and PostgreSQL alike); any other failure raises.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.db import connections, models, router

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
