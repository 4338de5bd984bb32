"""`GET /api/stats`: the fleet dashboard's figures as JSON, for staff keys only."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema
from ninja.errors import HttpError

from harness_site.stats import fleet_stats, window_get
from runs.schemas import ErrorOut

router = Router(tags=["stats"])


# harness_site.stats.WINDOWS and DEFAULT_WINDOW, spelled out for the OpenAPI document (a test keeps them equal).
WindowName = Literal["1h", "24h", "7d"]


class StatsQuery(Schema):
    window: WindowName = Field("24h", description="1h (5-minute intervals), 24h (hourly) or 7d (6-hourly, UTC).")


class StatsIntervalOut(Schema):
    start: datetime
    total: int
    counts: dict[str, int] = Field(description="Runs created in the interval, by their status now.")


class StatsDurationOut(Schema):
    runs: int = Field(description="Succeeded or failed runs with a start and an end: what the percentiles cover.")
    p50_seconds: float | None
    p95_seconds: float | None


class StatsUsageOut(Schema):
    name: str
    runs: int
    failed: int
    tokens: int
    cost_usd: str = Field(description="USD, a decimal string: the priced runs' sum.")
    unpriced_runs: int = Field(description="Runs that used a model without a price: not in cost_usd.")


class StatsWorkerOut(Schema):
    worker_id: str
    live: bool = Field(description="False: runs are held by a worker without a recent heartbeat (lost).")
    hostname: str
    concurrency: int | None
    running: int
    seen_at: datetime | None


class StatsSandboxesOut(Schema):
    total: int
    by_provider: dict[str, int]


class StatsFailureOut(Schema):
    id: str
    agent: str
    model: str
    error: str = Field(description="The error's first line.")
    finished_at: datetime | None
    url: str = Field(description="The run's page in the admin.")
    promote_url: str = Field(description="The admin page that promotes the run to a golden case.")


class StatsOut(Schema):
    window: str
    interval_seconds: int
    start: datetime
    end: datetime
    generated_at: datetime
    runs: int = Field(description="Runs created in the window.")
    by_status: dict[str, int]
    error_rate: float | None = Field(description="failed / (succeeded + failed); null without either.")
    duration: StatsDurationOut
    intervals: list[StatsIntervalOut]
    tokens: int
    cost_usd: str
    unpriced_runs: int
    by_agent: list[StatsUsageOut]
    by_model: list[StatsUsageOut]
    queue_depth: int = Field(description="Runs queued now.")
    pending_approvals: int = Field(description="Runs awaiting a person's approval now.")
    running: int = Field(description="Runs running now.")
    workers: list[StatsWorkerOut]
    live_sandboxes: StatsSandboxesOut
    latest_failures: list[StatsFailureOut]


@router.get(
    "/stats",
    response={200: StatsOut, 403: ErrorOut, 422: ErrorOut},
    summary="The fleet's figures (staff keys only)",
)
def get_stats(request: HttpRequest, query: Query[StatsQuery]) -> Any:
    """Runs per interval by status, p50/p95 duration, error rate, tokens and cost by agent and model
    over the window; queue depth, runs in flight per worker, live sandboxes, pending approvals now;
    the latest failures. Everyone's runs: only keys of staff users who may view runs (the
    dashboard's own rule: `runs.view_run`, e.g. the viewer role) may read it (403 otherwise)."""
    user = request.auth  # type: ignore[attr-defined]
    if not (user.is_staff and user.has_perm("runs.view_run")):
        raise HttpError(
            403,
            "fleet statistics cover every principal's runs: they need an API key of a staff user "
            "who may view runs (runs.view_run, e.g. the viewer role)",
        )
    return fleet_stats(window=window_get(query.window))
