"""Feedback on a run by its owner: `POST /api/runs/{id}/feedback`, `GET /api/runs/{id}/feedback`."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.http import HttpRequest
from ninja import Field, Router, Schema, Status
from ninja.errors import HttpError

from audit.services import Actor
from common.text import SafeStr
from feedback import services
from feedback.models import LABEL_MAX_CHARS, LABEL_PATTERN, Feedback
from runs.api import get_run_or_404
from runs.schemas import ErrorOut

router = Router(tags=["feedback"])


class FeedbackIn(Schema):
    score: int = Field(description="-1 (bad), 0 (neutral) or 1 (good).", ge=-1, le=1, strict=True)
    label: str = Field(
        "",
        description="A short slug to group feedback by, e.g. wrong-answer; `needs-review` puts the run in "
        "the operators' review queue whatever its score.",
        max_length=LABEL_MAX_CHARS,
        pattern=f"({LABEL_PATTERN})|^$",
    )
    comment: SafeStr = Field(
        "",
        description="Free text, at most HARNESS_FEEDBACK_MAX_COMMENT_CHARS characters.",
        json_schema_extra={"maxLength": settings.HARNESS_FEEDBACK_MAX_COMMENT_CHARS},
    )


class FeedbackOut(Schema):
    id: int
    run_id: str
    score: int
    label: str
    comment: str
    source: str = Field(description="api: given through the API; operator: an annotation made in the admin.")
    created_at: datetime
    updated_at: datetime


class FeedbackList(Schema):
    items: list[FeedbackOut]


@router.post(
    "/runs/{run_id}/feedback",
    response={200: FeedbackOut, 201: FeedbackOut, 404: ErrorOut, 409: ErrorOut, 422: ErrorOut},
    summary="Give feedback on one of your runs",
)
def give_feedback(request: HttpRequest, run_id: SafeStr, payload: FeedbackIn) -> Status:
    """One feedback per run and key owner: the first POST creates it (`201`), a later one replaces
    its score, label and comment (`200`). Only finished runs take feedback (`409` otherwise)."""
    run = get_run_or_404(request, run_id)
    try:
        feedback, created = services.feedback_give(
            run=run,
            author=request.auth,  # type: ignore[attr-defined]
            source=Feedback.Source.API,
            score=payload.score,
            label=payload.label,
            comment=payload.comment,
            actor=Actor.for_api_key(request.api_key),  # type: ignore[attr-defined]
        )
    except services.FeedbackError as exc:
        raise HttpError(exc.status_code, str(exc)) from None
    return Status(201 if created else 200, feedback)


@router.get(
    "/runs/{run_id}/feedback",
    response={200: FeedbackList, 404: ErrorOut},
    summary="Your feedback on one of your runs",
)
def list_feedback(request: HttpRequest, run_id: SafeStr) -> dict[str, object]:
    """The feedback you gave on the run (an empty list when none); operators' annotations are not shown."""
    run = get_run_or_404(request, run_id)
    return {"items": list(Feedback.objects.filter(run=run, author=request.auth))}  # type: ignore[attr-defined]
