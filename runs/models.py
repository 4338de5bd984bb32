from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models

from harness_site.ids import id_field_length, new_id


def new_session_id() -> str:
    return new_id("sess")


def new_run_id() -> str:
    return new_id("run")


class Session(models.Model):
    """A conversation: runs that share memory."""

    id = models.CharField(primary_key=True, max_length=id_field_length("sess"), default=new_session_id, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="agent_sessions")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return self.id


class SessionItem(models.Model):
    """One SDK conversation item (a JSON dict) in a session's memory, in order."""

    # Indexed by (session, id) below.
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="items", db_index=False)
    # The run that added it: a retried attempt removes what its failed attempt left.
    run = models.ForeignKey("Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False)
    data = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["session", "id"]), models.Index(fields=["run"], name="session_item_run")]

    def __str__(self) -> str:
        return f"{self.session_id}#{self.pk}"


class RunQuerySet(models.QuerySet["Run"]):
    def active(self) -> RunQuerySet:
        return self.filter(status__in=Run.ACTIVE_STATUSES)


class Run(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"
        # Paused on a tool call a person must approve; holds no worker slot while it waits.
        AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"

    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)
    FINISHED_STATUSES = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    id = models.CharField(primary_key=True, max_length=id_field_length("run"), default=new_run_id, editable=False)
    # Indexed by run_owner_recent (owner, -id).
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="agent_runs", db_index=False
    )
    session = models.ForeignKey(Session, on_delete=models.PROTECT, related_name="runs", db_index=False)
    agent = models.CharField(max_length=64)
    model = models.CharField(max_length=100)
    input = models.TextField()
    # Artifact ids (of the owner's earlier runs) brought into a sandbox agent's workspace.
    input_files = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=24, choices=Status.choices, default=Status.QUEUED)
    output = models.TextField(null=True, blank=True)  # noqa: DJ001 (null: no output yet; "" is an empty answer)
    # An agent with a structured output type (the SDK's output_type): its output as JSON.
    output_json = models.JSONField(null=True, blank=True)
    # Model "offline" only: the script the offline model follows (harness.OfflineScript), from the request.
    offline_script = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    usage = models.JSONField(default=dict, blank=True)
    total_tokens = models.PositiveBigIntegerField(default=0)
    # What the run's model calls cost in USD; null while unknown or when a model has no price.
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    unpriced = models.BooleanField(default=False, help_text="A model call used a model no price table knows.")
    # What the run may use (billing.services.RunLimits): cost, tokens, turns, sandbox seconds.
    limits = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Execution bookkeeping: which worker holds the run and until when.
    attempts = models.PositiveSmallIntegerField(default=0)
    worker_id = models.CharField(max_length=100, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    trace_id = models.CharField(max_length=64, blank=True)
    # The OpenTelemetry trace the run belongs to (its request's), when telemetry is on,
    # and the context (W3C traceparent) the worker continues it from.
    otel_trace_id = models.CharField(max_length=32, blank=True)
    trace_context = models.JSONField(default=dict, blank=True)
    # The last event sequence number handed out; see runs.events.
    event_seq = models.PositiveIntegerField(default=0)
    # The model calls as recorded (execution.cassette): what a golden eval row replays.
    model_calls = models.JSONField(default=list, blank=True)
    # Where the run came from: the API, or the eval runner.
    origin = models.CharField(max_length=16, default="api")
    # The run this one retries (an operator's "retry": a new run with the same input).
    retry_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries", db_index=False
    )

    objects = RunQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        # Plain b-tree indexes: a string field's db_index=True would add a second, `_like`
        # (varchar_pattern_ops) index on Postgres, which no query here uses and every write pays for.
        indexes = [
            models.Index(fields=["owner", "-id"], name="run_owner_recent"),
            models.Index(fields=["session"], name="run_session"),
            models.Index(fields=["agent"], name="run_agent"),
            models.Index(fields=["model"], name="run_model"),
            models.Index(fields=["status"], name="run_status"),
            models.Index(fields=["origin"], name="run_origin"),
            models.Index(fields=["retry_of"], name="run_retry_of"),
        ]
        permissions = [("retry_run", "Can retry runs")]

    def __str__(self) -> str:
        return self.id

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED_STATUSES

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class RunEvent(models.Model):
    """The durable, ordered log of what happened in a run (`seq` is 1, 2, 3 ... per run)."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events", db_index=False)  # (run, seq)
    seq = models.PositiveIntegerField()
    type = models.CharField(max_length=40)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="run_event_seq_unique")]

    def __str__(self) -> str:
        return f"{self.run_id}#{self.seq} {self.type}"

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "type": self.type, "data": self.data, "created_at": self.created_at}


class Trace(models.Model):
    """One SDK trace (a workflow), captured by the harness's tracing processor."""

    id = models.CharField(primary_key=True, max_length=64)
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.CASCADE, related_name="traces", db_index=False)
    workflow_name = models.CharField(max_length=200)
    group_id = models.CharField(max_length=64, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["run"], name="trace_run")]

    def __str__(self) -> str:
        return self.id


class Span(models.Model):
    """One SDK span: agent, generation/response, function (tool), handoff, guardrail, custom."""

    id = models.CharField(primary_key=True, max_length=64)
    trace = models.ForeignKey(Trace, on_delete=models.CASCADE, related_name="spans", db_index=False)
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.CASCADE, related_name="spans", db_index=False)
    parent_id = models.CharField(max_length=64, blank=True)
    kind = models.CharField(max_length=32)
    name = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    usage = models.JSONField(null=True, blank=True)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    data = models.JSONField(default=dict, blank=True)
    error = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["started_at"]
        indexes = [
            models.Index(fields=["trace"], name="span_trace"),
            models.Index(fields=["run"], name="span_run"),
            models.Index(fields=["kind"], name="span_kind"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"
