"""The fleet's figures, for the admin's dashboard and `GET /api/stats`: one function, one shape.

A window is the current interval and the ones before it, aligned on UTC boundaries:

| window | interval | intervals |
|---|---|---|
| `1h`  | 5 minutes | 12 |
| `24h` | 1 hour    | 24 |
| `7d`  | 6 hours   | 28 (00, 06, 12 and 18 h UTC) |

Runs belong to the interval they were *created* in, counted by their status now. Durations,
error rate, tokens, cost and the latest failures are over the runs created in the window; queue
depth, runs in flight, live sandboxes and pending approvals are the state now.

The number of queries is fixed (at most 8), whatever the number of runs: every figure is an
aggregate grouped by a bounded key (a minute or an hour, a status, an agent and model, a worker),
and the percentiles are read with `ORDER BY ... LIMIT 1 OFFSET k` in the database, so no list
of runs is ever loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.admin.utils import quote
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, QuerySet, Sum
from django.db.models.functions import Substr, Trunc
from django.urls import reverse
from django.utils import timezone

from execution.models import WorkerBeat
from runs.models import Run
from sandboxes.models import Sandbox

USD = Decimal("0.000001")
ZERO = Decimal(0)


@dataclass(frozen=True)
class Window:
    name: str
    span: timedelta
    interval: timedelta
    # The unit the database truncates creation times to before they are folded into intervals.
    unit: str
    label_format: str

    @property
    def intervals(self) -> int:
        return int(self.span / self.interval)


WINDOWS: dict[str, Window] = {
    "1h": Window("1h", timedelta(hours=1), timedelta(minutes=5), "minute", "%H:%M"),
    "24h": Window("24h", timedelta(hours=24), timedelta(hours=1), "hour", "%H:00"),
    "7d": Window("7d", timedelta(days=7), timedelta(hours=6), "hour", "%a %H:00"),
}
DEFAULT_WINDOW = "24h"

# Display order: outcomes first, then what is still under way.
STATUSES: tuple[str, ...] = tuple(
    status.value
    for status in (
        Run.Status.SUCCEEDED,
        Run.Status.FAILED,
        Run.Status.CANCELLED,
        Run.Status.RUNNING,
        Run.Status.QUEUED,
        Run.Status.AWAITING_APPROVAL,
    )
)
# Durations are measured over runs that ran to an outcome of their own (not cancelled ones).
TIMED_STATUSES = (Run.Status.SUCCEEDED, Run.Status.FAILED)


class UnknownWindow(ValueError):
    pass


def window_get(name: str | None) -> Window:
    """The window called `name` (None: the default); UnknownWindow for anything else."""
    if name is None:
        return WINDOWS[DEFAULT_WINDOW]
    try:
        return WINDOWS[name]
    except KeyError:
        raise UnknownWindow(f"window: one of {', '.join(WINDOWS)}, got {name[:20]!r}") from None


def window_bounds(window: Window, now: datetime) -> tuple[datetime, datetime]:
    """[start, end): the current interval (ending at `end`) and the ones before it."""
    step = int(window.interval.total_seconds())
    epoch = int(now.timestamp())
    end = datetime.fromtimestamp(epoch - epoch % step + step, tz=UTC)
    return end - window.span, end


def percentile_rank(p: float, n: int) -> int:
    """The 0-based index of the p-th percentile of n sorted values (nearest rank)."""
    return max(0, math.ceil(p / 100 * n) - 1)


def fleet_stats(*, window: Window, now: datetime | None = None) -> dict[str, Any]:
    """Every figure of the dashboard, JSON-ready but for datetimes (see the module's docstring).

    1. runs per interval and status, folded from per-minute or per-hour counts;
    2. tokens, cost and run counts per agent and model, summed into each;
    3. p50/p95 duration, two indexed reads of the sorted durations;
    4. what is queued, running or awaiting approval now, by worker, with the live workers' beats;
    5. live sandboxes by provider; 6. the latest failures.
    """
    now = now or timezone.now()
    start, end = window_bounds(window, now)
    created = Run.objects.filter(created_at__gte=start, created_at__lt=end)

    intervals, by_status = _intervals(created, window, start)
    agents, models, totals = _usage(created)
    finished = by_status[Run.Status.SUCCEEDED] + by_status[Run.Status.FAILED]
    return {
        "window": window.name,
        "interval_seconds": int(window.interval.total_seconds()),
        "start": start,
        "end": end,
        "generated_at": now,
        "runs": sum(by_status.values()),
        "by_status": by_status,
        "error_rate": round(by_status[Run.Status.FAILED] / finished, 4) if finished else None,
        "duration": _durations(created, totals["timed"]),
        "intervals": intervals,
        "tokens": totals["tokens"],
        "cost_usd": str(totals["cost"].quantize(USD)),
        "unpriced_runs": totals["unpriced"],
        "by_agent": agents,
        "by_model": models,
        **_now_state(now),
        "live_sandboxes": _sandboxes(),
        "latest_failures": _failures(created),
    }


def _intervals(created: QuerySet[Run], window: Window, start: datetime) -> tuple[list[dict[str, Any]], dict[str, int]]:
    rows = (
        created.annotate(at=Trunc("created_at", window.unit, tzinfo=UTC))
        .values("at", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    intervals: list[dict[str, Any]] = [
        {
            "start": start + i * window.interval,
            "label": (start + i * window.interval).strftime(window.label_format),
            "counts": dict.fromkeys(STATUSES, 0),
            "total": 0,
        }
        for i in range(window.intervals)
    ]
    by_status = dict.fromkeys(STATUSES, 0)
    for row in rows:
        at = row["at"] if row["at"].tzinfo else row["at"].replace(tzinfo=UTC)
        index = min(max(int((at - start) / window.interval), 0), window.intervals - 1)
        status = str(row["status"])
        intervals[index]["counts"][status] = intervals[index]["counts"].get(status, 0) + row["n"]
        intervals[index]["total"] += row["n"]
        by_status[status] = by_status.get(status, 0) + row["n"]
    return intervals, by_status


def _usage(created: QuerySet[Run]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    timed = Q(status__in=TIMED_STATUSES, started_at__isnull=False, finished_at__isnull=False)
    rows = (
        created.values("agent", "model")
        .annotate(
            n=Count("id"),
            failed=Count("id", filter=Q(status=Run.Status.FAILED)),
            tokens=Sum("total_tokens"),
            cost=Sum("cost_usd"),
            unpriced=Count("id", filter=Q(unpriced=True)),
            timed=Count("id", filter=timed),
        )
        .order_by()
    )
    groups: dict[str, dict[str, dict[str, Any]]] = {"agent": {}, "model": {}}
    totals: dict[str, Any] = {"tokens": 0, "cost": ZERO, "unpriced": 0, "timed": 0}
    for row in rows:
        cost = Decimal(row["cost"] or 0)
        for name, group in ((row["agent"], groups["agent"]), (row["model"], groups["model"])):
            entry = group.setdefault(
                name, {"name": name, "runs": 0, "failed": 0, "tokens": 0, "cost": ZERO, "unpriced_runs": 0}
            )
            entry["runs"] += row["n"]
            entry["failed"] += row["failed"]
            entry["tokens"] += row["tokens"] or 0
            entry["cost"] += cost
            entry["unpriced_runs"] += row["unpriced"]
        totals["tokens"] += row["tokens"] or 0
        totals["cost"] += cost
        totals["unpriced"] += row["unpriced"]
        totals["timed"] += row["timed"]

    def listed(group: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        entries = sorted(group.values(), key=lambda e: (-e["cost"], -e["tokens"], e["name"]))
        for entry in entries:
            entry["cost_usd"] = str(entry.pop("cost").quantize(USD))
        return entries

    return listed(groups["agent"]), listed(groups["model"]), totals


def _durations(created: QuerySet[Run], n: int) -> dict[str, Any]:
    """p50 and p95 of started -> finished over `n` succeeded or failed runs, read in the database."""
    result: dict[str, Any] = {"runs": n, "p50_seconds": None, "p95_seconds": None}
    if not n:
        return result
    durations = (
        created.filter(status__in=TIMED_STATUSES, started_at__isnull=False, finished_at__isnull=False)
        .annotate(took=ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField()))
        .order_by("took")
        .values_list("took", flat=True)
    )
    for p in (50, 95):
        took = durations[percentile_rank(p, n) : percentile_rank(p, n) + 1]
        value = next(iter(took), None)
        result[f"p{p}_seconds"] = round(value.total_seconds(), 3) if value is not None else None
    return result


def _now_state(now: datetime) -> dict[str, Any]:
    """Queue depth, pending approvals and runs in flight per worker (with live workers' beats)."""
    rows = (
        Run.objects.filter(status__in=(Run.Status.QUEUED, Run.Status.RUNNING, Run.Status.AWAITING_APPROVAL))
        .values("status", "worker_id")
        .annotate(n=Count("id"))
        .order_by()
    )
    queued = awaiting = 0
    running: dict[str, int] = {}
    for row in rows:
        if row["status"] == Run.Status.QUEUED:
            queued += row["n"]
        elif row["status"] == Run.Status.AWAITING_APPROVAL:
            awaiting += row["n"]
        else:
            running[row["worker_id"]] = running.get(row["worker_id"], 0) + row["n"]
    since = now - timedelta(seconds=3 * settings.HARNESS_WORKER_BEAT_SECONDS)
    beats = {beat.worker_id: beat for beat in WorkerBeat.objects.filter(seen_at__gte=since)}
    workers = []
    for worker_id in sorted(set(beats) | set(running)):
        beat = beats.get(worker_id)
        workers.append(
            {
                "worker_id": worker_id,
                # A worker holding runs without a recent beat has died: the reaper takes its runs back.
                "live": beat is not None,
                "hostname": beat.hostname if beat else "",
                "concurrency": beat.concurrency if beat else None,
                "running": running.get(worker_id, 0),
                "seen_at": beat.seen_at if beat else None,
            }
        )
    return {
        "queue_depth": queued,
        "pending_approvals": awaiting,
        "running": sum(running.values()),
        "workers": workers,
    }


def _sandboxes() -> dict[str, Any]:
    rows = (
        Sandbox.objects.filter(status__in=Sandbox.LIVE_STATUSES)
        .values("provider")
        .annotate(n=Count("id"))
        .order_by("provider")
    )
    by_provider = {row["provider"]: row["n"] for row in rows}
    return {"total": sum(by_provider.values()), "by_provider": by_provider}


def _failures(created: QuerySet[Run]) -> list[dict[str, Any]]:
    rows = (
        created.filter(status=Run.Status.FAILED)
        # The first line is all the dashboard shows: never load a whole stored error.
        .annotate(error_head=Substr("error", 1, 400))
        .order_by(F("finished_at").desc(nulls_last=True), "-id")
        .values("id", "agent", "model", "error_head", "finished_at")[: settings.HARNESS_DASHBOARD_FAILURES]
    )
    return [
        {
            "id": row["id"],
            "agent": row["agent"],
            "model": row["model"],
            "error": _first_line(row["error_head"]),
            "finished_at": row["finished_at"],
            "url": reverse("admin:runs_run_change", args=[quote(row["id"])]),
            "promote_url": reverse("admin:evals_goldencase_promote", args=[quote(row["id"])]),
        }
        for row in rows
    ]


def _first_line(text: str) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()[:200]
    return ""
