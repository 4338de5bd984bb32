"""Keep the periodic jobs registered in django-q2 (run after every migrate)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone


def ensure_schedules(sender: Any = None, using: str = "default", **kwargs: Any) -> None:
    from django_q.models import Schedule

    jobs = {
        "runs.reap": ("runs.tasks.reap_runs", settings.HARNESS_REAPER_INTERVAL_MINUTES),
        "approvals.expire": ("approvals.tasks.expire_approvals", settings.HARNESS_REAPER_INTERVAL_MINUTES),
        "artifacts.expire": ("artifacts.tasks.expire_artifacts", settings.ARTIFACTS_RETENTION_INTERVAL_MINUTES),
        "sandboxes.reap": ("sandboxes.tasks.reap_sandboxes", settings.HARNESS_SANDBOX_REAPER_INTERVAL_MINUTES),
        "accounts.idempotency": ("accounts.tasks.purge_idempotency_keys", 60),
    }
    for name, (func, minutes) in jobs.items():
        Schedule.objects.using(using).update_or_create(
            name=name,
            defaults={"func": func, "schedule_type": Schedule.MINUTES, "minutes": minutes, "repeats": -1},
        )
    # The nightly eval: every active golden case, replayed, at HARNESS_EVAL_NIGHTLY_HOUR (UTC).
    nightly = Schedule.objects.using(using).filter(name="evals.nightly").first()
    hour = settings.HARNESS_EVAL_NIGHTLY_HOUR
    if nightly is None or nightly.next_run is None or nightly.next_run.hour != hour:
        Schedule.objects.using(using).update_or_create(
            name="evals.nightly",
            defaults={
                "func": "evals.tasks.nightly_eval",
                "schedule_type": Schedule.DAILY,
                "repeats": -1,
                "next_run": _next_at_hour(hour),
            },
        )


def _next_at_hour(hour: int) -> datetime:
    now = timezone.now()
    at = now.replace(hour=hour, minute=0, second=0, microsecond=0)
    return at if at > now else at + timedelta(days=1)
