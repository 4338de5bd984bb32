"""Worker heartbeats (no SDK import: the web process reads them for readiness)."""

from __future__ import annotations

import os
import socket
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from django.utils.crypto import salted_hmac

from execution.models import WorkerBeat


def worker_beat(*, worker_id: str, concurrency: int, inflight: int, registry_version: str = "") -> None:
    now = timezone.now()
    updated = WorkerBeat.objects.filter(pk=worker_id).update(seen_at=now, inflight=inflight)
    if not updated:
        WorkerBeat.objects.create(
            worker_id=worker_id,
            hostname=socket.gethostname()[:100],
            pid=os.getpid(),
            concurrency=concurrency,
            inflight=inflight,
            started_at=now,
            seen_at=now,
            key_fingerprint=key_fingerprint(),
            registry_version=registry_version,
        )


def key_fingerprint() -> str:
    """Which SECRET_KEY this process signs with, as a digest that reveals nothing of it."""
    return salted_hmac("harness.secret-key-fingerprint", "v1").hexdigest()[:16]


def worker_gone(*, worker_id: str) -> None:
    WorkerBeat.objects.filter(pk=worker_id).delete()


def live_workers() -> list[WorkerBeat]:
    """Workers whose last beat is recent (three intervals), newest first."""
    since = timezone.now() - timedelta(seconds=3 * settings.HARNESS_WORKER_BEAT_SECONDS)
    return list(WorkerBeat.objects.filter(seen_at__gte=since))


def other_keys(*, than: str | None = None) -> list[str]:
    """Live workers that sign with another SECRET_KEY than this process."""
    mine = key_fingerprint()
    return sorted(
        worker.worker_id
        for worker in live_workers()
        if worker.worker_id != than and worker.key_fingerprint not in ("", mine)
    )
