from __future__ import annotations

from typing import Any

from django.db import models


class AuditLogQuerySet(models.QuerySet["AuditLog"]):
    def update(self, **kwargs: Any) -> int:
        raise TypeError("the audit log is append-only")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise TypeError("the audit log is append-only")


class AuditLog(models.Model):
    """One fact about who did what to which thing. Append-only."""

    class ActorType(models.TextChoices):
        USER = "user", "User"
        API_KEY = "api_key", "API key"
        WORKER = "worker", "Worker"
        SYSTEM = "system", "System"

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    action = models.CharField(max_length=64)
    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor_id = models.CharField(max_length=64, blank=True)
    actor_label = models.CharField(max_length=150, blank=True)
    target_type = models.CharField(max_length=32)
    target_id = models.CharField(max_length=64)
    run_id = models.CharField(max_length=64, blank=True)
    data = models.JSONField(default=dict, blank=True)

    objects = AuditLogQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        verbose_name = "audit log entry"
        verbose_name_plural = "audit log"
        # Plain b-tree indexes: db_index=True on a string field adds an unused `_like` index on Postgres.
        indexes = [
            models.Index(fields=["action"], name="audit_action"),
            models.Index(fields=["target_id"], name="audit_target"),
            models.Index(fields=["run_id"], name="audit_run"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.target_type}:{self.target_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise TypeError("the audit log is append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise TypeError("the audit log is append-only")
