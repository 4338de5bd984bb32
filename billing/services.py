"""Spend, budgets and the limits a run runs under.

Spend is kept per principal and UTC day (`SpendDay`), charged with one atomic
`INSERT ... ON CONFLICT DO UPDATE SET cost_usd = cost_usd + excluded.cost_usd`.
Budgets are enforced by *check, then charge*: before each model call a run reads its
principal's spend and stops if a limit is reached; after the call it charges what
the call cost. Concurrent runs of one principal therefore overspend a limit by at
most the calls already in flight when it was reached: one model call per run.
"""

from __future__ import annotations

import calendar
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from billing.models import Budget, SpendDay
from billing.pricing import is_priced
from common.sql import columns, fetch_models, for_update

ZERO = Decimal(0)


class BudgetError(Exception):
    """A run request the budgets refuse: `status_code` and a JSON body that says why."""

    status_code = 402

    def __init__(self, message: str, **facts: Any) -> None:
        super().__init__(message)
        self.facts = facts

    def body(self) -> dict[str, Any]:
        return {"detail": str(self), **self.facts}


class SpendLimitReached(BudgetError):
    status_code = 402


class TooManyRuns(BudgetError):
    status_code = 429


class InvalidLimits(BudgetError):
    status_code = 422


@dataclass(frozen=True)
class RunLimits:
    """What one run may use; None is no limit. Stored on the run (as JSON) when it is accepted."""

    max_cost_usd: Decimal | None
    max_tokens: int | None
    max_turns: int
    max_sandbox_seconds: float | None
    # The principal had a daily or monthly limit when the run was accepted: the run
    # checks the principal's spend before each model call and charges after it.
    spend_limited: bool = False

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["max_cost_usd"] = None if self.max_cost_usd is None else str(self.max_cost_usd)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> RunLimits:
        data = dict(data or {})
        cost = data.get("max_cost_usd")
        return cls(
            max_cost_usd=None if cost is None else Decimal(str(cost)),
            max_tokens=data.get("max_tokens"),
            max_turns=int(data.get("max_turns") or settings.HARNESS_RUN_MAX_TURNS),
            max_sandbox_seconds=data.get("max_sandbox_seconds"),
            spend_limited=bool(data.get("spend_limited")),
        )


def _smallest(*values: Any) -> Any:
    present = [value for value in values if value is not None]
    return min(present) if present else None


def limits_resolve(
    *,
    model: str,
    budget: Budget | None,
    agent_maxima: dict[str, Any] | None = None,
    max_cost_usd: Decimal | None = None,
    max_tokens: int | None = None,
    max_turns: int | None = None,
    max_sandbox_seconds: float | None = None,
) -> RunLimits:
    """The run's limits: what the client asked, clamped by the server's, the agent's and
    the principal's maxima (the smallest wins; with nothing asked, the maxima apply)."""
    agent_maxima = agent_maxima or {}
    priced = is_priced(model)
    asked_cost = _smallest(max_cost_usd, agent_maxima.get("max_cost_usd"), budget.max_run_cost_usd if budget else None)
    limits = RunLimits(
        # The server's default cost cap holds priced models only: an unpriced model cannot be
        # held to a cost, so it runs under the token, turn and time limits alone.
        max_cost_usd=_smallest(asked_cost, settings.HARNESS_RUN_MAX_COST_USD if priced else None),
        max_tokens=_smallest(
            max_tokens,
            settings.HARNESS_RUN_MAX_TOKENS,
            agent_maxima.get("max_tokens"),
            budget.max_run_tokens if budget else None,
        ),
        max_turns=_smallest(max_turns, settings.HARNESS_RUN_MAX_TURNS, agent_maxima.get("max_turns")),
        max_sandbox_seconds=_smallest(
            max_sandbox_seconds, settings.HARNESS_RUN_MAX_SANDBOX_SECONDS, agent_maxima.get("max_sandbox_seconds")
        ),
        spend_limited=bool(budget and budget.limits_spend),
    )
    if (asked_cost is not None or limits.spend_limited) and not priced:
        raise InvalidLimits(
            f"model {model!r} has no known price, so its spend cannot be limited: add it to HARNESS_MODEL_PRICES "
            "(USD per million tokens)",
            limit="price",
            model=model,
        )
    return limits


def day_start(moment: datetime) -> datetime:
    return datetime.combine(moment.astimezone(UTC).date(), datetime.min.time(), tzinfo=UTC)


def month_start(moment: datetime) -> datetime:
    return day_start(moment).replace(day=1)


def next_month(moment: datetime) -> datetime:
    start = month_start(moment)
    return start + timedelta(days=calendar.monthrange(start.year, start.month)[1])


@dataclass(frozen=True)
class Spend:
    today: Decimal
    month: Decimal


def spend_of(owner_id: int, *, now: datetime | None = None) -> Spend:
    """What the principal has been charged today and this month (UTC), in one query."""
    now = now or timezone.now()
    today = now.astimezone(UTC).date()
    rows = SpendDay.objects.filter(owner_id=owner_id, day__gte=today.replace(day=1), day__lte=today)
    month = today_cost = ZERO
    for day, cost in rows.values_list("day", "cost_usd"):
        month += cost
        if day == today:
            today_cost += cost
    return Spend(today=today_cost, month=month)


def spend_limit_reached(budget: Budget, spend: Spend, *, now: datetime | None = None) -> SpendLimitReached | None:
    """The principal's first spend limit that is used up, as the error that says so."""
    now = now or timezone.now()
    checks = (
        ("daily_limit_usd", budget.daily_limit_usd, spend.today, day_start(now) + timedelta(days=1)),
        ("monthly_limit_usd", budget.monthly_limit_usd, spend.month, next_month(now)),
    )
    for name, limit, spent, resets in checks:
        if limit is not None and spent >= limit:
            return SpendLimitReached(
                f"{name.replace('_usd', '').replace('_', ' ')} of ${limit} reached: ${spent} spent; "
                f"resets at {resets:%Y-%m-%dT%H:%M:%SZ}",
                limit=name,
                limit_usd=str(limit),
                spent_usd=str(spent),
                resets_at=resets.isoformat().replace("+00:00", "Z"),
            )
    return None


def budget_check_create(*, owner_id: int, budget: Budget | None) -> None:
    """Refuse a new run when the principal's spend limit is used up (402) or it has
    `max_concurrent_runs` runs queued or running (429). Call inside the creating
    transaction after locking the budget row, so concurrent creates cannot overshoot."""
    if budget is None:
        return
    if budget.limits_spend:
        reached = spend_limit_reached(budget, spend_of(owner_id))
        if reached is not None:
            raise reached
    if budget.max_concurrent_runs is not None:
        from runs.models import Run

        active = Run.objects.active().filter(owner_id=owner_id).count()
        if active >= budget.max_concurrent_runs:
            raise TooManyRuns(
                f"concurrent runs limit of {budget.max_concurrent_runs} reached: {active} runs are queued or "
                "running; retry when one ends",
                limit="max_concurrent_runs",
                max_concurrent_runs=budget.max_concurrent_runs,
                active_runs=active,
            )


def budget_for_update(owner_id: int) -> Budget | None:
    """The principal's budget row, locked until the transaction ends (every new run reads it)."""
    found = fetch_models(_budget_sql(for_update()), [owner_id], Budget)
    return None if found is None else found[0]


@cache
def _budget_sql(suffix: str) -> str:
    return f"SELECT {columns(Budget, 'b')} FROM {connection.ops.quote_name(Budget._meta.db_table)} b WHERE b.user_id = %s{suffix}"  # noqa: S608 (names are ours)


def spend_charge(*, owner_id: int, cost: Decimal, on: date | None = None) -> None:
    """Add to the principal's spend for the day, atomically (no read-modify-write)."""
    if cost <= 0:
        return
    on = on or timezone.now().astimezone(UTC).date()
    table = connection.ops.quote_name(SpendDay._meta.db_table)
    field = SpendDay._meta.get_field("cost_usd")
    amount = field.get_db_prep_save(cost, connection)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (owner_id, day, cost_usd) VALUES (%s, %s, %s) "  # noqa: S608 (names are ours)
            f"ON CONFLICT (owner_id, day) DO UPDATE SET cost_usd = {table}.cost_usd + excluded.cost_usd",
            [owner_id, on, amount],
        )


def spend_check(*, owner_id: int) -> SpendLimitReached | None:
    """For a running run, before a model call: its principal's spend limit, if used up."""
    found = fetch_models(_budget_sql(""), [owner_id], Budget)
    budget = None if found is None else found[0]
    if budget is None or not budget.limits_spend:
        return None
    return spend_limit_reached(budget, spend_of(owner_id))


def usage_report(*, owner_id: int, start: datetime, end: datetime, group_by: str) -> list[dict[str, Any]]:
    """The principal's runs created in [start, end), summed by agent, model, day or session."""
    from django.db.models import Count, Q
    from django.db.models.functions import TruncDate

    from runs.models import Run

    runs = Run.objects.filter(owner_id=owner_id, created_at__gte=start, created_at__lt=end)
    key = {"agent": "agent", "model": "model", "session": "session_id", "day": "day"}[group_by]
    if group_by == "day":
        runs = runs.annotate(day=TruncDate("created_at", tzinfo=UTC))
    rows = (
        runs.values(key)
        .annotate(
            runs=Count("id"),
            cost_usd=Sum("cost_usd"),
            unpriced_runs=Count("id", filter=Q(unpriced=True)),
            total_tokens=Sum("total_tokens"),
        )
        .order_by(key)
    )
    return [
        {
            "key": str(row[key]),
            "runs": row["runs"],
            "cost_usd": str((row["cost_usd"] or ZERO).quantize(Decimal("0.000001"))),
            "unpriced_runs": row["unpriced_runs"],
            "total_tokens": row["total_tokens"] or 0,
        }
        for row in rows
    ]
