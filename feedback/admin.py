"""Feedback in the console: the feedback list, the run page's panel, the run-list filters and the
"needs review" queue that feeds promote-to-golden.

Wiring for the run page (runs/admin.py, templates/admin/runs/run/change_form.html):
`feedback_panel(request, run)` gives the context and `admin/feedback/run_panel.html` renders it;
`FeedbackFilter` and `FeedbackLabelFilter` go in RunAdmin.list_filter.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Exists, OuterRef, QuerySet
from django.db.models.functions import Substr
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from audit.services import Actor
from feedback import services
from feedback.models import LABEL_MAX_CHARS, NEEDS_REVIEW_LABEL, Feedback
from runs.models import Run

ADD_PERMISSION = "feedback.add_feedback"
CHANGE_PERMISSION = "feedback.change_feedback"
PROMOTE_PERMISSION = "evals.promote_run"
# The labels the run list offers as filter choices (the most used first); any label works in the URL.
LABEL_CHOICES = 50
PREVIEW_CHARS = 80


def _preview(text: str | None, length: int = PREVIEW_CHARS) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= length else flat[: length - 1] + "…"


def _run_url(run_id: str) -> str:
    return reverse("admin:runs_run_change", args=[quote(run_id)])


def _apply_errors(form: forms.Form | forms.ModelForm, score: Any, label: str, comment: str) -> None:  # type: ignore[type-arg]
    try:
        services.feedback_check(score=score, label=label, comment=comment)
    except services.FeedbackError as exc:
        form.add_error(exc.field if exc.field in form.fields else None, exc.message)


# --- forms ---------------------------------------------------------------------------------


class AnnotateForm(forms.Form):
    """The run page's "annotate" form."""

    score = forms.TypedChoiceField(choices=Feedback.Score.choices, coerce=int, widget=forms.RadioSelect)
    label = forms.CharField(
        required=False,
        max_length=LABEL_MAX_CHARS,
        help_text=f"a short slug, e.g. wrong-answer; {NEEDS_REVIEW_LABEL} queues the run for review",
    )
    comment = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if "score" in data:
            _apply_errors(self, data["score"], data.get("label", ""), data.get("comment", ""))
        return data


class FeedbackForm(forms.ModelForm):  # type: ignore[type-arg]
    author: Any = None  # set per request by FeedbackAdmin.get_form

    class Meta:
        model = Feedback
        fields = ("run", "score", "label", "comment")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if "score" in data:
            _apply_errors(self, data["score"], data.get("label", ""), data.get("comment", ""))
        run = data.get("run")
        if run is not None and self.instance.pk is None:
            if not run.is_finished:
                self.add_error("run", f"run {run.pk} is {run.status}: feedback is for finished runs")
            elif Feedback.objects.filter(run=run, author=self.author).exists():
                self.add_error("run", "you have already annotated this run: change that annotation instead")
        return data


# --- the feedback list ----------------------------------------------------------------------


class ReviewFilter(admin.SimpleListFilter):
    title = "review"
    parameter_name = "review"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("needed", "Needs review"), ("done", "Reviewed")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Feedback]) -> QuerySet[Feedback]:
        if self.value() == "needed":
            return queryset.needs_review()  # type: ignore[attr-defined,no-any-return]
        if self.value() == "done":
            return queryset.filter(reviewed_at__isnull=False)
        return queryset


@admin.register(Feedback)
class FeedbackAdmin(admin.ModelAdmin[Feedback]):
    form = FeedbackForm
    list_display = ("id", "run_link", "score", "label", "comment_preview", "source", "author", "reviewed", "created_at")
    list_filter = ("source", "score", ReviewFilter)
    list_select_related = ("author",)
    search_fields = ("=run__id", "label", "comment", "author__username")
    raw_id_fields = ("run",)
    actions = ["mark_reviewed"]

    def get_fields(self, request: HttpRequest, obj: Feedback | None = None) -> Any:
        if obj is None:
            return ("run", "score", "label", "comment")
        return ("run_link", "author", "source", "score", "label", "comment", "created_at", "updated_at", "reviewed")

    def get_readonly_fields(self, request: HttpRequest, obj: Feedback | None = None) -> Any:
        if obj is None:
            return ()
        return ("run_link", "author", "source", "created_at", "updated_at", "reviewed")

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        form.author = request.user  # type: ignore[attr-defined]
        return form

    @admin.display(description="run")
    def run_link(self, obj: Feedback) -> str:
        return format_html('<a href="{}">{}</a>', _run_url(obj.run_id), obj.run_id)

    @admin.display(description="comment")
    def comment_preview(self, obj: Feedback) -> str:
        return _preview(obj.comment)

    @admin.display(description="reviewed")
    def reviewed(self, obj: Feedback) -> str:
        if obj.reviewed_at is None:
            return "needs review" if obj.needs_review else "—"
        return f"{obj.reviewed_at:%Y-%m-%d %H:%M}"

    def has_change_permission(self, request: HttpRequest, obj: Feedback | None = None) -> bool:
        # What a client said through the API stays as they said it; operators' annotations can be edited.
        if obj is not None and obj.source != Feedback.Source.OPERATOR:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # feedback is a record; a wrong annotation is changed, not removed

    def save_model(self, request: HttpRequest, obj: Feedback, form: Any, change: bool) -> None:
        actor = Actor.for_user(request.user)
        if change:
            services.feedback_change(feedback=obj, score=obj.score, label=obj.label, comment=obj.comment, actor=actor)
            return
        saved, _ = services.feedback_give(
            run=obj.run,
            author=request.user,  # type: ignore[arg-type]
            source=Feedback.Source.OPERATOR,
            score=obj.score,
            label=obj.label,
            comment=obj.comment,
            actor=actor,
        )
        obj.pk, obj.author, obj.source, obj._state.adding = saved.pk, saved.author, saved.source, False

    @admin.action(description="Mark the selected feedback's runs reviewed", permissions=["change"])
    def mark_reviewed(self, request: HttpRequest, queryset: QuerySet[Feedback]) -> None:
        runs = services.feedback_mark_reviewed(
            run_ids=set(queryset.values_list("run_id", flat=True)),
            user=request.user,  # type: ignore[arg-type]
            actor=Actor.for_user(request.user),
            reason="marked reviewed",
        )
        self.message_user(request, f"Marked {runs} run(s) reviewed.", messages.SUCCESS)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        extra_context = {
            **(extra_context or {}),
            "review_url": reverse("admin:feedback_feedback_review"),
            "review_count": _review_runs().count(),
        }
        return super().changelist_view(request, extra_context)

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("review/", view(self.review_view), name="feedback_feedback_review"),
            path("annotate/<path:run_id>/", view(self.annotate_view), name="feedback_feedback_annotate"),
            *super().get_urls(),
        ]

    def annotate_view(self, request: HttpRequest, run_id: str) -> HttpResponse:
        """The run page's annotate form: the operator's own feedback on the run, given or changed."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        run = get_object_or_404(Run.objects.only("id", "status"), pk=unquote(run_id))
        mine = Feedback.objects.filter(run=run, author_id=request.user.pk).exists()
        if not request.user.has_perm(CHANGE_PERMISSION if mine else ADD_PERMISSION):
            raise PermissionDenied
        back = HttpResponseRedirect(_run_url(run.pk) + "#feedback")
        form = AnnotateForm(request.POST)
        if not form.is_valid():
            errors = "; ".join(f"{name}: {' '.join(str(e) for e in errs)}" for name, errs in form.errors.items())
            self.message_user(request, f"Feedback not saved: {errors}", messages.ERROR)
            return back
        try:
            _, created = services.feedback_give(
                run=run,
                author=request.user,  # type: ignore[arg-type]
                source=Feedback.Source.OPERATOR,
                score=form.cleaned_data["score"],
                label=form.cleaned_data["label"],
                comment=form.cleaned_data["comment"],
                actor=Actor.for_user(request.user),
            )
        except services.FeedbackError as exc:
            self.message_user(request, f"Feedback not saved: {exc}", messages.ERROR)
            return back
        self.message_user(
            request, f"{'Annotated' if created else 'Changed your annotation of'} run {run.pk}.", messages.SUCCESS
        )
        return back

    def review_view(self, request: HttpRequest) -> HttpResponse:
        """The "needs review" queue: runs with negative or `needs-review` feedback no one has reviewed.

        Five queries a page, whatever its rows: the count, the runs, their feedback, their golden cases.
        """
        if not self.has_view_permission(request):
            raise PermissionDenied
        url = reverse("admin:feedback_feedback_review")
        if request.method == "POST":
            if not request.user.has_perm(CHANGE_PERMISSION):
                raise PermissionDenied
            run_ids = [request.POST["run"]] if "run" in request.POST else request.POST.getlist("selected")
            marked = services.feedback_mark_reviewed(
                run_ids=[unquote(run_id) for run_id in run_ids],
                user=request.user,  # type: ignore[arg-type]
                actor=Actor.for_user(request.user),
                reason="marked reviewed in the queue",
            )
            if marked:
                self.message_user(request, f"Marked {marked} run(s) reviewed.", messages.SUCCESS)
            else:
                self.message_user(request, "Nothing to mark: select runs that need review.", messages.WARNING)
            return HttpResponseRedirect(url)
        page = Paginator(
            _review_runs()
            .select_related("owner")
            .only("id", "agent", "model", "status", "created_at", "owner__username")
            .annotate(input_head=Substr("input", 1, PREVIEW_CHARS + 1))
            .order_by("-id"),
            settings.HARNESS_REVIEW_QUEUE_PAGE_SIZE,
        ).get_page(request.GET.get("p"))
        runs = list(page)
        ids = [run.pk for run in runs]
        by_run: dict[str, list[Feedback]] = {run_id: [] for run_id in ids}
        for feedback in Feedback.objects.filter(run_id__in=ids).select_related("author").order_by("-id"):
            by_run[feedback.run_id].append(feedback)
        from evals.models import GoldenCase

        promoted: dict[str, list[str]] = {run_id: [] for run_id in ids}
        for run_id, case_id in GoldenCase.objects.filter(source_run_id__in=ids).values_list("source_run_id", "id"):
            promoted[run_id].append(case_id)
        can_promote = request.user.has_perm(PROMOTE_PERMISSION)
        rows = [
            {
                "run": run,
                "url": _run_url(run.pk),
                "input": _preview(run.input_head),  # type: ignore[attr-defined]
                "feedback": by_run[run.pk],
                "golden": promoted[run.pk],
                "promote_url": reverse("admin:evals_goldencase_promote", args=[quote(run.pk)]) if can_promote else "",
            }
            for run in runs
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": "Runs that need review",
            "opts": self.model._meta,
            "page": page,
            "rows": rows,
            "can_mark": request.user.has_perm(CHANGE_PERMISSION),
            "review_label": NEEDS_REVIEW_LABEL,
        }
        return TemplateResponse(request, "admin/feedback/review.html", context)


def _review_runs() -> QuerySet[Run]:
    return Run.objects.filter(Exists(Feedback.objects.needs_review().filter(run=OuterRef("pk"))))  # type: ignore[attr-defined]


# --- the run list's filters -------------------------------------------------------------------


class FeedbackFilter(admin.SimpleListFilter):
    """Runs by their feedback: any, none, positive, negative, or waiting for review."""

    title = "feedback"
    parameter_name = "feedback"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("any", "Has feedback"),
            ("none", "No feedback"),
            ("positive", "Positive"),
            ("negative", "Negative"),
            ("review", "Needs review"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Run]) -> QuerySet[Run]:
        of_run = Feedback.objects.filter(run=OuterRef("pk"))
        value = self.value()
        if value == "any":
            return queryset.filter(Exists(of_run))
        if value == "none":
            return queryset.filter(~Exists(of_run))
        if value == "positive":
            return queryset.filter(Exists(of_run.filter(score__gt=0)))
        if value == "negative":
            return queryset.filter(Exists(of_run.filter(score__lt=0)))
        if value == "review":
            return queryset.filter(Exists(of_run.needs_review()))  # type: ignore[attr-defined]
        return queryset


class FeedbackLabelFilter(admin.SimpleListFilter):
    """Runs with feedback carrying a label (the LABEL_CHOICES labels most used are offered)."""

    title = "feedback label"
    parameter_name = "feedback_label"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        from django.db.models import Count

        labels = (
            Feedback.objects.exclude(label="")
            .order_by()
            .values("label")
            .annotate(uses=Count("id"))
            .order_by("-uses", "label")
            .values_list("label", flat=True)[:LABEL_CHOICES]
        )
        return [(label, label) for label in labels]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Run]) -> QuerySet[Run]:
        value = self.value()
        if value:
            return queryset.filter(Exists(Feedback.objects.filter(run=OuterRef("pk"), label=value)))
        return queryset


# --- the run page's panel -------------------------------------------------------------------


def feedback_panel(request: HttpRequest, run: Run) -> dict[str, Any]:
    """Context for admin/feedback/run_panel.html on the run page: the run's feedback and, for an
    operator who may annotate, a form for theirs. Two queries."""
    limit = settings.HARNESS_CONSOLE_MAX_ROWS
    rows = list(Feedback.objects.filter(run=run).select_related("author", "reviewed_by").order_by("-id")[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    mine = next((row for row in rows if row.author_id == request.user.pk), None)
    if mine is None and more:
        mine = Feedback.objects.filter(run=run, author_id=request.user.pk).first()
    permission = CHANGE_PERMISSION if mine else ADD_PERMISSION
    can_annotate = run.is_finished and request.user.has_perm(permission)
    form = None
    if can_annotate:
        initial = {"score": mine.score, "label": mine.label, "comment": mine.comment} if mine else {}
        form = AnnotateForm(initial=initial, auto_id="feedback_%s")
    return {
        "feedback_panel": {
            "rows": rows,
            "more": more,
            "mine": mine,
            "form": form,
            "action": reverse("admin:feedback_feedback_annotate", args=[quote(run.pk)]),
            "needs_review": any(row.needs_review for row in rows),
            "review_url": reverse("admin:feedback_feedback_review"),
            "list_url": reverse("admin:feedback_feedback_changelist") + f"?q={run.pk}",
            "finished": run.is_finished,
        }
    }
