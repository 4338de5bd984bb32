"""GET /health: is the harness up, which model, which production backends are live.

Each backend is true only when it is configured for production *and* answers a
live check right now. Apps that wire a backend register its check here with
`backend_check`; a backend nobody has wired reports false.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from django.db import connections
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

logger = logging.getLogger(__name__)

BACKENDS = ("postgres", "sandbox", "r2")
_checks: dict[str, Callable[[], bool]] = {}


def backend_check(name: str) -> Callable[[Callable[[], bool]], Callable[[], bool]]:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}")

    def register(check: Callable[[], bool]) -> Callable[[], bool]:
        _checks[name] = check
        return check

    return register


def _database_answers() -> bool:
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except Exception as exc:
        logger.warning("health: database check failed", extra={"error": type(exc).__name__})
        return False


@backend_check("postgres")
def postgres_live() -> bool:
    return connections["default"].vendor == "postgresql" and _database_answers()


def backends_status() -> dict[str, bool]:
    status = {}
    for name in BACKENDS:
        check = _checks.get(name)
        try:
            status[name] = bool(check()) if check else False
        except Exception as exc:
            logger.warning("health: backend check raised", extra={"backend": name, "error": type(exc).__name__})
            status[name] = False
    return status


@require_GET
@never_cache
def health(request: HttpRequest) -> JsonResponse:
    backends = backends_status()
    database_ok = backends["postgres"] if connections["default"].vendor == "postgresql" else _database_answers()
    body = {"status": "ok" if database_ok else "unavailable", "model": settings.HARNESS_MODEL, "backends": backends}
    return JsonResponse(body, status=200 if database_ok else 503)
