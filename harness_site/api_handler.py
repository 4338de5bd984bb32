"""The API's own ASGI handler: `/api/` and `/health` on a short, async middleware chain.

API clients authenticate with bearer keys: sessions, CSRF, messages and the admin's
other middleware do nothing for them, yet each of Django's sync middleware costs
thread hops per request under ASGI. This handler runs the API through
`API_MIDDLEWARE` (async-native) and sends no request_started/request_finished
signals, whose sync receivers would make a thread per request. Connection hygiene
instead: async views run their ORM work through `common.db.db_call` (pooled
connections given back after each call); a sync view runs, as with Django, on a
thread of its request, whose connection is closed when the response is done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import SyncToAsync, ThreadSensitiveContext, markcoroutinefunction, sync_to_async
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.exception import convert_exception_to_response
from django.db import InterfaceError, OperationalError, close_old_connections
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.urls import set_script_prefix

from harness_site.middleware import access_log, database_unavailable_response
from harness_site.telemetry import ApiTelemetryMiddleware, telemetry_enabled

logger = logging.getLogger(__name__)

Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]

# What SecurityMiddleware would add to an API response.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class ApiMiddleware:
    """The access log line, 503 for an unreachable database, and the security headers."""

    async_capable = True
    sync_capable = False

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        started = asyncio.get_running_loop().time()
        try:
            response = await self.get_response(request)
        except (OperationalError, InterfaceError) as exc:
            response = database_unavailable_response(request, exc)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        access_log(request, response, asyncio.get_running_loop().time() - started)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, OperationalError | InterfaceError):
            return database_unavailable_response(request, exception)
        return None


class ApiASGIHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware: list[Any] = []
        self._template_response_middleware: list[Any] = []
        inner = convert_exception_to_response(self._get_response_async)  # type: ignore[attr-defined]
        if telemetry_enabled():
            inner = ApiTelemetryMiddleware(inner)
        middleware = ApiMiddleware(inner)  # type: ignore[arg-type]
        self._exception_middleware = [self.adapt_method_mode(False, middleware.process_exception)]  # type: ignore[arg-type]
        self._middleware_chain = convert_exception_to_response(middleware)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        async with ThreadSensitiveContext():
            await self.handle(scope, receive, send)

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Django's ASGIHandler.handle without the request signals (see the module docstring)."""
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
            if error_response is not None:
                await self.send_response(error_response, send)
            return
        response: HttpResponseBase | None = None

        async def process_request() -> None:
            nonlocal response
            response = await self.run_get_response(request)
            try:
                await self.send_response(response, send)
            except asyncio.CancelledError:
                pass

        tasks = [
            asyncio.create_task(self.listen_for_disconnect(receive)),
            asyncio.create_task(process_request()),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    pass
            else:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        if response is not None:
            _close_without_signal(response)
        if _request_thread_used():
            # Sync code ran on this request's own thread: its connection goes back now.
            await sync_to_async(close_old_connections)()
        body_file.close()


def _request_thread_used() -> bool:
    """Whether anything ran on this request's thread (asgiref makes it on first use)."""
    try:
        context = SyncToAsync.thread_sensitive_context.get()
    except LookupError:
        return False
    return context in SyncToAsync.context_to_thread_executor


def _close_without_signal(response: HttpResponseBase) -> None:
    for closer in response._resource_closers:  # type: ignore[attr-defined]
        try:
            closer()
        except Exception:
            logger.exception("closing a response failed")
    response._resource_closers.clear()  # type: ignore[attr-defined]
    response.closed = True


def is_api_path(path: str) -> bool:
    return path.startswith("/api/") or path in ("/health", "/health/ready")
