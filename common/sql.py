"""Multi-row INSERTs without the ORM's per-statement compiling, for the hot write paths.

The rows stored are the ones the ORM would store, on SQLite and Postgres. On SQLite the
values go through each field's own `get_db_prep_save`, as the ORM sends them; on Postgres
the rows go as one JSON parameter, the values the fields would store unchanged as they are
(see `_json_value`). The SQL is built here, once per table and columns (and row count).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from functools import cache
from typing import Any, NamedTuple

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
    if connection.vendor == "postgresql":
        shape = _json_shape(model, names, ignore_conflicts)
        try:
            payload = _json_rows(shape, rows)
        except (TypeError, ValueError):
            pass  # a value JSON does not carry as the field would store it: the fields' own way
        else:
            waiting = getattr(_together, "statements", None)
            if waiting is not None:
                waiting.append((shape.sql, payload))
            else:
                _execute_together([(shape.sql, payload)])
            return
        _flush_together()  # what was made before this one goes first
    fields = [model._meta.get_field(name) for name in names]
    params = [field.get_db_prep_save(row[field.name], connection) for row in rows for field in fields]  # type: ignore[union-attr]
    with connection.cursor() as cursor:
        cursor.execute(_insert_sql(model, names, len(rows), ignore_conflicts), params)


_together = threading.local()


@contextmanager
def inserts_together() -> Iterator[None]:
    """The INSERTs `insert_rows` (and `insert_object`) make in the block reach Postgres as one
    statement when it ends, each a data-modifying WITH of it: one round trip, and one statement
    to send and run, for the rows of several tables. For consecutive writes only: a read in the
    block does not see them yet, nor does anything fail until the block ends (a foreign key is
    checked at commit, Django's are deferred). On SQLite each INSERT is made at once."""
    if connection.vendor != "postgresql" or getattr(_together, "statements", None) is not None:
        yield
        return
    _together.statements = []
    try:
        yield  # a block that raises makes none of them: its transaction is being rolled back
        _flush_together()
    finally:
        _together.statements = None


def with_waiting(sql: str, params: list[Any]) -> tuple[str, list[Any]]:
    """`sql` (a SELECT, UPDATE or INSERT of its own, no WITH) and its parameters, preceded by
    the INSERTs waiting in this thread's `inserts_together` block, which it then makes: one
    statement for all. It does not see their rows (one statement reads one snapshot)."""
    waiting = getattr(_together, "statements", None)
    if not waiting:
        return sql, params
    statements = list(waiting)
    waiting.clear()
    return _preceded(statements, sql, params)


def _preceded(statements: list[tuple[str, str]], sql: str, params: list[Any]) -> tuple[str, list[Any]]:
    """`sql` with `statements` (INSERTs of one JSON parameter each) as data-modifying WITHs."""
    withs = ", ".join(f"w{n} AS ({insert})" for n, (insert, _) in enumerate(statements))
    return f"WITH {withs} {sql}", [*(payload for _, payload in statements), *params]


def _flush_together() -> None:
    waiting = getattr(_together, "statements", None)
    if waiting:
        _execute_together(list(waiting))
        waiting.clear()


def _execute_together(statements: list[tuple[str, str]]) -> None:
    *first, (last, payload) = statements
    with connection.cursor() as cursor:
        cursor.execute(*(_preceded(first, last, [payload]) if first else (last, [payload])))


# On Postgres the rows travel as one JSON document that the server unpacks (json_to_recordset,
# a scan of the array that inserts the rows in its order, as a multi-row VALUES does): one
# parameter to convert instead of one per value (psycopg quotes each in Python), and no trip
# through the fields' adapters for plain values. A value is sent as it is only where the field
# would store it unchanged; anything else goes through the field's own `get_db_prep_save`
# first, and what JSON cannot carry then (a NaN, a field's own type) sends the whole INSERT
# the fields' way instead.
_JSON, _TEXT, _INT, _FLOAT, _BOOL, _TIME, _OTHER = range(7)
_KINDS: dict[type[models.Field[Any, Any]], int] = {
    models.CharField: _TEXT,
    models.TextField: _TEXT,
    **{
        cls: _INT
        for cls in (
            models.IntegerField,
            models.BigIntegerField,
            models.SmallIntegerField,
            models.PositiveIntegerField,
            models.PositiveBigIntegerField,
            models.PositiveSmallIntegerField,
            models.AutoField,
            models.BigAutoField,
            models.SmallAutoField,
        )
    },
    models.FloatField: _FLOAT,
    models.BooleanField: _BOOL,
    models.DateTimeField: _TIME,
}
_SENT_AS_IS: dict[int, tuple[type, ...]] = {_TEXT: (str,), _INT: (int,), _FLOAT: (int, float), _BOOL: (bool,)}


class _JsonShape(NamedTuple):
    sql: str
    fields: list[tuple[str, Any, int]]  # column, field, kind


def _kind(field: Any) -> int:
    if isinstance(field, models.JSONField):
        return _JSON if field.encoder is None else _OTHER  # as Django's own json.dumps writes it
    return _KINDS.get(type(field.target_field if field.is_relation else field), _OTHER)


@cache
def _record_columns(
    model: type[models.Model], names: tuple[str, ...]
) -> tuple[list[str], str, list[tuple[str, Any, int]]]:
    """The quoted columns of `names`, the record type `json_to_recordset` reads them as, and
    (column, field, kind) of each for `_json_rows`."""
    quote = connection.ops.quote_name
    fields = [model._meta.get_field(name) for name in names]
    columns = [quote(str(field.column)) for field in fields]  # type: ignore[union-attr]
    # Each value is read as its column's type: one too long for a varchar(n) is refused, as
    # the ORM's INSERT refuses it.
    types = ", ".join(
        f"{column} {field.db_type(connection)}"  # type: ignore[union-attr]
        for column, field in zip(columns, fields, strict=True)
    )
    return columns, types, [(str(field.column), field, _kind(field)) for field in fields]  # type: ignore[union-attr]


@cache
def _json_shape(model: type[models.Model], names: tuple[str, ...], ignore_conflicts: bool) -> _JsonShape:
    columns, types, fields = _record_columns(model, names)
    listed = ", ".join(columns)
    sql = (
        f"INSERT INTO {connection.ops.quote_name(model._meta.db_table)} ({listed}) SELECT {listed} "  # noqa: S608 (names are ours)
        f"FROM json_to_recordset(%s::json) AS x({types})" + (" ON CONFLICT DO NOTHING" if ignore_conflicts else "")
    )
    return _JsonShape(sql, fields)


@cache
def _numbered_shape(model: type[models.Model], names: tuple[str, ...], numbered: str, counter: str) -> _JsonShape:
    columns, types, fields = _record_columns(model, names)
    target = connection.ops.quote_name(str(model._meta.get_field(numbered).column))  # type: ignore[union-attr]
    selected = ", ".join(f"c.n + x.{column}" if column == target else f"x.{column}" for column in columns)
    sql = (
        f"WITH c AS ({counter}), i AS (INSERT INTO {connection.ops.quote_name(model._meta.db_table)} "  # noqa: S608 (names are ours)
        f"({', '.join(columns)}) SELECT {selected} FROM c, json_to_recordset(%s::json) AS x({types})) SELECT n FROM c"
    )
    return _JsonShape(sql, fields)


def insert_numbered(
    model: type[models.Model], rows: list[dict[str, Any]], *, numbered: str, counter: str, params: list[Any]
) -> int | None:
    """On Postgres, one statement (and so, outside a transaction, its own): `counter`, an UPDATE
    of one row `RETURNING <the last number it took> AS n`, then the INSERT of `rows`, each with
    its number given as an offset from that last one in the field `numbered` (0 for the last
    row, -1 for the one before...). Returns n, or None when the UPDATE matched no row (then
    nothing is inserted). Raises TypeError or ValueError, having sent nothing, for rows JSON
    does not carry as the fields would store them (`insert_rows` then takes them its way)."""
    if connection.vendor != "postgresql":
        raise TypeError("insert_numbered is for Postgres")
    if not rows or numbered not in rows[0]:
        raise ValueError(f"insert_numbered needs rows, each with its {numbered!r} offset")
    shape = _numbered_shape(model, tuple(rows[0]), numbered, counter)
    payload = _json_rows(shape, rows)
    _flush_together()  # what was made before this one goes first
    with connection.cursor() as cursor:
        cursor.execute(shape.sql, [*params, payload])
        row = cursor.fetchone()
    return None if row is None else int(row[0])


def _json_rows(shape: _JsonShape, rows: list[dict[str, Any]]) -> str:
    return json.dumps(
        [{column: _json_value(field, kind, row[field.name]) for column, field, kind in shape.fields} for row in rows],
        ensure_ascii=False,
        separators=(",", ":"),
        allow_nan=False,
    )


def _json_value(field: Any, kind: int, value: Any) -> Any:
    """`value` as the JSON the server casts to what the field would have stored."""
    if value is None or kind == _JSON:
        return value  # None: SQL NULL (a JSON null comes out of the record as NULL too)
    if type(value) in _SENT_AS_IS.get(kind, ()) or (kind == _TEXT and isinstance(value, str)):
        return value  # (a str subclass, such as a TextChoices member, is written as its text)
    if kind == _TIME and type(value) is datetime and value.tzinfo is not None:
        return value.isoformat()
    prepared = field.get_db_prep_save(value, connection)
    if prepared is None or type(prepared) in (str, int, float, bool):
        return prepared
    if isinstance(prepared, datetime) and prepared.tzinfo is not None:
        return prepared.isoformat()
    if isinstance(prepared, Decimal) and prepared.is_finite():
        return str(prepared)
    raise TypeError(f"{type(prepared).__name__} is not sent as JSON")


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
    `values_list(*names)` gives them, with a statement compiled once per shape (and the INSERTs
    waiting in an `inserts_together` block made by the same statement, `with_waiting`)."""
    with connection.cursor() as cursor:
        cursor.execute(*with_waiting(_values_sql(model, names, where, order_by), params))
        rows = cursor.fetchall()
    return _converted(model, names, rows)


def fetch_values_beside(
    scalar: str,
    scalar_params: list[Any],
    model: type[models.Model],
    names: tuple[str, ...],
    where: str,
    params: list[Any],
    *,
    order_by: str = "",
) -> tuple[Any, list[tuple[Any, ...]]]:
    """`fetch_values`, and the one value the SELECT `scalar` gives, read by the same statement
    (Postgres; one snapshot for both): (that value, the rows)."""
    quote = connection.ops.quote_name
    selected = ", ".join(f"r.{quote(str(model._meta.get_field(name).column))}" for name in names)  # type: ignore[union-attr]
    inner = _values_sql(model, names, where, "").replace("SELECT ", "SELECT TRUE AS found_, ", 1)
    sql = (
        f"SELECT x.v, r.found_, {selected} FROM ({scalar}) AS x(v) LEFT JOIN ({inner}) AS r ON TRUE"  # noqa: S608 (names are ours)
        + (f" ORDER BY r.{order_by}" if order_by else "")
    )
    with connection.cursor() as cursor:
        cursor.execute(*with_waiting(sql, [*scalar_params, *params]))
        rows = cursor.fetchall()
    value = rows[0][0] if rows else None
    return value, _converted(model, names, [row[2:] for row in rows if row[1]])


def _converted(model: type[models.Model], names: tuple[str, ...], rows: list[Any]) -> list[tuple[Any, ...]]:
    """Database rows of the fields `names`, converted as `values_list` converts them."""
    cols, converters, attnames = _row_shape(model)
    indexes = [attnames.index(model._meta.get_field(name).attname) for name in names]  # type: ignore[union-attr]
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
