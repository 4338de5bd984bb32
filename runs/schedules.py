"""Keep the periodic jobs registered in django-q2 (run after every migrate)."""

from __future__ import annotations

from typing import Any

from django.conf import settings


def ensure_schedules(sender: Any = None, using: str = "default", **kwargs: Any) -> None:
    from django_q.models import Schedule

    jobs = {
        "runs.reap": ("runs.tasks.reap_runs", settings.HARNESS_REAPER_INTERVAL_MINUTES),
        "artifacts.expire": ("artifacts.tasks.expire_artifacts", settings.ARTIFACTS_RETENTION_INTERVAL_MINUTES),
        "sandboxes.reap": ("sandboxes.tasks.reap_sandboxes", settings.HARNESS_SANDBOX_REAPER_INTERVAL_MINUTES),
    }
    for name, (func, minutes) in jobs.items():
        Schedule.objects.using(using).update_or_create(
            name=name,
            defaults={"func": func, "schedule_type": Schedule.MINUTES, "minutes": minutes, "repeats": -1},
        )
