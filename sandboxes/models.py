from __future__ import annotations

from django.db import models

from harness_site.ids import id_field_length, new_id


def new_sandbox_id() -> str:
    return new_id("sbx")


class SandboxQuerySet(models.QuerySet["Sandbox"]):
    def uncleaned(self) -> SandboxQuerySet:
        return self.exclude(cleanup_state=Sandbox.Cleanup.DONE)


class Sandbox(models.Model):
    """One isolated environment a run's commands executed in, from creation to cleanup."""

    class Status(models.TextChoices):
        CREATING = "creating", "Creating"
        LIVE = "live", "Live"
        STOPPED = "stopped", "Stopped"
        FAILED = "failed", "Failed to start"

    class Cleanup(models.TextChoices):
        PENDING = "pending", "Pending"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    LIVE_STATUSES = (Status.CREATING, Status.LIVE)

    id = models.CharField(primary_key=True, max_length=id_field_length("sbx"), default=new_sandbox_id, editable=False)
    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, related_name="sandboxes")
    provider = models.CharField(max_length=16, db_index=True)
    # The provider's own handle: the workspace directory (local) or the sandbox id (E2B).
    provider_session_id = models.CharField(max_length=500, blank=True, db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CREATING, db_index=True)
    # What the run was given: inputs (ids and digests, never storage keys), writable paths,
    # tools, limits, time budget, network policy and environment variable names.
    manifest = models.JSONField(default=dict)
    worker_id = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # Past this moment the sandbox is an orphan whatever its run says.
    deadline = models.DateTimeField(db_index=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    # How it ended: reason (run finished, cancelled, timed out, reaped, ...), commands run,
    # last exit code, outputs saved.
    exit_info = models.JSONField(default=dict, blank=True)
    cleanup_state = models.CharField(max_length=16, choices=Cleanup.choices, default=Cleanup.PENDING, db_index=True)
    cleanup_error = models.TextField(blank=True)
    cleaned_at = models.DateTimeField(null=True, blank=True)

    objects = SandboxQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        permissions = [("cleanup_sandbox", "Can clean up (destroy) sandboxes")]

    def __str__(self) -> str:
        return self.id

    @property
    def is_live(self) -> bool:
        return self.status in self.LIVE_STATUSES
