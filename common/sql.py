"""Multi-row INSERTs without the ORM's per-statement compiling, for the hot write paths.

Values go through each field's own `get_db_prep_save`, exactly as the ORM would send
them, so the rows are the same on SQLite and Postgres; only the SQL is built here
(and cached per table, columns and row count).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.db import connection, models


@cache
def _insert_sql(model: type[models.Model], names: tuple[str, ...], count: int, ignore_conflicts: bool) -> str:
    quote = connection.ops.quote_name
    columns = ", ".join(quote(str(model._meta.get_field(name).column)) for name in names)  # type: ignore[union-attr]
    row = "(" + ", ".join(["%s"] * len(names)) + ")"
    table = quote(model._meta.db_table)
    sql = f"INSERT INTO {table} ({columns}) VALUES " + ", ".join([row] * count)  # noqa: S608 (names are ours)
    return sql + (" ON CONFLICT DO NOTHING" if ignore_conflicts else "")


def insert_rows(model: type[models.Model], rows: list[dict[str, Any]], *, ignore_conflicts: bool = False) -> None:
    """INSERT `rows` (dicts of field name -> value, all with the same names) in one statement."""
    if not rows:
        return
    names = tuple(rows[0])
    fields = [model._meta.get_field(name) for name in names]
    params = [field.get_db_prep_save(row[field.name], connection) for row in rows for field in fields]  # type: ignore[union-attr]
    with connection.cursor() as cursor:
        cursor.execute(_insert_sql(model, names, len(rows), ignore_conflicts), params)


def insert_object[M: models.Model](obj: M) -> M:
    """INSERT a new instance as `Model.save` would (its defaults, `auto_now_add`), in one cached
    statement; for models whose primary key the instance carries (no AutoField) and that no
    signal receiver listens to (none here does)."""
    meta = obj._meta
    if meta.auto_field is not None:
        raise TypeError(f"{meta.label}: insert_object needs a primary key set on the instance")
    insert_rows(type(obj), [{field.name: field.pre_save(obj, True) for field in meta.concrete_fields}])
    obj._state.adding = False
    obj._state.db = connection.alias
    return obj
