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
