"""The web server: daphne, refusing to buffer without bound for a client that stops reading.

daphne writes each chunk of a streaming response (Server-Sent Events) straight to
the socket's user-space buffer, which grows for as long as the client does not read.
Here, once a response has more than HARNESS_STREAM_MAX_BUFFER_BYTES waiting in that
buffer (beyond what the kernel holds), it is looked at again after
HARNESS_STREAM_STALL_SECONDS: if the client has not taken a single byte meanwhile, its
connection is aborted and the application gets `http.disconnect`, which ends the
stream. A slow reader that makes progress is left alone; a big event read promptly is
never mistaken for a stall. (WebSockets are dropped by daphne's ping timeout.)

Run as `python -m harness_site.webserver <daphne arguments>` (runharness does).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

logger = logging.getLogger("harness.webserver")


def buffered_bytes(transport: Any) -> int:
    """Bytes written to a Twisted transport and not yet sent to the kernel."""
    data = getattr(transport, "dataBuffer", b"")
    return max(0, len(data) - getattr(transport, "offset", 0)) + getattr(transport, "_tempDataLen", 0)


def install(limit: int, stall_seconds: float) -> None:
    from daphne import http_protocol

    base = http_protocol.WebRequest

    def later(delay: float, function: Any, *args: Any) -> Any:
        # Imported here, not at install: daphne installs its asyncio reactor after us.
        from twisted.internet import reactor

        # The IReactorTime stub reads the interface's `self` as the first argument.
        return reactor.callLater(delay, function, *args)  # type: ignore[arg-type]

    class BoundedWebRequest(base):  # type: ignore[misc,valid-type]
        written = 0
        stall_check: Any = None

        def handle_reply(self, message: dict[str, Any]) -> None:
            if message.get("type") == "http.response.body":
                self.written += len(message.get("body", b""))
            super().handle_reply(message)
            # Request keeps `transport` after finishing (it drops `channel`), and a finished
            # response's unread bytes count too.
            transport = getattr(self, "transport", None)
            if transport is not None and self.stall_check is None and buffered_bytes(transport) > limit:
                self.stall_check = later(stall_seconds, self.check_stall, transport, self.sent(transport))

        def sent(self, transport: Any) -> int:
            return self.written - buffered_bytes(transport)

        def check_stall(self, transport: Any, sent_then: int) -> None:
            """Still over the limit and not one byte taken since the last look: drop it."""
            self.stall_check = None
            backlog = buffered_bytes(transport)
            if backlog <= limit or not getattr(transport, "connected", False):
                return
            if self.sent(transport) == sent_then:
                logger.warning(
                    "dropping a client that stopped reading",
                    extra={"path": self.path.decode(errors="replace"), "buffered_bytes": backlog},
                )
                transport.abortConnection()
                return
            self.stall_check = later(stall_seconds, self.check_stall, transport, self.sent(transport))

    http_protocol.WebRequest = BoundedWebRequest


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "harness_site.settings")
    import django
    from django.conf import settings

    django.setup()
    install(settings.HARNESS_STREAM_MAX_BUFFER_BYTES, settings.HARNESS_STREAM_STALL_SECONDS)
    from daphne.cli import CommandLineInterface

    from common.processes import gc_tune
    from harness_site.asgi import application  # noqa: F401 (imported now, to be frozen with the rest)

    gc_tune(settings.HARNESS_GC_THRESHOLD)

    sys.argv[0] = "daphne"
    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
