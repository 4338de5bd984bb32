"""The hot paths' INSERTs write what the ORM's save would."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from common.sql import insert_object
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
