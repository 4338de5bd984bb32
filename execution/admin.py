from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from common.admin import ReadOnlyAdmin
from execution.models import PublishedAgent, WorkerBeat


@admin.register(WorkerBeat)
class WorkerBeatAdmin(admin.ModelAdmin[WorkerBeat]):
    """The run-engine processes that are up, with their runs in flight (read-only)."""

    list_display = (
        "worker_id",
        "hostname",
        "pid",
        "inflight",
        "concurrency",
        "registry_version",
        "started_at",
        "seen_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(PublishedAgent)
class PublishedAgentAdmin(ReadOnlyAdmin[PublishedAgent]):
    """The agents the workers run, as they published them (read-only: the code declares them)."""

    list_display = ("name", "description", "module", "tools", "models", "version", "publisher", "published_at")
    search_fields = ("name", "description")
    readonly_fields = ("name", "description", "spec", "version", "publisher", "published_at")

    @admin.display(description="module")
    def module(self, obj: PublishedAgent) -> str:
        return str(obj.spec.get("module", ""))

    @admin.display(description="tools")
    def tools(self, obj: PublishedAgent) -> str:
        return ", ".join(obj.spec.get("tools") or [])

    @admin.display(description="models")
    def models(self, obj: PublishedAgent) -> str:
        models = obj.spec.get("models")
        return "any allowed" if models is None else ", ".join(models)
