"""Turning `db_index=True` indexes into plain, named `Meta.indexes` without rebuilding them.

On Postgres, Django gives every indexed string column (and every foreign key to a string primary
key) a second, `_like` index (varchar_pattern_ops) that only LIKE 'prefix%' lookups use. Moving
such a field to `Meta.indexes` would have Django drop its index and build a new one, which locks
the table's writes for as long as the build takes on a large table. `swap_indexes` does the same
in place: on Postgres it drops the `_like` index and renames the existing one, both instant; where
another index already leads with the column, the column's own is dropped. SQLite has neither
`_like` indexes nor a rename, so there the index is dropped and built again.

Used by migrations through `migrations.SeparateDatabaseAndState`, the generated `AlterField` and
`AddIndex` operations being the state's; keep the names here in step with them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple


class Swap(NamedTuple):
    table: str
    column: str
    # The index's name in Meta.indexes; None when another index leads with the column.
    name: str | None
    # Whether Django gave the column a `_like` index on Postgres (a string column).
    string: bool = True


def _bounded_lock_wait(schema_editor: Any) -> None:
    """On Postgres, wait at most DATABASE_MIGRATE_LOCK_TIMEOUT_SECONDS for each table's lock.

    Dropping or renaming an index locks its table for a moment; behind a long transaction that
    moment would be a wait, and the app's queries on the tables already locked would queue
    behind it. Past the timeout the migration fails whole (its transaction rolls back) and can
    run again."""
    from django.conf import settings

    if schema_editor.connection.vendor == "postgresql":
        milliseconds = int(settings.DATABASE_MIGRATE_LOCK_TIMEOUT_SECONDS * 1000)
        schema_editor.execute(f"SET LOCAL lock_timeout = {milliseconds}")


def _like_name(schema_editor: Any, table: str, column: str) -> str:
    return schema_editor._create_index_name(table, [column], suffix="_like")


def _names(schema_editor: Any, swap: Swap) -> tuple[str, str]:
    """The names Django gave the column's index and its `_like` index."""
    plain = schema_editor._create_index_name(swap.table, [swap.column], suffix="")
    return plain, _like_name(schema_editor, swap.table, swap.column)


def _create_like(schema_editor: Any, table: str, column: str) -> None:
    quote = schema_editor.quote_name
    like = _like_name(schema_editor, table, column)
    schema_editor.execute(f"CREATE INDEX {quote(like)} ON {quote(table)} ({quote(column)} varchar_pattern_ops)")


def _forwards(schema_editor: Any, swap: Swap) -> None:
    quote = schema_editor.quote_name
    plain, like = _names(schema_editor, swap)
    postgres = schema_editor.connection.vendor == "postgresql"
    if postgres and swap.string:
        schema_editor.execute(f"DROP INDEX IF EXISTS {quote(like)}")
    if swap.name is None:
        schema_editor.execute(f"DROP INDEX IF EXISTS {quote(plain)}")
    elif postgres:
        schema_editor.execute(f"ALTER INDEX {quote(plain)} RENAME TO {quote(swap.name)}")
    else:
        schema_editor.execute(f"DROP INDEX IF EXISTS {quote(plain)}")
        schema_editor.execute(f"CREATE INDEX {quote(swap.name)} ON {quote(swap.table)} ({quote(swap.column)})")


def _backwards(schema_editor: Any, swap: Swap) -> None:
    quote = schema_editor.quote_name
    plain = _names(schema_editor, swap)[0]
    postgres = schema_editor.connection.vendor == "postgresql"
    if swap.name is not None and postgres:
        schema_editor.execute(f"ALTER INDEX {quote(swap.name)} RENAME TO {quote(plain)}")
    else:
        if swap.name is not None:
            schema_editor.execute(f"DROP INDEX IF EXISTS {quote(swap.name)}")
        schema_editor.execute(f"CREATE INDEX {quote(plain)} ON {quote(swap.table)} ({quote(swap.column)})")
    if postgres and swap.string:
        _create_like(schema_editor, swap.table, swap.column)


def swap_indexes(swaps: Sequence[Swap]) -> tuple[Callable[..., None], Callable[..., None]]:
    """RunPython's forwards and backwards functions for these swaps."""

    def forwards(apps: Any, schema_editor: Any) -> None:
        _bounded_lock_wait(schema_editor)
        for swap in swaps:
            _forwards(schema_editor, swap)

    def backwards(apps: Any, schema_editor: Any) -> None:
        _bounded_lock_wait(schema_editor)
        for swap in reversed(swaps):
            _backwards(schema_editor, swap)

    return forwards, backwards


def drop_primary_key_like_indexes(tables: Sequence[tuple[str, str]]) -> tuple[Callable[..., None], Callable[..., None]]:
    """RunPython's functions dropping (and restoring) string primary keys' `_like` indexes on Postgres.

    No field option controls these: Django makes one for every varchar primary key.
    """

    def run(schema_editor: Any, create: bool) -> None:
        if schema_editor.connection.vendor != "postgresql":
            return
        _bounded_lock_wait(schema_editor)
        for table, column in tables:
            if create:
                _create_like(schema_editor, table, column)
            else:
                schema_editor.execute(
                    f"DROP INDEX IF EXISTS {schema_editor.quote_name(_like_name(schema_editor, table, column))}"
                )

    return (lambda apps, schema_editor: run(schema_editor, False)), (
        lambda apps, schema_editor: run(schema_editor, True)
    )
