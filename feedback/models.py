"""What people said about a run: its owner through the API, operators in the admin.

One feedback per author per run: a second POST (or a second annotation) by the same person
changes their feedback instead of adding another row, so a run's feedback reads as one vote
per person. A feedback that is negative, or labelled `needs-review`, waits in the admin's
"needs review" queue until someone marks it reviewed or promotes the run to a golden case.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.db import models
from django.db.models import Q

# A label is a short slug: lowercase letters, digits, ".", "_" and "-", starting with a letter or digit.
LABEL_MAX_CHARS = 50
LABEL_PATTERN = "^[a-z0-9][a-z0-9._-]*$"
LABEL_RE = re.compile(LABEL_PATTERN)
# The label that puts a run in the review queue whatever its score.
NEEDS_REVIEW_LABEL = "needs-review"


class FeedbackQuerySet(models.QuerySet["Feedback"]):
    def needs_review(self) -> FeedbackQuerySet:
        """Not reviewed yet, and negative or labelled `needs-review`."""
        return self.filter(reviewed_at__isnull=True).filter(Q(score__lt=0) | Q(label=NEEDS_REVIEW_LABEL))


class Feedback(models.Model):
    class Source(models.TextChoices):
        API = "api", "API"
        OPERATOR = "operator", "Operator"

    class Score(models.IntegerChoices):
        NEGATIVE = -1, "negative (-1)"
        NEUTRAL = 0, "neutral (0)"
        POSITIVE = 1, "positive (+1)"

    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, related_name="feedback")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    source = models.CharField(max_length=16, choices=Source.choices)
    score = models.SmallIntegerField(choices=Score.choices)
    label = models.CharField(max_length=LABEL_MAX_CHARS, blank=True, db_index=True)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Set when someone marks the run reviewed or promotes it to a golden case; a change to
    # the feedback clears it (the run is back in the queue with what is new).
    reviewed_at = models.DateTimeField(null=True, blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = FeedbackQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "feedback"
        constraints = [
            models.UniqueConstraint(fields=["run", "author"], name="feedback_one_per_author"),
            models.CheckConstraint(condition=Q(score__gte=-1, score__lte=1), name="feedback_score_range"),
        ]

    def __str__(self) -> str:
        return f"{self.run_id} {self.score:+d}{' ' + self.label if self.label else ''}"

    @property
    def needs_review(self) -> bool:
        return self.reviewed_at is None and (self.score < 0 or self.label == NEEDS_REVIEW_LABEL)
