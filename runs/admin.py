from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Count, DurationField, ExpressionWrapper, F, OuterRef, QuerySet, Subquery
from django.db.models.functions import Substr
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect, JsonResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils.html import format_html

from audit.services import Actor
from common.admin import ObjectPageMixin, ReadOnlyAdmin
from evals.admin import PROMOTE_PERMISSION, promote_to_golden
from feedback.admin import FeedbackFilter, FeedbackLabelFilter, feedback_panel
from runs import console, services
from runs.models import Run, Session, Span, Trace

CANCEL_PERMISSION = "runs.change_run"
RETRY_PERMISSION = "runs.retry_run"
PREVIEW_CHARS = 80


class ReadOnlyInline(admin.TabularInline):  # type: ignore[type-arg]
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class SpanInline(ReadOnlyInline):
    model = Span
    fields = ("kind", "name", "started_at", "duration_ms", "usage", "cost_usd", "error", "parent_id", "id")
    readonly_fields = fields
    ordering = ("started_at",)


def preview(text: str | None, length: int = PREVIEW_CHARS) -> str:
    """The start of a text on one line, "…" when there is more."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= length else flat[: length - 1] + "…"


def run_url(run_id: str) -> str:
    return reverse("admin:runs_run_change", args=[quote(run_id)])


class BudgetFilter(admin.SimpleListFilter):
    title = "budget"
    parameter_name = "budget"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("exceeded", "Budget exceeded")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Run]) -> QuerySet[Run]:
        if self.value() == "exceeded":
            return queryset.filter(error__startswith="budget_exceeded")
        return queryset


class CalledToolFilter(admin.SimpleListFilter):
    title = "called tool"
    parameter_name = "tool"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name) for name in console.tool_names_seen()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Run]) -> QuerySet[Run]:
        value = self.value()
        return queryset.filter(console.called_tool_runs(value)) if value else queryset


class ToolErrorFilter(admin.SimpleListFilter):
    title = "tool error"
    parameter_name = "tool_error"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Had a tool error"), ("no", "No tool error")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Run]) -> QuerySet[Run]:
        if self.value() == "yes":
            return queryset.filter(console.tool_error_runs())
        if self.value() == "no":
            return queryset.exclude(console.tool_error_runs())
        return queryset


# Columns the run list never shows: left out of its query (an input or a model_calls
# recording can be tens of kilobytes per row).
LIST_DEFERRED = ("input", "output", "error", "model_calls", "usage", "limits", "trace_context", "input_files")


@admin.register(Run)
class RunAdmin(ObjectPageMixin, ReadOnlyAdmin):
    list_display = (
        "id",
        "agent",
        "model",
        "status",
        "owner",
        "input_preview",
        "created_at",
        "duration",
        "total_tokens",
        "cost",
    )
    list_filter = (
        "status",
        BudgetFilter,
        CalledToolFilter,
        ToolErrorFilter,
        FeedbackFilter,
        FeedbackLabelFilter,
        "agent",
        "model",
        "origin",
        "unpriced",
        ("created_at", admin.DateFieldListFilter),
    )
    list_select_related = ("owner",)
    search_fields = ("=id", "=session__id", "input")
    date_hierarchy = "created_at"
    actions = ["cancel_runs", promote_to_golden]
    # The run page (templates/admin/runs/run/change_form.html, runs/console.py) shows the
    # run; these fields stay read-only so the admin's form can change nothing.
    fields = ("id", "status", "owner", "session", "agent", "model", "origin", "input", "output", "error")
    readonly_fields = fields

    class Media:
        css = {"all": ("runs/console.css",)}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Run]:
        queryset = (
            super()
            .get_queryset(request)
            .select_related("owner")
            .annotate(
                duration_value=ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
            )
        )
        match = request.resolver_match
        if match is not None and match.url_name == "runs_run_changelist" and request.method == "GET":
            return queryset.annotate(input_head=Substr("input", 1, PREVIEW_CHARS + 1)).defer(*LIST_DEFERRED)
        return queryset.select_related("session", "retry_of")

    @admin.display(description="input")
    def input_preview(self, obj: Run) -> str:
        head = getattr(obj, "input_head", None)
        return preview(head if head is not None else obj.input)

    @admin.display(description="live stream")
    def live(self, obj: Run) -> str:
        return format_html('<a href="{}">watch this run\'s events live</a>', reverse("run-live", args=[obj.pk]))

    @admin.display(description="duration", ordering="duration_value")
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
        return request.user.has_perm(CANCEL_PERMISSION)

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(RETRY_PERMISSION)

    def has_promote_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(PROMOTE_PERMISSION)

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/cancel/", view(self.cancel_view), name="runs_run_cancel"),
            path("<path:object_id>/retry/", view(self.retry_view), name="runs_run_retry"),
            path("<path:object_id>/spans/<str:span_id>/", view(self.span_view), name="runs_run_span"),
            *super().get_urls(),
        ]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None) -> Any:
        if request.method == "POST":
            # The page has no form: a run changes through its actions (services), never a save.
            return HttpResponseNotAllowed(["GET"])
        return super().change_view(request, object_id, form_url, extra_context)

    def object_context(self, request: HttpRequest, run: Run) -> dict[str, Any]:
        usage = run.usage or {}
        try:
            owner_url = reverse("admin:auth_user_change", args=[run.owner_id])
        except NoReverseMatch:
            owner_url = ""
        return {
            "title": "Run",
            "console": console.run_page(run),
            "show_save": False,
            "show_save_and_continue": False,
            "duration": self.duration(run),
            "cost": self.cost(run),
            "input_tokens": usage.get("input_tokens"),
            "output_tokens": usage.get("output_tokens"),
            "otel_trace": self.otel_trace(run),
            "live_url": reverse("run-live", args=[run.pk]),
            "session_url": reverse("admin:runs_session_change", args=[quote(run.session_id)]),
            "owner_url": owner_url,
            "retry_of_url": run_url(run.retry_of_id) if run.retry_of_id else "",
            "cancel_url": reverse("admin:runs_run_cancel", args=[quote(run.pk)])
            if not run.is_finished and self.has_change_permission(request)
            else "",
            "retry_url": reverse("admin:runs_run_retry", args=[quote(run.pk)])
            if run.is_finished and self.has_retry_permission(request)
            else "",
            "promote_url": reverse("admin:evals_goldencase_promote", args=[quote(run.pk)])
            if self.has_promote_permission(request)
            else "",
            # A span's JSON is this plus its id and "/".
            "span_base": reverse("admin:runs_run_span", args=[quote(run.pk), "x"])[: -len("x/")],
            **feedback_panel(request, run),
        }

    def _run_for_action(self, request: HttpRequest, object_id: str, permission: str) -> Run:
        if request.method != "POST":
            raise PermissionDenied("use the button on the run's page (POST)")
        if not request.user.has_perm(permission):
            raise PermissionDenied
        run = Run.objects.filter(pk=unquote(object_id)).first()
        if run is None:
            raise Http404("no such run")
        return run

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        run = self._run_for_action(request, object_id, CANCEL_PERMISSION)
        try:
            services.run_cancel(
                run=run,
                actor=Actor.for_user(request.user),
                reason=f"cancelled by operator {request.user.get_username()}",
            )
        except services.RunServiceError as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            self.message_user(request, f"Cancelled run {run.pk}.", messages.SUCCESS)
        return HttpResponseRedirect(run_url(run.pk))

    def retry_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        from billing.services import BudgetError

        run = self._run_for_action(request, object_id, RETRY_PERMISSION)
        try:
            retry = services.run_retry(run=run, actor=Actor.for_user(request.user))
        except (services.RunServiceError, BudgetError) as exc:
            self.message_user(request, f"Not retried: {exc}", messages.ERROR)
            return HttpResponseRedirect(run_url(run.pk))
        self.message_user(request, f"Retrying run {run.pk} as {retry.pk}.", messages.SUCCESS)
        return HttpResponseRedirect(run_url(retry.pk))

    def span_view(self, request: HttpRequest, object_id: str, span_id: str) -> HttpResponse:
        """One span whole, as JSON (the page shows its fields cut at HARNESS_CONSOLE_PREVIEW_CHARS)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        span = Span.objects.filter(pk=span_id, run_id=unquote(object_id)).first()
        if span is None:
            raise Http404("no such span in this run")
        fields = ("id", "trace_id", "parent_id", "kind", "name", "started_at", "ended_at", "duration_ms", "usage")
        body = {name: getattr(span, name) for name in fields}
        body.update(cost_usd=None if span.cost_usd is None else str(span.cost_usd), data=span.data, error=span.error)
        return JsonResponse(body, json_dumps_params={"indent": 2})

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
class SessionAdmin(ObjectPageMixin, ReadOnlyAdmin):
    list_display = ("id", "owner", "first_input", "created_at", "run_count")
    list_select_related = ("owner",)
    search_fields = ("=id", "owner__username")
    fields = ("id", "owner", "created_at")
    readonly_fields = fields

    class Media:
        css = {"all": ("runs/console.css",)}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Session]:
        first = Run.objects.filter(session=OuterRef("pk")).order_by("created_at", "id")
        return (
            super()
            .get_queryset(request)
            .select_related("owner")
            .annotate(
                run_count=Count("runs"),
                first_input_head=Subquery(first.values(head=Substr("input", 1, PREVIEW_CHARS + 1))[:1]),
            )
        )

    @admin.display(description="runs", ordering="run_count")
    def run_count(self, obj: Any) -> int:
        return obj.run_count

    @admin.display(description="first input")
    def first_input(self, obj: Any) -> str:
        return preview(obj.first_input_head)

    def object_context(self, request: HttpRequest, obj: Session) -> dict[str, Any]:
        return {"conversation": console.session_page(obj)}


@admin.register(Trace)
class TraceAdmin(ReadOnlyAdmin):
    list_display = ("id", "workflow_name", "run", "started_at", "ended_at")
    list_select_related = ("run",)
    search_fields = ("=id", "=run__id", "=group_id")
    readonly_fields = ("id", "run", "workflow_name", "group_id", "metadata", "started_at", "ended_at")
    inlines = [SpanInline]
