from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from audit.services import Actor
from common.admin import ReadOnlyAdmin
from sandboxes.models import Sandbox
from sandboxes.services import sandboxes_cleanup


def run_link(obj: Sandbox) -> str:
    return format_html(
        '<a href="{}">{}</a> ({})',
        reverse("admin:runs_run_change", args=[quote(obj.run_id)]),
        obj.run_id,
        obj.run.status,
    )


def ending(obj: Sandbox) -> str:
    info = obj.exit_info or {}
    return str(info.get("reason") or info.get("cleanup") or "")


class SandboxInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Sandbox
    extra = 0
    can_delete = False
    fields = ("sandbox_link", "provider", "status", "cleanup_state", "created_at", "stopped_at", "ending")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="sandbox")
    def sandbox_link(self, obj: Sandbox) -> str:
        return format_html(
            '<a href="{}">{}</a>', reverse("admin:sandboxes_sandbox_change", args=[quote(obj.pk)]), obj.pk
        )

    @admin.display(description="ended")
    def ending(self, obj: Sandbox) -> str:
        return ending(obj)


@admin.register(Sandbox)
class SandboxAdmin(ReadOnlyAdmin[Sandbox]):
    # Rows are the record: cleanup destroys the sandbox, not its history.
    list_display = (
        "id",
        "run_with_status",
        "provider",
        "status",
        "cleanup_state",
        "created_at",
        "stopped_at",
        "deadline",
        "ended",
    )
    list_filter = ("status", "cleanup_state", "provider", ("created_at", admin.DateFieldListFilter))
    list_select_related = ("run",)
    search_fields = ("=id", "=run__id", "=provider_session_id")
    date_hierarchy = "created_at"
    actions = ["clean_up_sandboxes"]
    fieldsets = (
        (None, {"fields": ("id", "run_with_status", "provider", "provider_session_id", "status", "worker_id")}),
        ("Lifetime", {"fields": ("created_at", "deadline", "stopped_at", "exit_info")}),
        ("Cleanup", {"fields": ("cleanup_state", "cleaned_at", "cleanup_error")}),
        ("Manifest", {"fields": ("manifest",)}),
    )
    readonly_fields = [str(f) for fs in fieldsets for f in fs[1]["fields"]]

    @admin.display(description="run", ordering="run")
    def run_with_status(self, obj: Sandbox) -> str:
        return run_link(obj)

    @admin.display(description="ended")
    def ended(self, obj: Sandbox) -> str:
        return ending(obj)

    def has_cleanup_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("sandboxes.cleanup_sandbox")

    @admin.action(description="Clean up selected sandboxes (destroy them now)", permissions=["cleanup"])
    def clean_up_sandboxes(self, request: HttpRequest, queryset: QuerySet[Sandbox]) -> None:
        selected = list(queryset.select_related("run"))
        pending = [s for s in selected if s.cleanup_state != Sandbox.Cleanup.DONE]
        reason = f"cleaned up by operator {request.user.get_username()}"
        done = sandboxes_cleanup(sandboxes=pending, actor=Actor.for_user(request.user), reason=reason)
        failed = [s.pk for s in done if s.cleanup_state != Sandbox.Cleanup.DONE]
        cleaned = len(done) - len(failed)
        self.message_user(request, f"Cleaned up {cleaned} sandbox(es).", messages.SUCCESS)
        if len(selected) > len(pending):
            self.message_user(
                request, f"{len(selected) - len(pending)} sandbox(es) were already cleaned up.", messages.INFO
            )
        if failed:
            self.message_user(
                request,
                f"Cleanup failed for {', '.join(failed)}; see each sandbox's cleanup error. The reaper retries.",
                messages.ERROR,
            )
