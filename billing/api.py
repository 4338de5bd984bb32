from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Literal

from django.http import HttpRequest
from django.utils import timezone
from ninja import Field, Query, Router, Schema
from ninja.errors import HttpError
from pydantic import BeforeValidator

from billing.pricing import USD
from billing.services import spend_of, usage_report
from runs.schemas import ErrorOut

router = Router(tags=["usage"])

MAX_USAGE_DAYS = 366


def _iso_only(value: object) -> object:
    """A date or date-time as ISO 8601 text; pydantic would also take a number as a Unix time."""
    if isinstance(value, str) and not ISO_DATE.match(value):
        raise ValueError("expected an ISO 8601 date or date-time, e.g. 2026-11-01 or 2026-11-01T00:00:00Z")
    return value


IsoDateTime = Annotated[datetime, BeforeValidator(_iso_only)]
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class UsageQuery(Schema):
    from_: IsoDateTime | None = Field(
        None, alias="from", description="Start (inclusive, ISO 8601); default 30 days ago."
    )
    to: IsoDateTime | None = Field(None, description="End (exclusive, ISO 8601); default now.")
    group_by: Literal["agent", "model", "day", "session"] = "day"


class UsageRow(Schema):
    key: str = Field(description="The agent, model, session id or UTC day (YYYY-MM-DD).")
    runs: int
    cost_usd: str = Field(description="USD, a decimal string: the priced runs' sum.")
    unpriced_runs: int = Field(description="Runs that used a model without a price: not in cost_usd.")
    total_tokens: int


class UsageReportOut(Schema):
    start: datetime = Field(alias="from")
    end: datetime = Field(alias="to")
    group_by: str
    items: list[UsageRow]
    total_cost_usd: str
    spend_today_usd: str = Field(description="Charged to you today (UTC), what daily limits count.")
    spend_month_usd: str = Field(description="Charged to you this calendar month (UTC), what monthly limits count.")


@router.get(
    "/usage",
    response={200: UsageReportOut, 422: ErrorOut},
    summary="Your own spend, by agent, model, day or session",
    by_alias=True,
)
def usage(request: HttpRequest, query: Query[UsageQuery]) -> dict[str, object]:
    """Runs created in [from, to), summed. Costs are decimal strings in USD; a run whose model
    has no price counts in `unpriced_runs`, not as $0."""
    now = timezone.now()
    end = _aware(query.to) if query.to else now
    try:
        start = _aware(query.from_) if query.from_ else end - timedelta(days=30)
    except OverflowError:
        raise HttpError(422, "to: too early for a 30-day report; pass from as well") from None
    if start >= end:
        raise HttpError(422, "from: must be before to")
    if end - start > timedelta(days=MAX_USAGE_DAYS):
        raise HttpError(422, f"from/to: a report covers at most {MAX_USAGE_DAYS} days")
    owner = request.auth  # type: ignore[attr-defined]
    items = usage_report(owner_id=owner.pk, start=start, end=end, group_by=query.group_by)
    spend = spend_of(owner.pk, now=now)
    total = sum((Decimal(item["cost_usd"]) for item in items), Decimal("0"))
    return {
        "from": start,
        "to": end,
        "group_by": query.group_by,
        "items": items,
        "total_cost_usd": str(total),
        "spend_today_usd": str(spend.today.quantize(USD)),
        "spend_month_usd": str(spend.month.quantize(USD)),
    }


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
