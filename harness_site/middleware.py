from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

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
        extra: dict[str, object] = {
            "method": request.method,
            "path": redact(request.path),  # blob URLs carry their credential in the path
            "status": response.status_code,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        }
        match = _RUN_IN_PATH.search(request.path)
        if match:
            extra["run_id"] = match.group(1)
        logger.info("request", extra=extra)
        return response
