"""Deciding, racing, expiring and cancelling approvals (the services), on SQLite and Postgres."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from approvals.models import Approval, PausedRun
from approvals.services import (
    ApprovalConflict,
    ApprovalInvalid,
    ApprovalNotFound,
    Pause,
    PauseRequest,
    approval_decide,
    approvals_expire,
    run_pause,
)
from audit.models import AuditLog
from audit.services import Actor
from billing.services import spend_of
from conftest import make_run
from execution.executor import run_execute
from runs import services
from runs.models import Run

pytestmark = pytest.mark.django_db(transaction=True)

BIG = "Please refund $250 on order A-1001."


def paused_run(owner) -> Run:
    run = make_run(owner, agent="refunds", input=BIG)
    assert run_execute(run.pk) == "awaiting_approval"
    run.refresh_from_db()
    return run


def decide(run: Run, decision: str = "approve", *, call_id: str | None = None, message: str = "", who: str = "t"):
    call_id = call_id or Approval.objects.get(run=run, status="pending").call_id
    return approval_decide(
        run_id=run.pk, call_id=call_id, decision=decision, message=message, actor=Actor.system(who), user=None
    )


def types(run: Run) -> list[str]:
    return [t for t in run.events.order_by("seq").values_list("type", flat=True) if t != "text.delta"]


def test_a_decided_call_cannot_be_decided_again(alice):
    run = paused_run(alice)
    call_id = Approval.objects.get(run=run).call_id
    decide(run, "approve", call_id=call_id, who="first")
    with pytest.raises(ApprovalConflict, match=r"already decided: approved by first at"):
        decide(run, "reject", call_id=call_id, who="second")
    approval = Approval.objects.get(run=run)
    assert approval.status == "approved" and approval.decided_by_label == "first"
    assert types(run).count("approval.decided") == 1


def test_bad_decisions_change_nothing(alice):
    run = paused_run(alice)
    with pytest.raises(ApprovalNotFound):
        decide(run, call_id="call_nope")
    with pytest.raises(ApprovalInvalid, match="decision"):
        decide(run, "maybe")
    with override_settings(HARNESS_APPROVAL_MESSAGE_MAX_CHARS=5):
        with pytest.raises(ApprovalInvalid, match="HARNESS_APPROVAL_MESSAGE_MAX_CHARS"):
            decide(run, "reject", message="far too long")
    assert Approval.objects.get(run=run).status == "pending"
    assert Run.objects.get(pk=run.pk).status == "awaiting_approval"


def test_two_decisions_at_once_one_wins_and_the_run_is_queued_once(alice):
    run = paused_run(alice)
    call_id = Approval.objects.get(run=run).call_id
    barrier = threading.Barrier(2)
    results: list[str] = []

    def attempt(decision: str) -> None:
        try:
            barrier.wait()
            approval_decide(
                run_id=run.pk, call_id=call_id, decision=decision, message="", actor=Actor.system(decision), user=None
            )
            results.append("won")
        except ApprovalConflict:
            results.append("conflict")
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt, args=(d,)) for d in ("approve", "reject")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["conflict", "won"]
    run.refresh_from_db()
    assert run.status == "queued"
    assert types(run).count("approval.decided") == 1
    assert AuditLog.objects.filter(run_id=run.pk, action__in=["approval.approved", "approval.rejected"]).count() == 1
    assert run_execute(run.pk) == "succeeded"
    assert run_execute(run.pk) is None  # a second task for it finds nothing to claim
    assert types(run).count("run.resumed") == 1


def test_a_run_waiting_on_two_calls_is_queued_after_the_second_decision(alice):
    run = make_run(alice, agent="refunds", input=BIG)
    claim = services.run_claim(run_id=run.pk, worker_id="w/1")
    assert claim is not None
    pause = Pause(
        state="{}",
        requests=[PauseRequest("call_a", "refund", {"amount": 250}), PauseRequest("call_b", "refund", '{"amount":')],
        carry={"tools": {"call_a": "refund", "call_b": "refund"}},
    )
    assert run_pause(
        run_id=run.pk, worker_id="w/1", outcome=services.RunOutcome(status="awaiting_approval"), pause=pause
    )
    assert Approval.objects.get(run=run, call_id="call_b").arguments == '{"amount":'  # kept as the text it was
    _, status = decide(run, call_id="call_a")
    assert status == "awaiting_approval"
    assert Run.objects.get(pk=run.pk).status == "awaiting_approval"
    _, status = decide(run, "reject", call_id="call_b", message="no")
    assert status == "queued"
    resume = services.run_claim(run_id=run.pk, worker_id="w/2").resume
    assert resume.decisions == {"call_a": ("approved", ""), "call_b": ("rejected", "no")}
    assert resume.rejection_message("call_b") == "no"


def test_a_pause_refused_when_the_run_was_cancelled_meanwhile(alice):
    run = make_run(alice, agent="refunds", input=BIG)
    services.run_claim(run_id=run.pk, worker_id="w/1")
    services.run_cancel(run=run, actor=Actor.system("t"))
    pause = Pause(state="{}", requests=[PauseRequest("call_a", "refund", {})])
    assert not run_pause(run_id=run.pk, worker_id="w/1", outcome=services.RunOutcome(status="x"), pause=pause)
    assert not Approval.objects.filter(run=run).exists() and not PausedRun.objects.filter(run=run).exists()
    assert types(run)[-1] == "run.cancelled"


def test_an_undecided_call_expires_and_fails_its_run(alice):
    run = paused_run(alice)
    approval = Approval.objects.get(run=run)
    assert approvals_expire().failed == []  # not yet
    later = approval.expires_at + timedelta(seconds=1)
    with pytest.raises(ApprovalConflict, match="expired"):
        with override_settings():
            # A decision after the deadline is refused even before the expiry job ran.
            Approval.objects.filter(pk=approval.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
            decide(run)
    report = approvals_expire(now=later)
    assert report.failed == [run.pk]
    run.refresh_from_db()
    approval.refresh_from_db()
    assert run.status == "failed" and run.finished_at is not None
    assert run.error == (
        f"Run failed: approval expired: no decision on refund (call {approval.call_id}) within 86400 s "
        "(HARNESS_APPROVAL_TIMEOUT_SECONDS)."
    )
    assert approval.status == "expired" and "HARNESS_APPROVAL_TIMEOUT_SECONDS" in approval.message
    assert types(run)[-2:] == ["approval.decided", "run.failed"]
    assert run.events.get(type="approval.decided").data["decision"] == "expired"
    seqs = list(run.events.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    assert not PausedRun.objects.filter(run=run).exists()
    actions = list(AuditLog.objects.filter(run_id=run.pk).order_by("id").values_list("action", flat=True))
    assert actions[-2:] == ["approval.expired", "run.failed"]
    assert approvals_expire(now=later).failed == []  # twice is harmless
    with pytest.raises(ApprovalConflict):
        decide(run, call_id=approval.call_id)


@override_settings(HARNESS_APPROVAL_TIMEOUT_SECONDS=3600)
def test_the_timeout_is_configurable(alice):
    run = paused_run(alice)
    approval = Approval.objects.get(run=run)
    waited = approval.expires_at - approval.requested_at
    assert timedelta(seconds=3599) < waited <= timedelta(seconds=3601)


def test_cancel_while_waiting_cancels_the_approvals_and_forgets_the_state(alice):
    run = paused_run(alice)
    services.run_cancel(run=run, actor=Actor.system("t"), reason="changed my mind")
    run.refresh_from_db()
    assert run.status == "cancelled" and run.error == "changed my mind"
    approval = Approval.objects.get(run=run)
    assert approval.status == "cancelled" and approval.message == "changed my mind"
    assert types(run)[-2:] == ["approval.decided", "run.cancelled"]
    assert not PausedRun.objects.filter(run=run).exists()
    with pytest.raises(ApprovalConflict):
        decide(run, call_id=approval.call_id)
    with pytest.raises(services.RunNotCancellable):
        services.run_cancel(run=run, actor=Actor.system("t"))


def test_a_waiting_run_holds_its_session_and_the_reaper_leaves_it_alone(alice):
    run = paused_run(alice)
    with pytest.raises(services.SessionBusy):
        make_run(alice, agent="refunds", input="refund $1 on order B", session_id=run.session_id)
    report = services.run_reap(now=timezone.now() + timedelta(days=30))
    assert run.pk not in report.requeued + report.failed + report.reenqueued
    assert Run.objects.get(pk=run.pk).status == "awaiting_approval"


def test_what_both_segments_cost_is_charged_once(alice, monkeypatch):
    monkeypatch.setattr("execution.budget.call_cost", lambda model, usage: Decimal("0.01"))
    run = paused_run(alice)
    assert run.cost_usd == Decimal("0.01")
    assert spend_of(alice.user.pk).today == Decimal("0.01")  # charged at the pause
    decide(run)
    assert run_execute(run.pk) == "succeeded"
    run.refresh_from_db()
    assert run.cost_usd == Decimal("0.02")
    assert spend_of(alice.user.pk).today == Decimal("0.02")


def test_the_limits_count_what_the_run_used_before_it_paused(alice):
    # One model call before the pause uses ~155 tokens: within the limit then, over it after.
    run = make_run(alice, agent="refunds", input=BIG, limits={"max_tokens": 100})
    assert run_execute(run.pk) == "awaiting_approval"
    run.refresh_from_db()
    assert run.usage["total_tokens"] > 100
    decide(run)
    assert run_execute(run.pk) == "failed"
    run.refresh_from_db()
    assert run.error.startswith("budget_exceeded: max_tokens of 100 reached: the run has used")
    assert run.usage["total_tokens"] > 100  # what it used before the pause is still counted
