"""Permission-aware reads: a principal only ever sees its own sessions and runs."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db.models import QuerySet

from runs.models import Run, RunEvent


def run_list_for_principal(*, principal: User) -> QuerySet[Run]:
    return Run.objects.filter(owner=principal)


def run_get_for_principal(*, principal: User, run_id: str) -> Run | None:
    return run_list_for_principal(principal=principal).filter(pk=run_id).first()


def run_events_after(*, run: Run, after: int = 0) -> QuerySet[RunEvent]:
    return RunEvent.objects.filter(run=run, seq__gt=after).order_by("seq")
