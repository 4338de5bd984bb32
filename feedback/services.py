"""Every write to feedback: give (or change) one, mark runs reviewed; each with its audit row."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Count
from django.utils import timezone

from audit.services import Actor, audit_record
from common.text import text_problem
from feedback.models import LABEL_MAX_CHARS, LABEL_RE, Feedback
from runs.models import Run


class FeedbackError(ValueError):
    """Feedback refused as given: `field` names what to fix."""

    status_code = 422

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class FeedbackRunNotFinished(FeedbackError):
    status_code = 409

    def __init__(self, run: Run) -> None:
        super().__init__("run", f"run {run.pk} is {run.status}: feedback is for finished runs")


def feedback_check(*, score: Any, label: str, comment: str) -> None:
    """Raise FeedbackError for the first field that is not acceptable."""
    if isinstance(score, bool) or score not in (-1, 0, 1):
        raise FeedbackError("score", f"must be -1 (bad), 0 (neutral) or 1 (good), not {score!r}")
    if label and (len(label) > LABEL_MAX_CHARS or not LABEL_RE.match(label)):
        raise FeedbackError(
            "label",
            f"must be a short slug (lowercase letters, digits, '.', '_', '-'; at most {LABEL_MAX_CHARS} characters)",
        )
    limit = settings.HARNESS_FEEDBACK_MAX_COMMENT_CHARS
    if len(comment) > limit:
        raise FeedbackError(
            "comment", f"{len(comment)} characters is over the limit of {limit} (HARNESS_FEEDBACK_MAX_COMMENT_CHARS)"
        )
    problem = text_problem(comment)
    if problem:
        raise FeedbackError("comment", problem)


def _audit(action: str, feedback: Feedback, actor: Actor, **data: Any) -> None:
    audit_record(
        action=action,
        actor=actor,
        target_type="feedback",
        target_id=str(feedback.pk),
        run_id=feedback.run_id,
        data={
            "source": feedback.source,
            "score": feedback.score,
            "label": feedback.label,
            "comment_chars": len(feedback.comment),
            **data,
        },
    )


def _apply(feedback: Feedback, *, score: int, label: str, comment: str, actor: Actor) -> bool:
    """Set the fields; a change clears the review. True when something changed."""
    before = {"score": feedback.score, "label": feedback.label, "comment": feedback.comment}
    after = {"score": score, "label": label, "comment": comment}
    if before == after:
        return False
    feedback.score, feedback.label, feedback.comment = score, label, comment
    feedback.reviewed_at, feedback.reviewed_by = None, None
    feedback.save(update_fields=["score", "label", "comment", "reviewed_at", "reviewed_by", "updated_at"])
    changed = sorted(name for name in after if before[name] != after[name])
    _audit("feedback.changed", feedback, actor, changed=changed, before_score=before["score"])
    return True


@transaction.atomic
def feedback_give(
    *,
    run: Run,
    author: User,
    source: str,
    score: int,
    label: str = "",
    comment: str = "",
    actor: Actor,
) -> tuple[Feedback, bool]:
    """`author`'s feedback on a finished run: created the first time (True), changed after (False).

    1. Check the fields and that the run has finished (FeedbackError, FeedbackRunNotFinished).
    2. Lock the author's feedback on the run, or create it; two first calls racing meet at the
       unique constraint and the loser changes the winner's row.
    3. Write the audit row (`feedback.given`, or `feedback.changed` when something changed).
    """
    feedback_check(score=score, label=label, comment=comment)
    if source not in Feedback.Source.values:
        raise FeedbackError("source", f"must be one of {', '.join(Feedback.Source.values)}")
    if not run.is_finished:
        raise FeedbackRunNotFinished(run)
    existing = Feedback.objects.select_for_update().filter(run=run, author=author).first()
    if existing is None:
        try:
            with transaction.atomic():
                feedback = Feedback.objects.create(
                    run=run, author=author, source=source, score=score, label=label, comment=comment
                )
        except IntegrityError:
            existing = Feedback.objects.select_for_update().get(run=run, author=author)
        else:
            _audit("feedback.given", feedback, actor)
            return feedback, True
    if existing.source != source:
        existing.source = source
        existing.save(update_fields=["source"])
    _apply(existing, score=score, label=label, comment=comment, actor=actor)
    return existing, False


@transaction.atomic
def feedback_change(*, feedback: Feedback, score: int, label: str, comment: str, actor: Actor) -> Feedback:
    """Change one feedback row (an operator editing an annotation in the admin)."""
    feedback_check(score=score, label=label, comment=comment)
    locked = Feedback.objects.select_for_update().get(pk=feedback.pk)
    _apply(locked, score=score, label=label, comment=comment, actor=actor)
    return locked


@transaction.atomic
def feedback_mark_reviewed(*, run_ids: Iterable[str], user: User | None, actor: Actor, reason: str) -> int:
    """Mark every unreviewed feedback of these runs reviewed (one audit row per run); returns the runs.

    Runs in the caller's transaction: golden_promote calls it, so promoting a run reviews it.
    """
    ids = sorted(set(run_ids))
    pending = dict(
        Feedback.objects.filter(run_id__in=ids, reviewed_at__isnull=True)
        .order_by()
        .values("run_id")
        .annotate(rows=Count("id"))
        .values_list("run_id", "rows")
    )
    if not pending:
        return 0
    Feedback.objects.filter(run_id__in=list(pending), reviewed_at__isnull=True).update(
        reviewed_at=timezone.now(), reviewed_by=user
    )
    for run_id, rows in sorted(pending.items()):
        audit_record(
            action="feedback.reviewed",
            actor=actor,
            target_type="run",
            target_id=run_id,
            run_id=run_id,
            data={"feedback": rows, "reason": reason},
        )
    return len(pending)
