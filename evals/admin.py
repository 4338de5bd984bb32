from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from audit.services import Actor
from common.admin import ObjectPageMixin, ReadOnlyAdmin
from evals import compare
from evals.forms import BulkPromoteForm, GoldenCaseForm, PromoteForm
from evals.models import Dataset, EvalResult, EvalRun, GoldenCase, GoldenCaseVersion
from evals.services import golden_promote, golden_save, run_facts
from runs.models import Run

PROMOTE_PERMISSION = "evals.promote_run"
LIVE_ONLY_MESSAGE = (
    "The run made no model calls, so the case is live-only: `manage.py eval` in replay mode skips it "
    "with a warning; `--mode live` runs it."
)
RUN_EVAL_PERMISSION = "evals.run_eval"


def run_link(run_id: str | None) -> str:
    if not run_id:
        return "-"
    return format_html('<a href="{}">{}</a>', reverse("admin:runs_run_change", args=[quote(run_id)]), run_id)


def reasons_html(reasons: list[str]) -> str:
    if not reasons:
        return "—"
    return format_html("<ul class='eval-reasons'>{}</ul>", format_html_join("", "<li>{}</li>", ((r,) for r in reasons)))


class ReadOnlyInline(admin.TabularInline):  # type: ignore[type-arg]
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class GoldenCaseVersionInline(ReadOnlyInline):
    model = GoldenCaseVersion
    fields = ("version", "created_by", "created_at", "data")
    readonly_fields = fields
    ordering = ("-version",)


@admin.register(Dataset)
class DatasetAdmin(ObjectPageMixin, admin.ModelAdmin[Dataset]):
    list_display = ("name", "description", "active_cases", "created_at")
    search_fields = ("name",)
    actions = ["run_eval"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Dataset]:
        return super().get_queryset(request).annotate(active_count=Count("cases"))

    @admin.display(description="cases")
    def active_cases(self, obj: Any) -> int:
        return obj.active_count

    def has_run_eval_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(RUN_EVAL_PERMISSION)

    def object_context(self, request: HttpRequest, obj: Dataset) -> dict[str, Any]:
        trend = compare.pass_rate_trend(dataset=obj.name)
        return {"trend": trend, "trend_chart": compare.trend_chart(trend, title=f"{obj.name}: pass rate per eval run")}

    @admin.action(description="Run the eval (replay) on selected datasets", permissions=["run_eval"])
    def run_eval(self, request: HttpRequest, queryset: QuerySet[Dataset]) -> None:
        from django_q.tasks import async_task

        names = sorted(queryset.values_list("name", flat=True))
        async_task(
            "evals.tasks.run_eval", names, "replay", f"admin: {request.user.get_username()}", task_name="evals.admin"
        )
        self.message_user(
            request,
            f"Eval queued for {', '.join(names)}: its results appear under Eval runs when the worker finishes.",
            messages.SUCCESS,
        )


@admin.register(GoldenCase)
class GoldenCaseAdmin(ObjectPageMixin, admin.ModelAdmin[GoldenCase]):
    form = GoldenCaseForm
    list_display = (
        "id",
        "name",
        "dataset",
        "agent",
        "version",
        "active",
        "replayable",
        "tag_list",
        "source",
        "promoted_by",
    )
    list_filter = ("dataset", "agent", "active")
    search_fields = ("=id", "name", "input", "=source_run__id")
    list_select_related = ("dataset", "promoted_by")
    readonly_fields = ("id", "version", "source", "promoted_by", "promoted_at", "updated_at")
    inlines = [GoldenCaseVersionInline]

    @admin.display(description="replay", boolean=True)
    def replayable(self, obj: GoldenCase) -> bool:
        """False: a live-only case (its run made no model calls); replay evals skip it."""
        return bool(obj.cassette)

    @admin.display(description="tags")
    def tag_list(self, obj: GoldenCase) -> str:
        return ", ".join(obj.tags or [])

    @admin.display(description="source run")
    def source(self, obj: GoldenCase) -> str:
        return run_link(obj.source_run_id)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # results point at cases; retire a case with "active" instead

    def save_model(self, request: HttpRequest, obj: GoldenCase, form: Any, change: bool) -> None:
        golden_save(case=obj, user=request.user, actor=Actor.for_user(request.user))  # type: ignore[arg-type]

    def object_context(self, request: HttpRequest, obj: GoldenCase) -> dict[str, Any]:
        version_diffs, older_versions = compare.version_diffs(obj)
        return {"version_diffs": version_diffs, "older_versions": older_versions}

    def get_urls(self) -> list[Any]:
        return [
            path(
                "promote/<path:run_id>/",
                self.admin_site.admin_view(self.promote_view),
                name="evals_goldencase_promote",
            ),
            *super().get_urls(),
        ]

    def promote_view(self, request: HttpRequest, run_id: str) -> HttpResponse:
        if not request.user.has_perm(PROMOTE_PERMISSION):
            raise PermissionDenied
        run = get_object_or_404(Run, pk=unquote(run_id))
        facts = run_facts(run)
        initial = {
            "name": f"{run.agent}: {' '.join(run.input.split())[:80]}",
            "input": run.input,
            "actual_output": facts["output"] or facts["error"],
            "expected_output": facts["output"],
            "output_match": GoldenCase.Match.CONTAINS,
            "expected_tools": json.dumps([{"name": call["name"]} for call in facts["tool_calls"]]),
        }
        form = PromoteForm(request.POST or None, initial=initial)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            case = golden_promote(
                run=run,
                dataset_name=data["dataset"],
                user=request.user,  # type: ignore[arg-type]
                name=data["name"],
                expected_output=data["expected_output"],
                output_match=data["output_match"],
                assertions=data["assertions"],
                expected_tools=data["expected_tools"],
                forbidden_tools=data["forbidden_tools"],
                tags=data["tags"],
            )
            self.message_user(request, f"Promoted {run.pk} to golden case {case.pk} in {case.dataset.name}.")
            if not case.cassette:
                self.message_user(request, LIVE_ONLY_MESSAGE, messages.WARNING)
            return HttpResponseRedirect(reverse("admin:evals_goldencase_change", args=[quote(case.pk)]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Promote {run.pk} to golden",
            "run": run,
            "run_url": reverse("admin:runs_run_change", args=[quote(run.pk)]),
            "facts": facts,
            "form": form,
            "datasets": list(Dataset.objects.values_list("name", flat=True)),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/evals/promote.html", context)


def promote_to_golden(modeladmin: Any, request: HttpRequest, queryset: QuerySet[Run]) -> HttpResponse | None:
    """The bulk "promote to golden" action on runs (an intermediate page asks for the dataset)."""
    if not request.user.has_perm(PROMOTE_PERMISSION):
        raise PermissionDenied
    runs = list(queryset.order_by("id"))
    form = BulkPromoteForm(request.POST if "apply" in request.POST else None)
    if "apply" in request.POST and form.is_valid():
        cases = [golden_promote(run=run, dataset_name=form.cleaned_data["dataset"], user=request.user) for run in runs]  # type: ignore[arg-type]
        modeladmin.message_user(
            request,
            f"Promoted {len(cases)} run(s) to golden cases in {form.cleaned_data['dataset']}.",
            messages.SUCCESS,
        )
        live_only = [case.pk for case in cases if not case.cassette]
        if live_only:
            modeladmin.message_user(request, f"{', '.join(live_only)}: {LIVE_ONLY_MESSAGE}", messages.WARNING)
        return None
    return TemplateResponse(
        request,
        "admin/evals/bulk_promote.html",
        {**modeladmin.admin_site.each_context(request), "title": "Promote to golden", "runs": runs, "form": form},
    )


promote_to_golden.short_description = "Promote selected runs to golden"  # type: ignore[attr-defined]
promote_to_golden.allowed_permissions = ("promote",)  # type: ignore[attr-defined]


# Result rows never show these: a case's cassette and a version's data can be large.
RESULT_DEFERRED = ("case__cassette", "case__history", "case_version__data")


class EvalResultInline(ReadOnlyInline):
    model = EvalResult
    fields = ("case", "version", "attempt", "passed", "why", "produced_run", "duration_ms")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[EvalResult]:
        return super().get_queryset(request).select_related("case", "case_version").defer(*RESULT_DEFERRED)

    @admin.display(description="version")
    def version(self, obj: EvalResult) -> str:
        return f"v{obj.case_version.version}"

    @admin.display(description="reasons")
    def why(self, obj: EvalResult) -> str:
        return reasons_html(obj.reasons)

    @admin.display(description="run")
    def produced_run(self, obj: EvalResult) -> str:
        return run_link(obj.run_id)


@admin.register(EvalRun)
class EvalRunAdmin(ObjectPageMixin, admin.ModelAdmin[EvalRun]):
    list_display = ("id", "status", "score", "mode", "dataset_list", "triggered_by", "started_at", "finished_at")
    list_filter = ("status", "mode")
    readonly_fields = (
        "id",
        "status",
        "score",
        "mode",
        "datasets",
        "agent",
        "repeat",
        "min_pass_rate",
        "triggered_by",
        "started_at",
        "finished_at",
        "skipped_cases",
    )
    fields = readonly_fields
    inlines = [EvalResultInline]

    def object_context(self, request: HttpRequest, obj: EvalRun) -> dict[str, Any]:
        return {"comparison": compare.eval_compare(obj)}

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        trend = compare.pass_rate_trend()
        extra_context = {
            **(extra_context or {}),
            "trend": trend,
            "trend_chart": compare.trend_chart(trend, title="Pass rate per dataset, latest eval runs"),
        }
        return super().changelist_view(request, extra_context)

    @admin.display(description="skipped (live-only)")
    def skipped_cases(self, obj: EvalRun) -> str:
        return ", ".join(f"{item['case']} ({item['name']})" for item in obj.skipped) or "-"

    @admin.display(description="passed")
    def score(self, obj: EvalRun) -> str:
        return f"{obj.passed}/{obj.total} ({obj.pass_rate * 100:.0f}%)"

    @admin.display(description="datasets")
    def dataset_list(self, obj: EvalRun) -> str:
        return ", ".join(obj.datasets)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(EvalResult)
class EvalResultAdmin(ReadOnlyAdmin[EvalResult]):
    list_display = ("id", "eval_run", "passed", "case", "version", "why", "produced_run", "duration_ms")
    list_filter = ("passed", "eval_run__mode", "case__dataset")
    list_select_related = ("case", "case_version", "eval_run")
    search_fields = ("=eval_run__id", "=case__id", "=run__id")
    readonly_fields = (
        "eval_run",
        "case",
        "case_version",
        "attempt",
        "passed",
        "why",
        "produced_run",
        "output",
        "duration_ms",
    )
    exclude = ("reasons", "run")

    def get_queryset(self, request: HttpRequest) -> QuerySet[EvalResult]:
        return super().get_queryset(request).defer(*RESULT_DEFERRED)

    @admin.display(description="version")
    def version(self, obj: EvalResult) -> str:
        return f"v{obj.case_version.version}"

    @admin.display(description="why it failed")
    def why(self, obj: EvalResult) -> str:
        return reasons_html(obj.reasons)

    @admin.display(description="run")
    def produced_run(self, obj: EvalResult) -> str:
        return run_link(obj.run_id)
