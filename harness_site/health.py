"""GET /health: is the harness up, which model, which production backends are live.

Each backend is true only when it is configured for production *and* answers a
live check right now. Apps that wire a backend register its check here with
`backend_check`; a backend nobody has wired reports false.
"""

from __future__ import annotations

import logging
import time
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


def _timed(check: Callable[[], dict[str, object]]) -> dict[str, object]:
    started = time.monotonic()
    try:
        result = check()
    except Exception as exc:
        logger.warning("ready: check failed", extra={"check": check.__name__, "error": type(exc).__name__})
        result = {"ok": False, "error": type(exc).__name__}
    result["ms"] = round((time.monotonic() - started) * 1000, 1)
    return result


def _database() -> dict[str, object]:
    return {"ok": _database_answers(), "vendor": connections["default"].vendor}


def _broker() -> dict[str, object]:
    from runs.services import run_broker

    kind = "redis" if settings.REDIS_URL else "database"
    broker = run_broker()
    # Redis answers a PING; the database broker is the database checked above.
    ok = bool(broker.ping()) if settings.REDIS_URL else _database_answers()
    return {"ok": ok, "kind": kind, "queued": broker.queue_size() if ok else None}


def _object_store() -> dict[str, object]:
    from artifacts.storage import uses_object_store

    if not uses_object_store():
        return {"ok": True, "kind": "local files"}
    check = _checks.get("r2")
    return {"ok": bool(check and check()), "kind": "s3"}


def _workers() -> dict[str, object]:
    from execution.beats import live_workers, other_keys

    live = live_workers()
    others = other_keys()
    result: dict[str, object] = {
        "ok": bool(live) and not others,
        "live": len(live),
        "runs_in_flight": sum(worker.inflight for worker in live),
        "capacity": sum(worker.concurrency for worker in live),
        "within_seconds": round(3 * settings.HARNESS_WORKER_BEAT_SECONDS, 1),
    }
    if others:
        # Artifact links a worker signs would fail here, and jobs this web queues would be
        # dropped there: not ready until every process shares one SECRET_KEY.
        result["error"] = (
            f"{len(others)} worker(s) run with a different SECRET_KEY from this web process "
            f"({', '.join(others[:5])}): give every process the same SECRET_KEY"
        )
        logger.error("SECRET_KEY differs between this web process and workers", extra={"workers": others[:5]})
    return result


@require_GET
@never_cache
def ready(request: HttpRequest) -> JsonResponse:
    """GET /health/ready: can this deployment take runs now? The database, the task broker,
    the object store and at least one worker with a recent heartbeat; 503 when any is not.
    (`/health` stays the liveness probe: it needs the database only.)"""
    checks = {
        "database": _timed(_database),
        "broker": _timed(_broker),
        "object_store": _timed(_object_store),
        "workers": _timed(_workers),
    }
    ok = all(check["ok"] for check in checks.values())
    return JsonResponse({"status": "ready" if ok else "not ready", "checks": checks}, status=200 if ok else 503)
