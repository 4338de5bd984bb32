"""Keep the periodic jobs registered in django-q2 (run after every migrate)."""

from __future__ import annotations

from typing import Any

from django.conf import settings


def ensure_schedules(sender: Any = None, using: str = "default", **kwargs: Any) -> None:
    from django_q.models import Schedule

    Schedule.objects.using(using).update_or_create(
        name="runs.reap",
        defaults={
            "func": "runs.tasks.reap_runs",
            "schedule_type": Schedule.MINUTES,
            "minutes": settings.HARNESS_REAPER_INTERVAL_MINUTES,
            "repeats": -1,
        },
    )
