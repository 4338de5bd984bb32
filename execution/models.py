from __future__ import annotations

from django.db import models


class WorkerBeat(models.Model):
    """A run-engine process that is up: written when it starts and every
    HARNESS_WORKER_BEAT_SECONDS, deleted when it stops. `/health/ready` and operators
    read it; a row whose beat is old belongs to a process that died."""

    worker_id = models.CharField(primary_key=True, max_length=100)
    hostname = models.CharField(max_length=100)
    pid = models.PositiveIntegerField()
    concurrency = models.PositiveIntegerField()
    inflight = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField()
    seen_at = models.DateTimeField(db_index=True)
    # A digest of the worker's SECRET_KEY (never the key): the web process compares it with
    # its own, since links and tokens a worker signs are checked by the web.
    key_fingerprint = models.CharField(max_length=16, blank=True, default="")
    # A digest of the agents this process runs (execution.catalog.registry_version): workers
    # that differ run different code (a deploy in progress).
    registry_version = models.CharField(max_length=16, blank=True, default="")

    class Meta:
        ordering = ["-seen_at"]
        verbose_name = "worker"

    def __str__(self) -> str:
        return self.worker_id


class PublishedAgent(models.Model):
    """An agent the run engine's workers run, as they published it (execution.catalog): the
    web process validates runs and answers GET /api/agents from these rows, without
    importing the agents' code. The newest publisher's registry replaces the previous one."""

    name = models.CharField(primary_key=True, max_length=64)
    description = models.TextField()
    # Tools, models, sandbox, approvals, maxima, timeout, module and the SDK features used.
    spec = models.JSONField(default=dict)
    # A digest of the declaration and of its module's source: it changes with the code.
    version = models.CharField(max_length=16)
    publisher = models.CharField(max_length=100)
    published_at = models.DateTimeField()

    class Meta:
        ordering = ["name"]
        verbose_name = "published agent"

    def __str__(self) -> str:
        return self.name
