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


# --- Lookups on a unique key, compiled once ---------------------------------------------------
# The ORM compiles a queryset on every call: for a one-row lookup on the hot paths (the API key
# of every request, a stream's run, a budget) that costs more CPU than the query itself. These
# run SQL written once per shape and build the instances as the ORM would (`Model.from_db`, with
# each field's and the backend's converters), so they are the same objects on SQLite and Postgres.


@cache
def _row_shape(model: type[models.Model]) -> tuple[tuple[Any, ...], tuple[list[Any], ...], tuple[str, ...]]:
    """Each concrete field's column expression, its converters (as the ORM's compiler finds
    them) and its attname."""
    fields = model._meta.concrete_fields
    cols = tuple(field.get_col(model._meta.db_table) for field in fields)
    converters = tuple(connection.ops.get_db_converters(col) + col.get_db_converters(connection) for col in cols)
    return cols, converters, tuple(field.attname for field in fields)


@cache
def columns(model: type[models.Model], alias: str) -> str:
    """`alias.col, ...`: every concrete column of `model`, in the order `fetch_models` reads them."""
    quote = connection.ops.quote_name
    return ", ".join(f"{alias}.{quote(str(field.column))}" for field in model._meta.concrete_fields)


def fetch_models(sql: str, params: list[Any], *shape: type[models.Model]) -> list[Any] | None:
    """The first row of `sql` as one instance of each model of `shape` (its columns selected with
    `columns`, model after model), then any further columns as they are; None for no row."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    out: list[Any] = []
    start = 0
    for model in shape:
        cols, converters, names = _row_shape(model)
        values = list(row[start : start + len(cols)])
        for index, convert in enumerate(converters):
            for converter in convert:
                values[index] = converter(values[index], cols[index], connection)
        out.append(model.from_db(connection.alias, names, values))
        start += len(cols)
    out.extend(row[start:])
    return out


def for_update() -> str:
    """` FOR UPDATE` where the database locks rows that way (not SQLite, whose writes are serial)."""
    return " FOR UPDATE" if connection.features.has_select_for_update else ""


@cache
def _values_sql(model: type[models.Model], names: tuple[str, ...], where: str, order_by: str) -> str:
    quote = connection.ops.quote_name
    selected = ", ".join(quote(str(model._meta.get_field(name).column)) for name in names)  # type: ignore[union-attr]
    sql = f"SELECT {selected} FROM {quote(model._meta.db_table)} WHERE {where}"  # noqa: S608 (names are ours)
    return sql + (f" ORDER BY {order_by}" if order_by else "")


def fetch_values(
    model: type[models.Model], names: tuple[str, ...], where: str, params: list[Any], *, order_by: str = ""
) -> list[tuple[Any, ...]]:
    """The fields `names` of every row of `model` that `where` (SQL on its columns) matches, as
    `values_list(*names)` gives them, with a statement compiled once per shape."""
    cols, converters, attnames = _row_shape(model)
    indexes = [attnames.index(model._meta.get_field(name).attname) for name in names]  # type: ignore[union-attr]
    with connection.cursor() as cursor:
        cursor.execute(_values_sql(model, names, where, order_by), params)
        rows = cursor.fetchall()
    convert = [
        (position, cols[index], converters[index]) for position, index in enumerate(indexes) if converters[index]
    ]
    if not convert:
        return [tuple(row) for row in rows]
    out = []
    for row in rows:
        values = list(row)
        for position, col, functions in convert:
            for function in functions:
                values[position] = function(values[position], col, connection)
        out.append(tuple(values))
    return out
