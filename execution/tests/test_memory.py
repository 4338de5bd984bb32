from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync

from conftest import make_run
from execution.memory import DjangoSession

pytestmark = pytest.mark.django_db(transaction=True)


def test_django_session_implements_the_sdk_session_contract(alice):
    run = make_run(alice)
    session = DjangoSession(run.session_id, run_id=run.pk)
    call = async_to_sync
    items = [{"role": "user", "content": f"m{i}"} for i in range(5)]
    call(session.add_items)(items)
    assert call(session.get_items)() == items
    assert call(session.get_items)(2) == items[3:]  # the latest N, oldest first
    assert call(session.get_items)(0) == []
    assert call(session.pop_item)() == items[4]
    assert call(DjangoSession(run.session_id).get_items)() == items[:4]  # persisted, not in memory
    call(session.clear_session)()
    assert call(session.get_items)() == []
    assert call(session.pop_item)() is None
