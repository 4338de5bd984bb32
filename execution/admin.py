from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from execution.models import WorkerBeat


@admin.register(WorkerBeat)
class WorkerBeatAdmin(admin.ModelAdmin[WorkerBeat]):
    """The run-engine processes that are up, with their runs in flight (read-only)."""

    list_display = ("worker_id", "hostname", "pid", "inflight", "concurrency", "started_at", "seen_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
