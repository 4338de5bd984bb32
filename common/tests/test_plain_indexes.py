"""The index swaps the plain-index migrations run (common.plain_indexes), forwards and back."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.db import connection, models
from django.test.utils import isolate_apps

from common.plain_indexes import Swap, drop_primary_key_like_indexes, swap_indexes

pytestmark = pytest.mark.django_db(transaction=True)  # SQLite's schema editor runs outside a transaction


def _indexes(table: str) -> dict[str, list[str]]:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    return {name: c["columns"] for name, c in constraints.items() if c["index"] and not c["primary_key"]}


def _pattern_ops(table: str) -> set[str]:
    if connection.vendor != "postgresql":
        return set()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = %s AND indexdef LIKE %s", [table, "%pattern_ops%"]
        )
        return {name for (name,) in cursor.fetchall()}


def _thing() -> type[models.Model]:
    class Thing(models.Model):  # noqa: DJ008 (a table for this test only)
        id = models.CharField(primary_key=True, max_length=20)
        kind = models.CharField(max_length=20, db_index=True)
        count = models.IntegerField(db_index=True)

        class Meta:
            app_label = "runs"
            db_table = "plain_index_thing"

    return Thing


@isolate_apps("runs")
def test_indexes_are_swapped_for_plain_named_ones_and_back():
    Thing = _thing()
    table = Thing._meta.db_table
    with connection.schema_editor() as editor:
        editor.create_model(Thing)
    try:
        before, before_ops = _indexes(table), _pattern_ops(table)
        postgres = connection.vendor == "postgresql"
        # Django's own: one index per indexed column, and on Postgres a `_like` one per string column.
        assert sorted(map(tuple, before.values())) == sorted(
            [("count",), ("kind",)] + ([("id",), ("kind",)] if postgres else [])
        )
        assert len(before_ops) == (2 if postgres else 0)

        swaps = [Swap(table, "kind", "thing_kind"), Swap(table, "count", None, string=False)]
        forwards, backwards = swap_indexes(swaps)
        drop_pk, restore_pk = drop_primary_key_like_indexes([(table, "id")])
        apps: Any = None
        with connection.schema_editor() as editor:
            forwards(apps, editor)
            drop_pk(apps, editor)
        assert _indexes(table) == {"thing_kind": ["kind"]}
        assert _pattern_ops(table) == set()

        with connection.schema_editor() as editor:
            restore_pk(apps, editor)
            backwards(apps, editor)
        assert (_indexes(table), _pattern_ops(table)) == (before, before_ops)
    finally:
        with connection.schema_editor() as editor:
            editor.delete_model(Thing)


@isolate_apps("runs")
def test_a_swap_behind_a_long_transaction_gives_up_at_the_lock_timeout(settings):
    if connection.vendor != "postgresql":
        pytest.skip("lock_timeout is Postgres's; SQLite has one writer and no long readers to wait for")
    import psycopg
    from django.db import OperationalError

    settings.DATABASE_MIGRATE_LOCK_TIMEOUT_SECONDS = 1
    Thing = _thing()
    table = Thing._meta.db_table
    with connection.schema_editor() as editor:
        editor.create_model(Thing)
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    try:
        before = _indexes(table)
        forwards, _ = swap_indexes([Swap(table, "kind", "thing_kind")])
        with psycopg.connect(**params) as other:  # a reader in a long transaction
            other.execute("SELECT count(*) FROM plain_index_thing")
            started = time.monotonic()
            with pytest.raises(OperationalError, match="lock timeout"), connection.schema_editor() as editor:
                forwards(None, editor)
            waited = time.monotonic() - started
        assert 1 <= waited < 5
        assert _indexes(table) == before  # nothing changed
    finally:
        with connection.schema_editor() as editor:
            editor.delete_model(Thing)
