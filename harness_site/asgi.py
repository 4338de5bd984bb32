"""ASGI entry point: the API on its own short handler, Django for the rest of HTTP
(admin, pages, blobs), Channels for WebSockets."""

import os
from typing import Any

from django.core.asgi import get_asgi_application

from harness_site.telemetry import telemetry_instrument_django, telemetry_setup

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "harness_site.settings")
if telemetry_setup("web"):
    telemetry_instrument_django()
django_application = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs Django set up)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from harness_site.api_handler import ApiASGIHandler, is_api_path  # noqa: E402
from runs.consumers import RunStreamConsumer  # noqa: E402

api_application = ApiASGIHandler()


async def http_application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if is_api_path(scope.get("path", "")):
        await api_application(scope, receive, send)
    else:
        await django_application(scope, receive, send)


application = ProtocolTypeRouter(
    {
        "http": http_application,
        "websocket": AuthMiddlewareStack(URLRouter([path("ws/runs/<str:run_id>/", RunStreamConsumer.as_asgi())])),
    }
)
