"""A worker's claim of a queued run, and the per-principal cap it enforces."""

from __future__ import annotations

import threading

import pytest
from django.db import close_old_connections, connection, transaction
from django.test.utils import CaptureQueriesContext

from conftest import make_run
from runs import services
from runs.models import Run, RunEvent, SessionItem

HISTORY = [{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "answer"}]


@pytest.mark.django_db
def test_a_claim_reads_the_conversation_and_counts_the_owner_s_runs_in_its_own_statements(alice):
    run = make_run(alice, history=HISTORY)  # a new session seeded with an earlier conversation
    with CaptureQueriesContext(connection) as queries:
        claim = services.run_claim(run_id=run.pk, worker_id="w/1", principal_cap=2)
    assert claim is not None and claim.run.status == Run.Status.RUNNING
    items = list(SessionItem.objects.filter(session_id=run.session_id).order_by("id").values_list("id", "data"))
    assert claim.history == items and [data for _, data in claim.history] == HISTORY
    statements = [query["sql"] for query in queries if not query["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    if connection.vendor == "postgresql":
        # The UPDATE takes the owner's lock; one statement writes the claim's event and audit row,
        # reads the conversation and counts the owner's running runs.
        assert len(statements) == 2, statements
        assert "pg_advisory_xact_lock" in statements[0] and "COUNT(*)" in statements[1]
    assert list(RunEvent.objects.filter(run=run).values_list("type", flat=True)) == ["run.queued", "run.started"]

    # An empty conversation: the count is still read, and the history is empty.
    fresh = make_run(alice)
    claim = services.run_claim(run_id=fresh.pk, worker_id="w/1", principal_cap=2)
    assert claim is not None and claim.history == []


@pytest.mark.django_db
def test_a_claim_past_the_owner_s_cap_changes_nothing(alice, outsider):
    first, second = make_run(alice), make_run(alice)
    assert services.run_claim(run_id=first.pk, worker_id="w/1", principal_cap=1) is not None
    with pytest.raises(services.PrincipalBusy, match="has 1 runs in flight"):
        services.run_claim(run_id=second.pk, worker_id="w/1", principal_cap=1)
    second.refresh_from_db()
    assert (second.status, second.attempts, second.event_seq) == (Run.Status.QUEUED, 0, 1)
    assert list(RunEvent.objects.filter(run=second).values_list("type", flat=True)) == ["run.queued"]
    # Another owner's run is not held back by alice's.
    assert services.run_claim(run_id=make_run(outsider).pk, worker_id="w/1", principal_cap=1) is not None


@pytest.mark.django_db(transaction=True)
def test_two_workers_claiming_one_owner_s_runs_at_once_never_overshoot_the_cap(alice):
    if connection.vendor != "postgresql":
        pytest.skip("the owner's claims are serialised by an advisory lock on Postgres")
    first, second = make_run(alice), make_run(alice)
    holding, release = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def claim_and_hold() -> None:
        try:
            with transaction.atomic():
                outcome["first"] = services.run_claim(run_id=first.pk, worker_id="w/a", principal_cap=1)
                holding.set()
                release.wait(10)  # the lock stays taken until this commit
        finally:
            close_old_connections()

    def claim_meanwhile() -> None:
        try:
            outcome["second"] = services.run_claim(run_id=second.pk, worker_id="w/b", principal_cap=1)
        except services.PrincipalBusy as busy:
            outcome["second"] = busy
        finally:
            close_old_connections()

    a = threading.Thread(target=claim_and_hold)
    a.start()
    assert holding.wait(10)
    b = threading.Thread(target=claim_meanwhile)
    b.start()
    b.join(0.5)
    assert b.is_alive(), "the second claim went ahead while the first held the owner's lock"
    release.set()
    a.join(10)
    b.join(10)
    assert outcome["first"] is not None
    assert isinstance(outcome["second"], services.PrincipalBusy)  # it counted the first, committed meanwhile
    assert Run.objects.get(pk=second.pk).status == Run.Status.QUEUED
    assert Run.objects.filter(owner=alice.user, status=Run.Status.RUNNING).count() == 1
