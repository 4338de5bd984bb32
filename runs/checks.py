from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Warning, register


@register()
def check_run_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    problems: list[Any] = []
    if settings.HARNESS_RUN_LEASE_SECONDS <= settings.HARNESS_CANCEL_CHECK_SECONDS * 3:
        problems.append(
            Error(
                "HARNESS_RUN_LEASE_SECONDS is too short for the heartbeat.",
                hint="Make it at least three times HARNESS_CANCEL_CHECK_SECONDS.",
                id="runs.E001",
            )
        )
    return problems


@register(deploy=True)
def check_deploy_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    problems: list[Any] = []
    if settings.HARNESS_MODEL != "offline" and not settings.OPENAI_API_KEY:
        problems.append(
            Warning(
                f"OPENAI_API_KEY is not set: runs on the default model {settings.HARNESS_MODEL!r} are refused.",
                hint='Set OPENAI_API_KEY, or unset HARNESS_MODEL to default to the model "offline".',
                id="runs.W001",
            )
        )
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3") and settings.REDIS_URL:
        problems.append(
            Warning(
                "REDIS_URL is set while the database is SQLite.",
                hint="Fine on one machine; more than one machine needs Postgres (DATABASE_URL).",
                id="runs.W002",
            )
        )
    return problems
