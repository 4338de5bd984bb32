"""Every write about approvals: a run pausing on tool calls, a decision, the expiry, a cancel,
the resume's bookkeeping.

The life of a paused run:
1. The worker running it reaches tool calls that need a person (`needs_approval`): it stores
   the SDK's RunState here (`run_pause`: RUNNING -> AWAITING_APPROVAL, one Approval row per
   call, an `approval.requested` event and audit row each) and frees its slot and lease.
2. A person approves or rejects each call (`approval_decide`, from the API or the admin): a
   conditional update pending -> approved/rejected; the last decision moves the run
   AWAITING_APPROVAL -> QUEUED in the same transaction and enqueues it on commit. Of two
   decisions at once, one wins; the other is refused (ApprovalConflict, 409).
3. Any worker claims it like any queued run; the claim reads the stored state and the
   decisions (`resume_for_claim`), the executor applies them and carries on.
4. No decision within HARNESS_APPROVAL_TIMEOUT_SECONDS: `approvals_expire` fails the run,
   saying which call expired. A cancel while waiting closes the approvals (`approvals_close`).
The stored state never comes from a client and is deleted when the run ends.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from approvals.models import CALL_ID_MAX, Approval, PausedRun, new_approval_id
from audit.services import Actor, audit_record
from common.limits import clip_data
from common.text import safe_data, safe_text
from runs import events
from runs.models import Run, Trace
from runs.services import RunOutcome, run_enqueue, trace_insert

logger = logging.getLogger(__name__)

DEFAULT_REJECTION = "A person rejected this tool call."


class ApprovalError(Exception):
    status_code = 400


class ApprovalNotFound(ApprovalError):
    status_code = 404


class ApprovalConflict(ApprovalError):
    """Already decided, expired, or the run no longer waits: nothing was changed."""

    status_code = 409


class ApprovalInvalid(ApprovalError):
    status_code = 422


# --- pausing (the worker) ---------------------------------------------------------


@dataclass
class PauseRequest:
    """One tool call the run waits on."""

    call_id: str
    tool: str
    arguments: Any


@dataclass
class Pause:
    """What a worker hands over when its run pauses."""

    state: str  # RunState.to_string()
    requests: list[PauseRequest]
    # The conversation changes so far (execution.memory.RunMemory.changes), written at the run's end.
    memory: dict[str, Any] = field(default_factory=dict)
    carry: dict[str, Any] = field(default_factory=dict)
    snapshot_key: str = ""
    snapshot_bytes: int = 0


def parse_arguments(raw: Any) -> Any:
    """A call's arguments as stored: the parsed JSON object when they parse, else the text."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw if raw is not None else {}


def _expires_at(now: datetime) -> datetime:
    return now + timedelta(seconds=settings.HARNESS_APPROVAL_TIMEOUT_SECONDS)


@transaction.atomic
def run_pause(
    *,
    run_id: str,
    worker_id: str,
    outcome: RunOutcome,
    pause: Pause,
    pending: list[events.EventSpec] | None = None,
    owner_id: int | None = None,
) -> bool:
    """Record that a run waits for approval, in one transaction with its events and audit rows.

    1. The events still pending, then one `approval.requested` per call, take their numbers in
       the UPDATE that moves the run RUNNING (this worker) -> AWAITING_APPROVAL with its usage,
       cost and trace so far, and lets go of its lease.
    2. An Approval row per call (pending, expiring after HARNESS_APPROVAL_TIMEOUT_SECONDS) and
       the run's PausedRun (its RunState; a second pause replaces the first).
    3. The trace and spans so far; what the run cost and was not yet charged is charged now.
    False when the run was ended meanwhile (a cancel, the reaper): then nothing waits, and the
    workspace snapshot is dropped.
    """
    from billing.services import spend_charge
    from harness_site.redaction import redact_data
    from sandboxes.services import snapshot_delete

    now = timezone.now()
    expires = _expires_at(now)
    if outcome.trace is not None:
        trace_insert(trace=outcome.trace, spans=outcome.spans or [])
    usage = outcome.usage or {}
    model_calls = redact_data(safe_data(outcome.model_calls or []))
    approvals = [
        Approval(
            id=new_approval_id(),
            run_id=run_id,
            call_id=request.call_id[:CALL_ID_MAX],
            tool=request.tool[:200],
            arguments=clip_data(safe_data(request.arguments)),
            expires_at=expires,
        )
        for request in pause.requests
    ]
    requested: list[events.EventSpec] = [
        (
            events.APPROVAL_REQUESTED,
            {
                "status": Run.Status.AWAITING_APPROVAL,
                "approval_id": approval.id,
                "call_id": approval.call_id,
                "tool": approval.tool,
                "arguments": approval.arguments,
                "expires_at": expires.isoformat(),
            },
        )
        for approval in approvals
    ]
    batch = [*(pending or []), *requested]
    cost = {
        "cost_usd": outcome.cost_usd,
        "unpriced": outcome.unpriced,
        "total_tokens": int(usage.get("total_tokens") or 0),
    }
    fields = {
        **cost,
        "status": Run.Status.AWAITING_APPROVAL,
        "worker_id": "",
        "lease_expires_at": None,
        "usage": usage,
        "model_calls": model_calls,
        "trace_id": outcome.trace.id if outcome.trace else "",
    }
    last_seq = events.take_seqs(run_id, len(batch), status=Run.Status.RUNNING, worker_id=worker_id, fields=fields)
    charge = (outcome.cost_usd - outcome.charged) if outcome.cost_usd is not None else None
    if last_seq is None:
        Run.objects.filter(pk=run_id).update(usage=usage, model_calls=model_calls, **cost)
        if owner_id is not None and charge:
            spend_charge(owner_id=owner_id, cost=charge)
        if pause.snapshot_key:
            transaction.on_commit(partial(snapshot_delete, pause.snapshot_key))
        return False
    events.events_insert(run_id=run_id, events=batch, last_seq=last_seq)
    Approval.objects.bulk_create(approvals)
    previous = PausedRun.objects.filter(run_id=run_id).values_list("snapshot_key", flat=True).first()
    stored = {
        "state": pause.state,
        "memory": pause.memory,
        "carry": pause.carry,
        "snapshot_key": pause.snapshot_key,
        "snapshot_bytes": pause.snapshot_bytes,
    }
    if previous is None:
        PausedRun.objects.create(run_id=run_id, **stored)
    else:
        PausedRun.objects.filter(run_id=run_id).update(**stored, pauses=F("pauses") + 1, updated_at=now)
        if previous and previous != pause.snapshot_key:
            transaction.on_commit(partial(snapshot_delete, previous))
    actor = Actor.worker(worker_id)
    for approval in approvals:
        audit_record(
            action="approval.requested",
            actor=actor,
            target_type="approval",
            target_id=approval.id,
            run_id=run_id,
            data={"call_id": approval.call_id, "tool": approval.tool, "arguments": approval.arguments},
        )
    if owner_id is not None and charge:
        spend_charge(owner_id=owner_id, cost=charge)
    return True


# --- deciding (a person) ---------------------------------------------------------


def _decided_text(approval: Approval) -> str:
    who = f" by {approval.decided_by_label}" if approval.decided_by_label else ""
    when = f" at {approval.decided_at:%Y-%m-%d %H:%M:%S} UTC" if approval.decided_at else ""
    return f"{approval.status}{who}{when}"


@transaction.atomic(durable=True)
def approval_decide(
    *, run_id: str, call_id: str, decision: str, message: str, actor: Actor, user: User | None
) -> tuple[Approval, str]:
    """Approve or reject one pending tool call; returns the approval and the run's status after.

    The run's row is locked first, so decisions on one run are taken one at a time: the
    approval's conditional update (pending -> approved/rejected) can only succeed once, and
    the decision that leaves nothing pending moves the run AWAITING_APPROVAL -> QUEUED and
    enqueues it on commit (a resume is not a new attempt: `attempts` is kept). A rejection's
    message is what the model reads. Raises ApprovalNotFound, ApprovalConflict (already
    decided, expired, or the run no longer waits) or ApprovalInvalid; nothing changes then.
    """
    if decision not in ("approve", "reject"):
        raise ApprovalInvalid(f"decision: expected 'approve' or 'reject', got {decision!r}")
    message = safe_text(message or "")
    if len(message) > settings.HARNESS_APPROVAL_MESSAGE_MAX_CHARS:
        raise ApprovalInvalid(
            f"message: {len(message)} characters is over HARNESS_APPROVAL_MESSAGE_MAX_CHARS "
            f"({settings.HARNESS_APPROVAL_MESSAGE_MAX_CHARS})"
        )
    run = Run.objects.select_for_update().filter(pk=run_id).only("id", "status").first()
    if run is None:
        raise ApprovalNotFound(f"run {run_id!r} not found")
    approval = Approval.objects.filter(run_id=run_id, call_id=call_id).first()
    if approval is None:
        raise ApprovalNotFound(f"run {run_id} has no tool call {call_id!r} waiting for approval")
    if not approval.is_pending:
        raise ApprovalConflict(f"tool call {call_id} of run {run_id} was already decided: {_decided_text(approval)}")
    if run.status != Run.Status.AWAITING_APPROVAL:
        raise ApprovalConflict(f"run {run_id} is {run.status}, not awaiting approval")
    now = timezone.now()
    if approval.expires_at <= now:
        raise ApprovalConflict(
            f"tool call {call_id} of run {run_id} expired at {approval.expires_at:%Y-%m-%d %H:%M:%S} UTC "
            "(HARNESS_APPROVAL_TIMEOUT_SECONDS); it can no longer be decided"
        )
    status = Approval.Status.APPROVED if decision == "approve" else Approval.Status.REJECTED
    updated = Approval.objects.filter(pk=approval.pk, status=Approval.Status.PENDING).update(
        status=status,
        decided_at=now,
        decided_by=user,
        decided_by_label=actor.label[:150],
        message=message,
    )
    if updated != 1:  # cannot happen under the run's lock; said plainly if it does
        raise ApprovalConflict(f"tool call {call_id} of run {run_id} was decided by someone else meanwhile")
    approval.refresh_from_db()
    data: dict[str, Any] = {
        "approval_id": approval.pk,
        "call_id": approval.call_id,
        "tool": approval.tool,
        "decision": status,
        "decided_by": approval.decided_by_label,
        "message": message,
    }
    run_status = Run.Status.AWAITING_APPROVAL
    if not Approval.objects.filter(run_id=run_id, status=Approval.Status.PENDING).exists():
        moved = Run.objects.filter(pk=run_id, status=Run.Status.AWAITING_APPROVAL).update(
            status=Run.Status.QUEUED, attempts=F("attempts") - 1
        )
        if moved == 1:
            run_status = Run.Status.QUEUED
            data["status"] = Run.Status.QUEUED
            transaction.on_commit(partial(run_enqueue, run_id))
    events.events_append(run_id=run_id, events=[(events.APPROVAL_DECIDED, data)])
    audit_record(
        action=f"approval.{status}",
        actor=actor,
        target_type="approval",
        target_id=approval.pk,
        run_id=run_id,
        data={"call_id": approval.call_id, "tool": approval.tool, "message": message, "run_status": run_status},
    )
    return approval, run_status


# --- cancel, expiry, cleanup ----------------------------------------------------------


def _pending_end(
    approvals: list[Approval], *, status: str, reason: str, actor: Actor, run_id: str, now: datetime
) -> list[events.EventSpec]:
    """Close still-pending approvals with `status` and `reason` (an audit row each, in the
    caller's transaction); their `approval.decided` events, for the caller to write."""
    Approval.objects.filter(pk__in=[a.pk for a in approvals], status=Approval.Status.PENDING).update(
        status=status, decided_at=now, decided_by_label=actor.label[:150], message=reason
    )
    for approval in approvals:
        audit_record(
            action=f"approval.{status}",
            actor=actor,
            target_type="approval",
            target_id=approval.pk,
            run_id=run_id,
            data={"call_id": approval.call_id, "tool": approval.tool, "reason": reason},
        )
    return [
        (
            events.APPROVAL_DECIDED,
            {"approval_id": a.pk, "call_id": a.call_id, "tool": a.tool, "decision": status, "message": reason},
        )
        for a in approvals
    ]


def approvals_close(*, run_id: str, reason: str, actor: Actor) -> int:
    """A run stopped waiting (cancelled): its pending approvals are cancelled, each with an
    event and audit row, and its paused state and snapshot are dropped. Call inside the
    transaction that ends the run, before its final event. Returns how many were pending."""
    pending = list(Approval.objects.filter(run_id=run_id, status=Approval.Status.PENDING))
    if pending:
        decided = _pending_end(
            pending, status=Approval.Status.CANCELLED, reason=reason, actor=actor, run_id=run_id, now=timezone.now()
        )
        events.events_append(run_id=run_id, events=decided)
    _paused_delete(run_id)
    return len(pending)


def _paused_delete(run_id: str) -> None:
    from sandboxes.services import snapshot_delete

    key = PausedRun.objects.filter(run_id=run_id).values_list("snapshot_key", flat=True).first()
    if key is None:
        return
    PausedRun.objects.filter(run_id=run_id).delete()
    if key:
        transaction.on_commit(partial(snapshot_delete, key))


@dataclass
class ExpiryReport:
    failed: list[str] = field(default_factory=list)  # runs failed because an approval expired
    closed: list[str] = field(default_factory=list)  # leftovers of runs that had ended otherwise


def approvals_expire(*, now: datetime | None = None, limit: int = 200) -> ExpiryReport:
    """Fail the runs whose pending approvals passed their time (HARNESS_APPROVAL_TIMEOUT_SECONDS),
    each in its own transaction: the approvals expire with the reason, then the run fails
    saying which call expired (`approval.decided` events, then `run.failed`; audit rows each).
    Also drops the paused state of runs that ended some other way (a resumed run the reaper
    failed, say). Safe to run twice, and from several processes at once."""
    now = now or timezone.now()
    report = ExpiryReport()
    due = (
        Approval.objects.filter(status=Approval.Status.PENDING, expires_at__lte=now)
        .values_list("run_id", flat=True)
        .distinct()[:limit]
    )
    for run_id in list(due):
        if _expire_run(run_id, now):
            report.failed.append(run_id)
    ended = PausedRun.objects.filter(run__status__in=Run.FINISHED_STATUSES).values_list("run_id", flat=True)[:limit]
    for run_id in list(ended):
        with transaction.atomic():
            approvals_close(run_id=run_id, reason="the run had ended", actor=Actor.system("approval expiry"))
        report.closed.append(run_id)
    for run_id in report.failed:
        logger.warning("run failed: its approval expired", extra={"run_id": run_id})
    return report


@transaction.atomic
def _expire_run(run_id: str, now: datetime) -> bool:
    run = Run.objects.select_for_update().filter(pk=run_id).only("id", "status").first()
    actor = Actor.system("approval expiry")
    if run is None:
        return False
    if run.status != Run.Status.AWAITING_APPROVAL:
        # It stopped waiting some other way without closing them (cannot happen through the services).
        approvals_close(run_id=run_id, reason=f"the run is {run.status}", actor=actor)
        return False
    expired = list(Approval.objects.filter(run_id=run_id, status=Approval.Status.PENDING).order_by("id"))
    if not expired or all(approval.expires_at > now for approval in expired):
        return False
    seconds = settings.HARNESS_APPROVAL_TIMEOUT_SECONDS
    calls = ", ".join(f"{a.tool} (call {a.call_id})" for a in expired)
    reason = f"no decision on {calls} within {seconds} s (HARNESS_APPROVAL_TIMEOUT_SECONDS)"
    error = f"Run failed: approval expired: {reason}."
    batch = _pending_end(expired, status=Approval.Status.EXPIRED, reason=reason, actor=actor, run_id=run_id, now=now)
    batch.append((events.FAILED, {"status": Run.Status.FAILED, "error": error}))
    last_seq = events.take_seqs(
        run_id,
        len(batch),
        status=Run.Status.AWAITING_APPROVAL,
        worker_id=None,
        fields={"status": Run.Status.FAILED, "error": error, "finished_at": now, "lease_expires_at": None},
    )
    if last_seq is None:
        transaction.set_rollback(True)
        return False
    events.events_insert(run_id=run_id, events=batch, last_seq=last_seq)
    audit_record(
        action="run.failed", actor=actor, target_type="run", target_id=run_id, run_id=run_id, data={"error": error}
    )
    _paused_delete(run_id)
    return True


# --- resuming (the worker) ----------------------------------------------------------


@dataclass
class Resume:
    """What a worker needs to take a paused run up again, read with its claim."""

    state: str
    memory: dict[str, Any]
    carry: dict[str, Any]
    snapshot_key: str
    # call_id -> (approved|rejected, message) for the calls the state waits on.
    decisions: dict[str, tuple[str, str]]

    def summary(self) -> list[dict[str, str]]:
        return [{"call_id": call_id, "decision": status} for call_id, (status, _) in sorted(self.decisions.items())]

    def rejection_message(self, call_id: str) -> str:
        return self.decisions[call_id][1] or DEFAULT_REJECTION

    def started_at(self) -> datetime | None:
        value = self.carry.get("started_at")
        return datetime.fromisoformat(value) if value else None


def resume_for_claim(*, run_id: str) -> Resume | None:
    """The stored state of a run that paused and was decided, or None for any other run (one query)."""
    paused = PausedRun.objects.filter(run_id=run_id).values("state", "memory", "carry", "snapshot_key").first()
    if paused is None:
        return None
    calls = list((paused["carry"] or {}).get("tools", {}))
    decisions = {
        call_id: (status, message)
        for call_id, status, message in Approval.objects.filter(
            run_id=run_id, call_id__in=calls, status__in=Approval.DECIDED_STATUSES
        ).values_list("call_id", "status", "message")
    }
    return Resume(
        state=paused["state"],
        memory=paused["memory"] or {},
        carry=paused["carry"] or {},
        snapshot_key=paused["snapshot_key"],
        decisions=decisions,
    )


@transaction.atomic
def paused_state_drop(*, run_id: str, trace_id: str = "") -> None:
    """A resumed run ended: forget its paused state and snapshot; its trace ends now."""
    _paused_delete(run_id)
    if trace_id:
        Trace.objects.filter(pk=trace_id).update(ended_at=timezone.now())
