from __future__ import annotations

from django.db import models

from harness_site.ids import id_field_length, new_id


def new_artifact_id() -> str:
    return new_id("art")


class Artifact(models.Model):
    """A file a run produced. The bytes live in the object store; this row is its metadata."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending upload"
        READY = "ready", "Ready"
        EXPIRED = "expired", "Expired (object deleted)"

    id = models.CharField(primary_key=True, max_length=id_field_length("art"), default=new_artifact_id, editable=False)
    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, related_name="artifacts")
    name = models.CharField(max_length=200)
    object_key = models.CharField(max_length=400, unique=True)
    content_type = models.CharField(max_length=150)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    # Pending: the upload deadline. Ready: when retention deletes the object (null: kept).
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    expired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.id} {self.name}"

    @property
    def upload_key(self) -> str:
        """Where a client's PUT lands. Confirming copies it to `object_key`, which no URL can
        write, so an upload URL still alive after confirmation cannot change the artifact."""
        return f"uploads/{self.id}/{self.name}"
