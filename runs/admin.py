from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from artifacts.admin import ArtifactInline
from audit.services import Actor
from evals.admin import PROMOTE_PERMISSION, promote_to_golden
from runs import services
from runs.models import Run, RunEvent, Session, Span, Trace
from sandboxes.admin import SandboxInline


class ReadOnlyInline(admin.TabularInline):  # type: ignore[type-arg]
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RunEventInline(ReadOnlyInline):
    model = RunEvent
    fields = ("seq", "type", "data", "created_at")
    readonly_fields = fields
    ordering = ("seq",)


class SpanInline(ReadOnlyInline):
    model = Span
    fields = ("kind", "name", "started_at", "duration_ms", "usage", "cost_usd", "error", "parent_id", "id")
    readonly_fields = fields
    ordering = ("started_at",)


class RunInline(ReadOnlyInline):
    model = Run
    fields = ("run_link", "agent", "model", "status", "created_at")
    readonly_fields = fields
    ordering = ("id",)

    @admin.display(description="run")
    def run_link(self, obj: Run) -> str:
        return format_html('<a href="{}">{}</a>', reverse("admin:runs_run_change", args=[quote(obj.pk)]), obj.pk)


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class BudgetFilter(admin.SimpleListFilter):
    title = "budget"
    parameter_name = "budget"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("exceeded", "Budget exceeded")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Run]) -> QuerySet[Run]:
        if self.value() == "exceeded":
            return queryset.filter(error__startswith="budget_exceeded")
        return queryset


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin):
    list_display = ("id", "agent", "model", "status", "owner", "created_at", "duration", "total_tokens", "cost")
    list_filter = (
        "status",
        BudgetFilter,
        "agent",
        "model",
        "origin",
        "unpriced",
        ("created_at", admin.DateFieldListFilter),
    )
    list_select_related = ("owner",)
    search_fields = ("=id", "=session__id", "input")
    date_hierarchy = "created_at"
    inlines = [RunEventInline, SpanInline, ArtifactInline, SandboxInline]
    actions = ["cancel_runs", promote_to_golden]
    fieldsets = (
        (None, {"fields": ("id", "status", "live", "owner", "session", "agent", "model", "origin")}),
        ("Conversation", {"fields": ("input", "output", "error")}),
        (
            "Execution",
            {
                "fields": (
                    "usage",
                    "cost_usd",
                    "unpriced",
                    "limits",
                    "created_at",
                    "started_at",
                    "finished_at",
                    "attempts",
                    "worker_id",
                    "lease_expires_at",
                    "trace_id",
                    "otel_trace",
                )
            },
        ),
    )
    readonly_fields = [str(f) for fs in fieldsets for f in fs[1]["fields"]]

    @admin.display(description="live stream")
    def live(self, obj: Run) -> str:
        return format_html('<a href="{}">watch this run\'s events live</a>', reverse("run-live", args=[obj.pk]))

    @admin.display(description="duration")
    def duration(self, obj: Run) -> str:
        seconds = obj.duration_seconds
        return "" if seconds is None else f"{seconds:.2f} s"

    @admin.display(description="cost (USD)", ordering="cost_usd")
    def cost(self, obj: Run) -> str:
        if obj.unpriced:
            return "unpriced"
        return "" if obj.cost_usd is None else f"{obj.cost_usd:.6f}"

    @admin.display(description="OpenTelemetry trace")
    def otel_trace(self, obj: Run) -> str:
        if not obj.otel_trace_id:
            return "— (telemetry was off: set OTEL_EXPORTER_OTLP_ENDPOINT)"
        if not settings.PHOENIX_URL:
            return format_html("<code>{}</code> (set PHOENIX_URL to link it)", obj.otel_trace_id)
        return format_html(
            '<code>{}</code> · <a href="{}/redirects/traces/{}" target="_blank" rel="noopener">open in Phoenix</a>',
            obj.otel_trace_id,
            settings.PHOENIX_URL,
            obj.otel_trace_id,
        )

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Needed for the cancel action; every field stays read-only.
        return request.user.has_perm("runs.change_run")

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None) -> Any:
        extra_context = {**(extra_context or {}), "show_save": False, "show_save_and_continue": False}
        if self.has_promote_permission(request):
            extra_context["promote_url"] = reverse("admin:evals_goldencase_promote", args=[object_id])
        return super().change_view(request, object_id, form_url, extra_context)

    def has_promote_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(PROMOTE_PERMISSION)

    @admin.action(description="Cancel selected runs", permissions=["change"])
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        actor = Actor.for_user(request.user)
        cancelled, skipped = 0, 0
        for run in queryset:
            try:
                services.run_cancel(run=run, actor=actor, reason=f"cancelled by operator {request.user.get_username()}")
                cancelled += 1
            except services.RunNotCancellable:
                skipped += 1
        self.message_user(request, f"Cancelled {cancelled} run(s).", messages.SUCCESS)
        if skipped:
            self.message_user(request, f"{skipped} run(s) had already finished.", messages.WARNING)


@admin.register(Session)
class SessionAdmin(ReadOnlyAdmin):
    list_display = ("id", "owner", "created_at", "run_count")
    list_select_related = ("owner",)
    search_fields = ("=id", "owner__username")
    readonly_fields = ("id", "owner", "created_at")
    inlines = [RunInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Session]:
        return super().get_queryset(request).annotate(run_count=Count("runs"))

    @admin.display(description="runs", ordering="run_count")
    def run_count(self, obj: Any) -> int:
        return obj.run_count


@admin.register(Trace)
class TraceAdmin(ReadOnlyAdmin):
    list_display = ("id", "workflow_name", "run", "started_at", "ended_at")
    list_select_related = ("run",)
    search_fields = ("=id", "=run__id", "=group_id")
    readonly_fields = ("id", "run", "workflow_name", "group_id", "metadata", "started_at", "ended_at")
    inlines = [SpanInline]
