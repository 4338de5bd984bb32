"""Human approval of tool calls: what a paused run waits for, and the state it resumes from."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from harness_site.ids import id_field_length, new_id


def new_approval_id() -> str:
    return new_id("apr")


# The longest tool call id kept; longer ones are cut, the same way at the pause and on resume.
CALL_ID_MAX = 200


class ApprovalQuerySet(models.QuerySet["Approval"]):
    def pending(self) -> ApprovalQuerySet:
        return self.filter(status=Approval.Status.PENDING)


class Approval(models.Model):
    """One tool call a run is (or was) waiting on a person for."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        # No decision within HARNESS_APPROVAL_TIMEOUT_SECONDS: the run failed.
        EXPIRED = "expired", "Expired"
        # The run was cancelled while it waited.
        CANCELLED = "cancelled", "Cancelled"

    DECIDED_STATUSES = (Status.APPROVED, Status.REJECTED)

    id = models.CharField(primary_key=True, max_length=id_field_length("apr"), default=new_approval_id, editable=False)
    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, related_name="approvals")
    call_id = models.CharField(max_length=CALL_ID_MAX)
    tool = models.CharField(max_length=200)
    # The call's arguments as the model sent them (parsed JSON when they parse), clipped.
    arguments = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    requested_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    # The person who decided (null for the expiry, a cancel by the system, or a deleted user) ...
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # ... and how the audit log names whoever decided (an API key, a user, the expiry).
    decided_by_label = models.CharField(max_length=150, blank=True)
    # The decision's message: a rejection's is what the model reads; the expiry's says why.
    message = models.TextField(blank=True)

    objects = ApprovalQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["run", "call_id"], name="approval_run_call_unique")]
        permissions = [("decide_approval", "Can approve or reject tool calls")]

    def __str__(self) -> str:
        return f"{self.tool} ({self.call_id})"

    @property
    def is_pending(self) -> bool:
        return self.status == self.Status.PENDING


class PausedRun(models.Model):
    """The SDK RunState of a run that waits for approval, kept server-side.

    Written only by the worker that paused the run (never from a client: restoring a state
    a client sent would let it approve its own calls); read by the worker that resumes it;
    deleted when the run ends.
    """

    run = models.OneToOneField("runs.Run", primary_key=True, on_delete=models.CASCADE, related_name="paused")
    # RunState.to_string(): the conversation so far, the pending calls, usage.
    state = models.TextField()
    # The conversation items the run added before it paused: written to its session with its
    # outcome, once, so a pause and a resume never store them twice.
    memory = models.JSONField(default=dict, blank=True)
    # What the next segment carries on: cost and tokens so far, the trace id, the model calls
    # recorded, the sandbox seconds used, the tool of each pending call.
    carry = models.JSONField(default=dict, blank=True)
    # The sandbox workspace, kept in the artifact store while the run waits (sandbox agents).
    snapshot_key = models.CharField(max_length=500, blank=True)
    snapshot_bytes = models.PositiveBigIntegerField(default=0)
    pauses = models.PositiveSmallIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.run_id} (paused {self.pauses}x)"
