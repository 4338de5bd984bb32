"""The hot paths' INSERTs write what the ORM's save would."""

from __future__ import annotations

import math
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import DataError, IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from common.sql import insert_numbered, insert_object, insert_rows
from runs.models import Run, Session

pytestmark = pytest.mark.django_db


def test_a_new_instance_is_inserted_with_its_defaults_in_one_statement(alice):
    session = Session(owner=alice.user)
    run = Run(owner=alice.user, session=session, agent="calculator", model="offline", input="2+2", limits={"a": 1})
    with CaptureQueriesContext(connection) as queries:
        insert_object(session)
        insert_object(run)
    assert len(queries) == 2 and all(query["sql"].startswith("INSERT") for query in queries)
    assert not run._state.adding and run.created_at is not None  # auto_now_add, as save() sets it
    stored = Run.objects.get(pk=run.pk)
    assert (stored.session_id, stored.owner_id, stored.status) == (session.pk, alice.user.pk, Run.Status.QUEUED)
    assert stored.created_at == run.created_at and stored.limits == {"a": 1} and stored.input_files == run.input_files
    assert Session.objects.get(pk=session.pk).created_at == session.created_at


def test_a_model_whose_database_makes_the_key_is_refused(alice):
    from audit.models import AuditLog

    with pytest.raises(TypeError, match="primary key"):
        insert_object(AuditLog(action="x"))


def test_a_long_multi_row_insert_is_converted_once(alice):
    from django.utils import timezone

    from runs.models import RunEvent

    if connection.vendor != "postgresql":
        pytest.skip("psycopg's statement conversion: Postgres only")
    from psycopg import _queries

    from common.sql import insert_rows

    session = insert_object(Session(owner=alice.user))
    run = insert_object(Run(owner=alice.user, session=session, agent="calculator", model="offline", input="x"))
    now = timezone.now()
    rows = [{"run": run.pk, "seq": seq, "type": "text.delta", "data": {}, "created_at": now} for seq in range(1, 31)]
    assert len(rows) * len(rows[0]) > 50  # past psycopg's own bound of 50 parameters
    insert_rows(RunEvent, rows[:15])
    before = _queries._query2pg_client.cache_info().hits
    insert_rows(RunEvent, [{**row, "seq": row["seq"] + 15} for row in rows[:15]])
    assert _queries._query2pg_client.cache_info().hits == before + 1
    assert RunEvent.objects.filter(run=run).count() == 30


def test_fetched_models_are_what_the_orm_builds(alice):
    from django.contrib.auth.models import User

    from accounts.models import ApiKey
    from common.sql import columns, fetch_models

    ApiKey.objects.filter(user=alice.user).update(last_used_at="2026-01-02T03:04:05Z")
    sql = (
        f"SELECT {columns(ApiKey, 'k')}, {columns(User, 'u')}, 42 FROM accounts_apikey k "  # noqa: S608
        "INNER JOIN auth_user u ON u.id = k.user_id WHERE u.username = %s"
    )
    with CaptureQueriesContext(connection) as queries:
        key, user, extra = fetch_models(sql, ["alice"], ApiKey, User)
    assert len(queries) == 1 and extra == 42
    orm = ApiKey.objects.select_related("user").get(user=alice.user)
    for model, fetched, expected in ((ApiKey, key, orm), (User, user, orm.user)):
        for field in model._meta.concrete_fields:
            got, want = getattr(fetched, field.attname), getattr(expected, field.attname)
            assert (got, type(got)) == (want, type(want)), field.name
        assert not fetched._state.adding and fetched._state.db == "default"
    assert fetch_models(sql, ["nobody"], ApiKey, User) is None


def test_fetched_values_are_what_values_list_gives(alice):
    from common.sql import fetch_values
    from runs.models import SessionItem

    session = insert_object(Session(owner=alice.user))
    other = insert_object(Session(owner=alice.user))
    items = [{"role": "user", "content": "2+2"}, ["a", 1, None], "text", 7, {"nested": {"deep": [True, 1.5]}}]
    SessionItem.objects.bulk_create([SessionItem(session=session, data=item) for item in items])
    SessionItem.objects.create(session=other, data={"not": "this one"})
    expected = list(SessionItem.objects.filter(session=session).order_by("id").values_list("id", "data", "created_at"))
    with CaptureQueriesContext(connection) as queries:
        got = fetch_values(SessionItem, ("id", "data", "created_at"), "session_id = %s", [session.pk], order_by="id")
    assert got == expected and [type(v) for row in got for v in row] == [type(v) for row in expected for v in row]
    assert len(queries) == 1 and [data for _, data, _ in got] == items
    assert fetch_values(SessionItem, ("id",), "session_id = %s", ["sess_none"]) == []


def _span_row(run: Run, trace_id: str, n: int, **values: Any) -> dict[str, Any]:
    from django.utils import timezone

    now = timezone.now()
    return {
        "id": f"span_{n}",
        "trace": trace_id,
        "run": run.pk,
        "parent_id": "",
        "kind": "function",
        "name": "calculate ü 数",
        "started_at": now,
        "ended_at": now + timedelta(microseconds=1234),
        "duration_ms": 1.234,
        "usage": None,
        "cost_usd": Decimal("0.000123"),
        "data": {"input": {"nested": [1, 2.5, None, True, "ü"]}, "empty": {}},
        "error": None,
        **values,
    }


def test_inserted_rows_are_what_the_orm_stores(alice):
    from runs.models import Span, Trace

    session = insert_object(Session(owner=alice.user))
    run = insert_object(Run(owner=alice.user, session=session, agent="calculator", model="offline", input="x"))
    trace = Trace.objects.create(id="trace_1", run=run, workflow_name="w")
    rows = [
        _span_row(run, trace.pk, 1),
        _span_row(run, trace.pk, 2, usage={"total_tokens": 3}, error={"message": "no"}, cost_usd=None),
        _span_row(run, trace.pk, 3, duration_ms=2, data=["a list", ("a", "tuple")], kind=Run.Status.RUNNING),
    ]
    with CaptureQueriesContext(connection) as queries:
        insert_rows(Span, [{**row, "id": f"fast_{row['id']}"} for row in rows])
    assert len(queries) == 1
    if connection.vendor == "postgresql":
        assert "json_to_recordset" in queries[0]["sql"]  # the rows as one parameter
    for row in rows:  # the ORM's own INSERT of the same values
        values = {name: value for name, value in row.items() if name not in ("trace", "run")}
        Span.objects.create(**values, trace_id=row["trace"], run_id=row["run"])
    fields = [field.attname for field in Span._meta.concrete_fields if field.name != "id"]
    for n in (1, 2, 3):
        fast = Span.objects.values(*fields).get(pk=f"fast_span_{n}")
        orm = Span.objects.values(*fields).get(pk=f"span_{n}")
        assert fast == orm and [type(v) for v in fast.values()] == [type(v) for v in orm.values()]
    # None in a nullable JSON field is SQL NULL (not JSON null), as the ORM stores it
    assert Span.objects.filter(pk="fast_span_1", usage__isnull=True, error__isnull=True).exists()
    assert Span.objects.get(pk="fast_span_3").data == ["a list", ["a", "tuple"]]


def test_rows_are_inserted_in_their_order(alice):
    from runs.models import SessionItem

    session = insert_object(Session(owner=alice.user))
    now = timezone.now()
    items = [{"session": session.pk, "run": None, "data": {"n": n}, "created_at": now} for n in range(60)]
    insert_rows(SessionItem, items)
    stored = list(SessionItem.objects.filter(session=session).order_by("id").values_list("data", flat=True))
    assert stored == [{"n": n} for n in range(60)]


def test_values_json_cannot_carry_are_sent_the_fields_way(alice):
    from runs.models import Span, Trace

    if connection.vendor != "postgresql":
        pytest.skip("the rows go as JSON on Postgres only (and SQLite stores a NaN as NULL)")
    session = insert_object(Session(owner=alice.user))
    run = insert_object(Run(owner=alice.user, session=session, agent="calculator", model="offline", input="x"))
    Trace.objects.create(id="trace_1", run=run, workflow_name="w")
    insert_rows(Span, [_span_row(run, "trace_1", 1, duration_ms=math.nan), _span_row(run, "trace_1", 2)])
    assert math.isnan(Span.objects.get(pk="span_1").duration_ms)
    assert Span.objects.get(pk="span_2").duration_ms == 1.234


def test_a_value_too_long_for_its_column_is_refused_and_nothing_is_stored(alice):
    from runs.models import RunEvent

    if connection.vendor != "postgresql":
        pytest.skip("SQLite does not bound varchar lengths")
    session = insert_object(Session(owner=alice.user))
    run = insert_object(Run(owner=alice.user, session=session, agent="calculator", model="offline", input="x"))
    row = {"run": run.pk, "seq": 1, "type": "t" * 40, "data": {}, "created_at": timezone.now()}
    insert_rows(RunEvent, [row])  # exactly the column's 40 characters
    with pytest.raises(DataError, match="too long"), transaction.atomic():
        insert_rows(RunEvent, [{**row, "seq": 2}, {**row, "seq": 3, "type": "t" * 41}])
    assert list(RunEvent.objects.filter(run=run).values_list("seq", "type")) == [(1, "t" * 40)]


def test_inserts_made_together_reach_postgres_as_one_statement(alice):
    from audit.models import AuditLog
    from common.sql import inserts_together
    from runs.models import RunEvent

    postgres = connection.vendor == "postgresql"
    now = timezone.now()
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        with inserts_together():
            session = insert_object(Session(owner=alice.user))
            run = insert_object(Run(owner=alice.user, session=session, agent="calculator", model="offline", input="x"))
            insert_rows(RunEvent, [{"run": run.pk, "seq": 1, "type": "run.queued", "data": {}, "created_at": now}])
            audit = {
                "created_at": now,
                "actor_type": "system",
                "actor_id": "",
                "actor_label": "t",
                "run_id": run.pk,
                "data": {},
            }
            insert_rows(AuditLog, [{**audit, "action": "a", "target_type": "run", "target_id": run.pk}])
            insert_rows(AuditLog, [{**audit, "action": "b", "target_type": "run", "target_id": run.pk}])
            if postgres:  # not yet sent: a read in the block does not see them
                assert not Run.objects.filter(pk=run.pk).exists()
        assert Run.objects.get(pk=run.pk).session_id == session.pk
    writes = [query for query in queries if "INSERT" in query["sql"]]
    assert len(writes) == (1 if postgres else 5)
    assert RunEvent.objects.filter(run=run).count() == 1
    assert list(AuditLog.objects.filter(target_id=run.pk).order_by("id").values_list("action", flat=True)) in (
        ["a", "b"],
        ["b", "a"],  # one statement: its WITH parts run in no set order
    )


def test_inserts_made_together_keep_their_order_around_one_that_cannot_wait(alice):
    from common.sql import inserts_together
    from runs.models import Span, Trace

    if connection.vendor != "postgresql":
        pytest.skip("inserts are made together on Postgres only")
    session = insert_object(Session(owner=alice.user))
    run = insert_object(Run(owner=alice.user, session=session, agent="calculator", model="offline", input="x"))
    with CaptureQueriesContext(connection) as queries, transaction.atomic(), inserts_together():
        Trace.objects.create(id="trace_1", run=run, workflow_name="w")
        insert_rows(Span, [_span_row(run, "trace_1", 1)])
        insert_rows(Span, [_span_row(run, "trace_1", 2, duration_ms=math.nan)])  # no JSON NaN: the fields' way
        insert_rows(Span, [_span_row(run, "trace_1", 3)])
    spans = [query["sql"] for query in queries if "runs_span" in query["sql"]]
    assert len(spans) == 3 and "json_to_recordset" not in spans[1]  # the one before it went first
    assert Span.objects.filter(run=run).count() == 3


def test_inserts_of_a_block_that_fails_are_not_made(alice):
    from common.sql import inserts_together

    session = insert_object(Session(owner=alice.user))
    with pytest.raises(RuntimeError), transaction.atomic(), inserts_together():
        insert_object(Run(owner=alice.user, session=session, agent="calculator", model="offline", input="x"))
        raise RuntimeError("stop")
    assert not Run.objects.filter(session=session).exists()
    insert_object(Run(owner=alice.user, session=session, agent="calculator", model="offline", input="y"))  # after it
    assert list(Run.objects.filter(session=session).values_list("input", flat=True)) == ["y"]


def test_a_block_whose_inserts_fail_together_leaves_the_next_inserts_alone(alice):
    from common.sql import inserts_together
    from runs.models import RunEvent

    session = insert_object(Session(owner=alice.user))
    run = insert_object(Run(owner=alice.user, session=session, agent="calculator", model="offline", input="x"))
    row = {"run": run.pk, "seq": 1, "type": "t", "data": {}, "created_at": timezone.now()}
    with pytest.raises(IntegrityError), transaction.atomic(), inserts_together():
        insert_rows(RunEvent, [row])
        insert_rows(RunEvent, [row])  # the same (run, seq) twice
    with CaptureQueriesContext(connection) as queries:
        insert_rows(RunEvent, [row])  # made at once, as outside any block
    assert len(queries) == 1 and RunEvent.objects.filter(run=run).count() == 1


def test_a_read_or_update_in_the_block_makes_the_waiting_inserts_in_its_statement(alice):
    from common.sql import fetch_values, inserts_together
    from runs.events import take_seqs
    from runs.models import RunEvent, SessionItem

    postgres = connection.vendor == "postgresql"
    session = insert_object(Session(owner=alice.user))
    run = insert_object(Run(owner=alice.user, session=session, agent="calculator", model="offline", input="x"))
    SessionItem.objects.create(session=session, data={"role": "user", "content": "before"})
    now = timezone.now()
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        with inserts_together():
            insert_rows(RunEvent, [{"run": run.pk, "seq": 1, "type": "a", "data": {}, "created_at": now}])
            insert_rows(SessionItem, [{"session": session.pk, "run": run.pk, "data": {"n": 1}, "created_at": now}])
            history = fetch_values(SessionItem, ("data",), "session_id = %s", [session.pk], order_by="id")
            insert_rows(RunEvent, [{"run": run.pk, "seq": 2, "type": "b", "data": {}, "created_at": now}])
            last = take_seqs(run.pk, 2, status=None, worker_id=None, fields={"output": "done"})
        # On Postgres the read is the statement that inserts (and does not see its rows).
        assert history == (
            [({"role": "user", "content": "before"},)]
            if postgres
            else [
                ({"role": "user", "content": "before"},),
                ({"n": 1},),
            ]
        )
    statements = [query["sql"].split()[0] for query in queries]
    statements = [word for word in statements if word in ("WITH", "INSERT", "SELECT", "UPDATE")]
    assert statements == (["WITH", "WITH"] if postgres else ["INSERT", "INSERT", "SELECT", "INSERT", "UPDATE"])
    assert last == 2 and Run.objects.get(pk=run.pk).output == "done"
    assert list(RunEvent.objects.filter(run=run).order_by("seq").values_list("type", flat=True)) == ["a", "b"]
    assert SessionItem.objects.filter(session=session).count() == 2


def test_numbered_rows_go_with_their_counter_in_one_statement_or_not_at_all(alice):
    from runs.models import RunEvent

    session = insert_object(Session(owner=alice.user))
    run = insert_object(Run(owner=alice.user, session=session, agent="calculator", model="offline", input="x"))
    counter = 'UPDATE "runs_run" SET event_seq = event_seq + %s WHERE id = %s RETURNING event_seq AS n'
    now = timezone.now()
    rows = [{"run": run.pk, "seq": offset, "type": "t", "data": {"n": offset}, "created_at": now} for offset in (-1, 0)]
    if connection.vendor != "postgresql":
        with pytest.raises(TypeError, match="Postgres"):
            insert_numbered(RunEvent, rows, numbered="seq", counter=counter, params=[2, run.pk])
        return
    with CaptureQueriesContext(connection) as queries:
        assert insert_numbered(RunEvent, rows, numbered="seq", counter=counter, params=[2, run.pk]) == 2
    assert len(queries) == 1
    assert list(RunEvent.objects.filter(run=run).values_list("seq", "data")) == [(1, {"n": -1}), (2, {"n": 0})]
    # No row counted: nothing inserted.
    assert insert_numbered(RunEvent, rows, numbered="seq", counter=counter, params=[2, "run_missing"]) is None
    # A value JSON does not carry: refused before anything is sent.
    with CaptureQueriesContext(connection) as queries, pytest.raises(ValueError):
        insert_numbered(
            RunEvent, [{**rows[0], "data": {"x": math.nan}}], numbered="seq", counter=counter, params=[1, run.pk]
        )
    assert len(queries) == 0
    with pytest.raises(ValueError, match="offset"):
        insert_numbered(
            RunEvent,
            [{k: v for k, v in rows[0].items() if k != "seq"}],
            numbered="seq",
            counter=counter,
            params=[1, run.pk],
        )
    assert RunEvent.objects.filter(run=run).count() == 2 and Run.objects.get(pk=run.pk).event_seq == 2


def test_a_value_is_read_beside_the_rows_by_one_statement_with_the_waiting_inserts(alice):
    from common.sql import fetch_values, fetch_values_beside, inserts_together
    from runs.models import RunEvent, SessionItem

    if connection.vendor != "postgresql":
        pytest.skip("a Postgres statement (the claim's, on Postgres only)")
    session = insert_object(Session(owner=alice.user))
    run = insert_object(Run(owner=alice.user, session=session, agent="calculator", model="offline", input="x"))
    items = [{"n": 3}, {"n": 1}, {"n": 2, "nested": [None, "é"]}]
    insert_rows(SessionItem, [{"session": session.pk, "data": item, "created_at": timezone.now()} for item in items])
    count = ("SELECT COUNT(*) FROM runs_run WHERE owner_id = %s", [alice.user.pk])
    where = ("session_id = %s", [session.pk])
    value, rows = fetch_values_beside(*count, SessionItem, ("id", "data"), *where, order_by="id")
    assert value == 1
    assert rows == fetch_values(SessionItem, ("id", "data"), *where, order_by="id")
    assert [data for _, data in rows] == items  # in id order, converted as values_list converts them
    # No rows: the value still comes back.
    assert fetch_values_beside(*count, SessionItem, ("id",), "session_id = %s", ["sess_none"]) == (1, [])
    # The inserts waiting in the block go with it, in the same statement; it does not see them.
    with CaptureQueriesContext(connection) as queries, transaction.atomic(), inserts_together():
        insert_rows(RunEvent, [{"run": run.pk, "seq": 1, "type": "x", "data": {}, "created_at": timezone.now()}])
        value, rows = fetch_values_beside(
            "SELECT COUNT(*) FROM runs_runevent WHERE run_id = %s", [run.pk], SessionItem, ("id",), *where
        )
    statements = [query["sql"] for query in queries if not query["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    assert len(statements) == 1 and (value, len(rows)) == (0, 3)
    assert RunEvent.objects.filter(run=run).count() == 1
