"""`{% fleet_dashboard as dashboard %}`: the admin index's figures, for users who may view runs."""

from __future__ import annotations

from typing import Any

from django import template

from harness_site.stats import STATUSES, WINDOWS, UnknownWindow, fleet_stats, window_get
from harness_site.svg import Series, bar_chart
from runs.models import Run

register = template.Library()

STATUS_COLORS = {
    Run.Status.SUCCEEDED: "#2e7d32",
    Run.Status.FAILED: "#c62828",
    Run.Status.CANCELLED: "#757575",
    Run.Status.RUNNING: "#1565c0",
    Run.Status.QUEUED: "#ef6c00",
    Run.Status.AWAITING_APPROVAL: "#6a1b9a",
}
VIEW_PERMISSION = "runs.view_run"


@register.simple_tag(takes_context=True)
def fleet_dashboard(context: template.Context) -> dict[str, Any] | None:
    """None (and no query) for a user without `runs.view_run`; an unknown `?window=` shows the default."""
    request = context.get("request")
    if request is None or not request.user.has_perm(VIEW_PERMISSION):
        return None
    asked = request.GET.get("window")
    try:
        window = window_get(asked)
    except UnknownWindow as exc:
        window, problem = window_get(None), str(exc)
    else:
        problem = ""
    stats = fleet_stats(window=window)
    intervals = stats["intervals"]
    chart = bar_chart(
        [interval["label"] for interval in intervals],
        [
            Series(Run.Status(status).label, [interval["counts"].get(status, 0) for interval in intervals], color)
            for status, color in STATUS_COLORS.items()
            if status in STATUSES
        ],
        title=f"Runs created per {_interval_name(stats['interval_seconds'])}, by status (UTC)",
        width=960,
        height=220,
    )
    return {
        "stats": stats,
        "chart": chart,
        "windows": list(WINDOWS),
        "window": window.name,
        "problem": problem,
        "error_percent": None if stats["error_rate"] is None else f"{stats['error_rate'] * 100:.1f}",
        "status_labels": [(status, Run.Status(status).label, stats["by_status"].get(status, 0)) for status in STATUSES],
    }


def _interval_name(seconds: int) -> str:
    return f"{seconds // 60} minutes" if seconds < 3600 else ("hour" if seconds == 3600 else f"{seconds // 3600} hours")
