"""Pause on a tool call that needs a person, resume from the stored RunState: the worker's side."""

from __future__ import annotations

import json

import pytest

from approvals.models import Approval, PausedRun
from approvals.services import approval_decide
from audit.models import AuditLog
from audit.services import Actor
from conftest import make_run
from execution.executor import run_execute
from runs.models import Run, SessionItem, Span, Trace

pytestmark = pytest.mark.django_db(transaction=True)

BIG = "Please refund $250 on order A-1001, the parcel never came."
SMALL = "Please refund $40 on order A-1002."


def kinds(run: Run) -> list[str]:
    return [kind for kind in run.events.order_by("seq").values_list("type", flat=True) if kind != "text.delta"]


def decide(run: Run, decision: str = "approve", message: str = "", who: str = "tests") -> tuple[Approval, str]:
    approval = Approval.objects.get(run=run, status="pending")
    return approval_decide(
        run_id=run.pk, call_id=approval.call_id, decision=decision, message=message, actor=Actor.system(who), user=None
    )


def test_a_small_refund_runs_without_asking(alice):
    run = make_run(alice, agent="refunds", input=SMALL)
    assert run_execute(run.pk) == "succeeded"
    run.refresh_from_db()
    assert run.output.startswith("Refunded $40.00 on order A-1002 (refund rf_")
    assert not Approval.objects.filter(run=run).exists()


def test_a_big_refund_pauses_frees_its_lease_and_resumes_once_approved(alice):
    run = make_run(alice, agent="refunds", input=BIG)
    assert run_execute(run.pk) == "awaiting_approval"
    run.refresh_from_db()
    assert run.status == "awaiting_approval" and run.worker_id == "" and run.lease_expires_at is None
    assert run.finished_at is None and run.output is None
    approval = Approval.objects.get(run=run)
    assert approval.status == "pending" and approval.tool == "refund"
    assert approval.arguments == {"order_id": "A-1001", "amount": 250, "reason": BIG}
    requested = run.events.get(type="approval.requested").data
    assert requested["call_id"] == approval.call_id and requested["arguments"]["amount"] == 250
    assert requested["status"] == "awaiting_approval"
    paused = PausedRun.objects.get(run=run)
    assert json.loads(paused.state)  # the SDK's RunState, as JSON
    first_usage = dict(run.usage)
    assert first_usage["requests"] == 1 and run.cost_usd is not None
    assert Trace.objects.filter(pk=run.trace_id).exists()
    first_spans = Span.objects.filter(run=run).count()
    assert first_spans > 0
    # Nothing written to the conversation yet: it is written once, with the outcome.
    assert not SessionItem.objects.filter(session_id=run.session_id).exists()

    _, status = decide(run, "approve", "fine: the parcel was lost")
    assert status == "queued"
    run.refresh_from_db()
    assert run.status == "queued" and run.attempts == 0  # a resume is not a new attempt

    assert run_execute(run.pk) == "succeeded"
    run.refresh_from_db()
    assert run.output.startswith("Refunded $250.00 on order A-1001 (refund rf_")
    assert run.attempts == 1
    assert kinds(run) == [
        "run.queued",
        "run.started",
        "agent.updated",
        "tool.called",
        "approval.requested",
        "approval.decided",
        "run.resumed",
        "agent.updated",
        "tool.output",
        "message.created",
        "run.succeeded",
    ]
    seqs = list(run.events.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    output = run.events.get(type="tool.output").data
    assert output["name"] == "refund" and output["call_id"] == approval.call_id
    resumed = run.events.get(type="run.resumed").data
    assert resumed["decisions"] == [{"call_id": approval.call_id, "decision": "approved"}]
    # Usage and cost add up over both segments; the spans of both are kept, in one trace.
    assert run.usage["requests"] == 2 and run.usage["total_tokens"] > first_usage["total_tokens"]
    assert Span.objects.filter(run=run).count() > first_spans
    assert set(Span.objects.filter(run=run).values_list("trace_id", flat=True)) == {run.trace_id}
    assert Span.objects.filter(run=run, kind="function", name="refund").exists()
    assert len(run.model_calls) == 2
    # The conversation: input, call, output, answer, once each.
    items = list(SessionItem.objects.filter(session_id=run.session_id).order_by("id").values_list("data", flat=True))
    assert [item.get("type") or item.get("role") for item in items] == [
        "user",
        "function_call",
        "function_call_output",
        "message",
    ]
    assert not PausedRun.objects.filter(run=run).exists()
    actions = list(AuditLog.objects.filter(run_id=run.pk).order_by("id").values_list("action", flat=True))
    assert actions == [
        "run.created",
        "run.started",
        "approval.requested",
        "approval.approved",
        "run.resumed",
        "run.succeeded",
    ]


def test_a_rejection_message_reaches_the_model(alice):
    run = make_run(alice, agent="refunds", input=BIG)
    assert run_execute(run.pk) == "awaiting_approval"
    decide(run, "reject", "Refunds over $100 need a manager; ask the customer for a photo first.")
    assert run_execute(run.pk) == "succeeded"
    run.refresh_from_db()
    assert run.output == (
        "The refund was not made: Refunds over $100 need a manager; ask the customer for a photo first."
    )
    output = run.events.get(type="tool.output").data
    assert output["output"].startswith("Refunds over $100 need a manager")
    # The tool never ran: no refund id anywhere.
    outputs = [str(span.data.get("output")) for span in Span.objects.filter(run=run, kind="function")]
    assert not any("rf_" in output for output in outputs), outputs


def test_a_run_in_a_session_continues_after_a_pause_without_repeating_the_conversation(alice):
    first = make_run(alice, agent="refunds", input=SMALL)
    run_execute(first.pk)
    second = make_run(alice, agent="refunds", input=BIG, session_id=first.session_id)
    assert run_execute(second.pk) == "awaiting_approval"
    decide(second)
    assert run_execute(second.pk) == "succeeded"
    items = list(SessionItem.objects.filter(session_id=first.session_id).order_by("id").values_list("data", flat=True))
    assert [item.get("type") or item.get("role") for item in items] == [
        "user",
        "function_call",
        "function_call_output",
        "message",
    ] * 2
    second.refresh_from_db()
    assert "turn" not in second.output and second.output.startswith("Refunded $250.00")
