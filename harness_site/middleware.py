from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

from harness_site.redaction import redact

logger = logging.getLogger("harness.request")
_RUN_IN_PATH = re.compile(r"/(run_[0-9A-Z]{26})(?:/|$)")


class RequestLogMiddleware:
    """One JSON access-log line per request (path without the query string)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        access_log(request, response, time.perf_counter() - started)
        return response


def access_log(request: HttpRequest, response: HttpResponse, seconds: float) -> None:
    extra: dict[str, object] = {
        "method": request.method,
        "path": redact(request.path),  # blob URLs carry their credential in the path
        "status": response.status_code,
        "duration_ms": round(seconds * 1000, 1),
    }
    match = _RUN_IN_PATH.search(request.path)
    if match:
        extra["run_id"] = match.group(1)
    logger.info("request", extra=extra)


def database_unavailable_response(request: HttpRequest, exc: Exception) -> HttpResponse:
    """503 with Retry-After: the database refused a connection, or the pool had none free in time."""
    retry_after = settings.HARNESS_RETRY_AFTER_SECONDS
    logger.warning("database unavailable", extra={"path": redact(request.path), "error": type(exc).__name__})
    body = {"detail": f"the database is unavailable or busy; nothing was changed, retry after {retry_after} s"}
    response = JsonResponse(body, status=503)
    response["Retry-After"] = str(retry_after)
    return response


class DatabaseUnavailableMiddleware:
    """Any page or API call that cannot reach the database answers 503 JSON, never a 500 page.

    Each service writes in one transaction, so a request cut short here has changed nothing.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            return self.get_response(request)
        except (OperationalError, InterfaceError) as exc:
            return database_unavailable_response(request, exc)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, OperationalError | InterfaceError):
            return database_unavailable_response(request, exception)
        return None
