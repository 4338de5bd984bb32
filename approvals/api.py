"""Approve or reject a run's tool calls: `POST /api/runs/{id}/approvals`, `GET /api/runs/{id}/approvals`."""

from __future__ import annotations

from typing import Literal

from django.conf import settings
from django.http import HttpRequest
from ninja import Field, Router, Schema
from ninja.errors import HttpError

from approvals import services
from approvals.schemas import ApprovalOut
from approvals.selectors import approvals_for_run, run_for_decider
from audit.services import Actor
from common.text import SafeStr, text_problem
from runs.models import Run
from runs.schemas import ErrorOut

router = Router(tags=["approvals"])


class DecisionIn(Schema):
    call_id: SafeStr = Field(
        description="The tool call to decide: a `call_id` from the run's `pending_approvals`.",
        min_length=1,
        max_length=200,
    )
    decision: Literal["approve", "reject"]
    message: SafeStr = Field(
        "",
        description="Why. A rejection's message is what the model reads instead of the tool's result "
        "(at most HARNESS_APPROVAL_MESSAGE_MAX_CHARS characters).",
        max_length=settings.HARNESS_APPROVAL_MESSAGE_MAX_CHARS,
    )


class DecisionOut(Schema):
    approval: ApprovalOut
    run_status: str = Field(
        description="queued once nothing is left to decide (a worker resumes the run); awaiting_approval while "
        "other calls of the run still wait."
    )


def _run_or_404(request: HttpRequest, run_id: str) -> Run:
    run = None if text_problem(run_id) else run_for_decider(user=request.auth, run_id=run_id)  # type: ignore[attr-defined]
    if run is None:
        raise HttpError(404, f"run {run_id!r} not found")
    return run


@router.post(
    "/runs/{run_id}/approvals",
    response={200: DecisionOut, 404: ErrorOut, 409: ErrorOut, 422: ErrorOut},
    summary="Approve or reject a tool call your run waits on",
)
def decide_approval(request: HttpRequest, run_id: SafeStr, payload: DecisionIn) -> dict[str, object]:
    """By the run's owner, or a key whose user has the `approvals.decide_approval` permission
    (an operator). Once no call of the run is left pending, the run is queued and a worker
    resumes it. A call already decided, expired, or of a run that no longer waits: `409`
    (of two decisions at once, exactly one succeeds)."""
    run = _run_or_404(request, run_id)
    try:
        approval, run_status = services.approval_decide(
            run_id=run.pk,
            call_id=payload.call_id,
            decision=payload.decision,
            message=payload.message,
            actor=Actor.for_api_key(request.api_key),  # type: ignore[attr-defined]
            user=request.auth,  # type: ignore[attr-defined]
        )
    except services.ApprovalError as exc:
        raise HttpError(exc.status_code, str(exc)) from None
    return {"approval": approval, "run_status": run_status}


@router.get(
    "/runs/{run_id}/approvals",
    response={200: list[ApprovalOut], 404: ErrorOut},
    summary="The tool calls a run asked approval for",
)
def list_approvals(request: HttpRequest, run_id: SafeStr) -> list[object]:
    """Every approval the run asked for, oldest first: pending, approved, rejected, expired or cancelled."""
    run = _run_or_404(request, run_id)
    return list(approvals_for_run(run.pk))
