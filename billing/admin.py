from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone

from audit.services import Actor, audit_record
from billing.models import Budget, SpendDay
from billing.services import day_start
from common.admin import ReadOnlyAdmin

BUDGET_FIELDS = ("daily_limit_usd", "monthly_limit_usd", "max_concurrent_runs", "max_run_cost_usd", "max_run_tokens")
SPEND_PERIODS = {"1": 1, "7": 7, "30": 30, "90": 90}


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin[Budget]):
    list_display = ("user", *BUDGET_FIELDS, "updated_at")
    search_fields = ("user__username",)
    autocomplete_fields = ("user",)
    fields = ("user", *BUDGET_FIELDS)

    def save_model(self, request: HttpRequest, obj: Budget, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        budget_audit(request, obj, created=not change)

    def delete_model(self, request: HttpRequest, obj: Budget) -> None:
        budget_deleted_audit(request, obj)
        super().delete_model(request, obj)


class BudgetInline(admin.StackedInline[Budget, Any]):
    """On a user's page: their budget, edited where their keys are."""

    model = Budget
    fields = BUDGET_FIELDS
    can_delete = True
    extra = 1  # an empty form to fill in; a blank one creates nothing
    max_num = 1


def budget_audit(request: HttpRequest, budget: Budget, *, created: bool) -> None:
    audit_record(
        action="budget.created" if created else "budget.changed",
        actor=Actor.for_user(request.user),
        target_type="budget",
        target_id=str(budget.pk),
        data={"user": budget.user.username, **{name: _json(getattr(budget, name)) for name in BUDGET_FIELDS}},
    )


def budget_deleted_audit(request: HttpRequest, budget: Budget) -> None:
    audit_record(
        action="budget.deleted",
        actor=Actor.for_user(request.user),
        target_type="budget",
        target_id=str(budget.pk),
        data={"user": budget.user.username},
    )


def _json(value: Any) -> Any:
    return str(value) if isinstance(value, Decimal) else value


@admin.register(SpendDay)
class SpendAdmin(ReadOnlyAdmin[SpendDay]):
    """The spend page: what runs cost by day, agent, model and principal over a period."""

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        from runs.models import Run

        if not self.has_view_permission(request):
            raise PermissionDenied
        days = SPEND_PERIODS.get(request.GET.get("days", "7"), 7)
        since = day_start(timezone.now()) - timedelta(days=days - 1)
        runs = Run.objects.filter(created_at__gte=since)
        sums = {
            "runs": Count("id"),
            "cost": Sum("cost_usd"),
            "tokens": Sum("total_tokens"),
            "unpriced": Count("id", filter=Q(unpriced=True)),
            "over_budget": Count("id", filter=Q(error__startswith="budget_exceeded")),
        }

        def table(key: str, order: str = "-cost") -> list[dict[str, Any]]:
            return list(runs.values(key).annotate(**sums).order_by(order, key))

        daily = runs.annotate(day=TruncDate("created_at")).values("day").annotate(**sums).order_by("-day")
        by_day: list[dict[str, Any]] = [dict(row) for row in daily]
        peak = max((row["cost"] or 0 for row in by_day), default=0) or 1
        for row in by_day:
            row["bar"] = round(100 * float(row["cost"] or 0) / float(peak))
        context = {
            **self.admin_site.each_context(request),
            "title": "Spend",
            "opts": self.model._meta,
            "days": days,
            "periods": list(SPEND_PERIODS.values()),
            "since": since,
            "total": runs.aggregate(**sums),
            "by_day": by_day,
            "by_agent": table("agent"),
            "by_model": table("model"),
            "by_principal": table("owner__username"),
            "budgets": Budget.objects.select_related("user").order_by("user__username"),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/billing/spend.html", context)


class UserWithBudgetAdmin(UserAdmin):  # type: ignore[type-arg]
    inlines = [*UserAdmin.inlines, BudgetInline]

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        super().save_formset(request, form, formset, change)
        if formset.model is not Budget:
            return
        for budget, _fields in formset.changed_objects:
            budget_audit(request, budget, created=False)
        for budget in formset.new_objects:
            budget_audit(request, budget, created=True)
        for budget in formset.deleted_objects:
            budget_deleted_audit(request, budget)


admin.site.unregister(User)
admin.site.register(User, UserWithBudgetAdmin)
