"""The tables every run writes carry no index that another index already serves.

Each index costs every insert (and every update that moves a row) an entry: a run writes a run
row several times, ~10 events, ~10 spans, a trace, its session items and audit rows.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.db.models import Model

from audit.models import AuditLog
from runs.models import Run, RunEvent, Session, SessionItem, Span, Trace

pytestmark = pytest.mark.django_db

WRITTEN_PER_RUN = (Run, RunEvent, Session, SessionItem, Trace, Span, AuditLog)


def _indexes(model: type[Model]) -> dict[str, Any]:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, model._meta.db_table)
    return {name: c for name, c in constraints.items() if c["index"] or c["unique"] or c["primary_key"]}


def _pattern_ops_indexes(model: type[Model]) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = %s AND indexdef LIKE %s",
            [model._meta.db_table, "%pattern_ops%"],
        )
        return [name for (name,) in cursor.fetchall()]


@pytest.mark.parametrize("model", WRITTEN_PER_RUN, ids=lambda m: m.__name__)
def test_no_index_is_a_leading_part_of_another(model):
    indexes = _indexes(model)
    covered = [
        f"{name} {c['columns']} is served by {other} {o['columns']}"
        for name, c in indexes.items()
        if not (c["unique"] or c["primary_key"])
        for other, o in indexes.items()
        if other != name and o["columns"][: len(c["columns"])] == c["columns"]
    ]
    assert covered == []


def test_no_string_column_has_a_second_like_index_on_postgres():
    if connection.vendor != "postgresql":
        pytest.skip("the `_like` (varchar_pattern_ops) indexes are Postgres's")
    assert {model.__name__: _pattern_ops_indexes(model) for model in WRITTEN_PER_RUN} == dict.fromkeys(
        (model.__name__ for model in WRITTEN_PER_RUN), []
    )


@pytest.mark.parametrize("model", WRITTEN_PER_RUN, ids=lambda m: m.__name__)
def test_the_named_indexes_are_the_database_s(model):
    """The migration renames (Postgres) or rebuilds (SQLite) indexes under the names the models declare."""
    assert {index.name for index in model._meta.indexes} <= set(_indexes(model))
