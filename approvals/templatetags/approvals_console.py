"""`{% approvals_panel run %}`: the approvals of a run, with buttons, for the run's admin page."""

from __future__ import annotations

from typing import Any

from django import template

from approvals.selectors import run_panel

register = template.Library()


@register.inclusion_tag("admin/approvals/run_panel.html", takes_context=True)
def approvals_panel(context: dict[str, Any], run: Any) -> dict[str, Any]:
    """One query; renders nothing for a run that never asked for approval."""
    request = context["request"]
    return {**run_panel(run=run, user=request.user), "request": request, "next": request.get_full_path()}
