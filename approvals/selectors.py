"""Permission-aware reads of approvals."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import AnonymousUser, User

from approvals.models import Approval
from runs.models import Run

DECIDE_PERMISSION = "approvals.decide_approval"


def run_for_decider(*, user: User | AnonymousUser, run_id: str) -> Run | None:
    """The run whose tool calls `user` may approve or reject: their own run, or any run for a
    user with approvals.decide_approval. None otherwise (an API answers 404: no hint it exists)."""
    run = Run.objects.filter(pk=run_id).first()
    if run is None or not user.is_authenticated:
        return None
    if run.owner_id == user.pk or user.has_perm(DECIDE_PERMISSION):
        return run
    return None


def pending_for_run(run_id: str) -> list[Approval]:
    """The tool calls a run waits on, oldest first (one query)."""
    return list(Approval.objects.filter(run_id=run_id, status=Approval.Status.PENDING).order_by("id"))


def approvals_for_run(run_id: str) -> list[Approval]:
    """Every approval a run asked for, oldest first, with who decided (one query)."""
    return list(Approval.objects.filter(run_id=run_id).select_related("decided_by").order_by("id"))


def attach_pending(runs: Iterable[Run]) -> None:
    """Give each waiting run its pending approvals (RunOut.pending_approvals): one query for a
    page of runs, none when no run waits."""
    waiting = {run.pk: run for run in runs if run.status == Run.Status.AWAITING_APPROVAL}
    for run in waiting.values():
        run.pending_approvals_attached = []  # type: ignore[attr-defined]
    if not waiting:
        return
    for approval in Approval.objects.filter(run_id__in=list(waiting), status=Approval.Status.PENDING).order_by("id"):
        waiting[approval.run_id].pending_approvals_attached.append(approval)  # type: ignore[attr-defined]


def with_pending(run: Run | None) -> Run | None:
    if run is not None:
        attach_pending([run])
    return run


def run_panel(*, run: Run, user: Any) -> dict[str, Any]:
    """What the run page's approvals panel shows (templates/admin/approvals/run_panel.html)."""
    approvals = approvals_for_run(run.pk)
    return {
        "run": run,
        "approvals": approvals,
        "pending": [approval for approval in approvals if approval.is_pending],
        "can_decide": bool(user.has_perm(DECIDE_PERMISSION)),
    }
