"""The web server: daphne, refusing to buffer without bound for a client that stops reading.

daphne writes each chunk of a streaming response (Server-Sent Events) straight to
the socket's user-space buffer, which grows for as long as the client does not read.
Here, once a response has more than HARNESS_STREAM_MAX_BUFFER_BYTES waiting in that
buffer (beyond what the kernel holds), it is looked at again after
HARNESS_STREAM_STALL_SECONDS: if the client has not taken a single byte meanwhile, its
connection is aborted and the application gets `http.disconnect`, which ends the
stream. A slow reader that makes progress is left alone; a big event read promptly is
never mistaken for a stall. (WebSockets are dropped by daphne's ping timeout.)

A request body is bounded before the application sees it. daphne hands the application
the whole body at once, in memory, and Twisted would also parse a form or multipart body
into `request.args` (read whole, through the `email` package) for arguments daphne never
passes on. So that parsing is off, and a body is kept (in memory up to 100 kB, in a
temporary file past that) only up to the most its route may take: ARTIFACTS_MAX_BYTES for
`/artifacts/blob/`, HARNESS_MAX_REQUEST_BYTES for everything else. Past it, the rest is
read and dropped, and the answer is `413` JSON without the application: a 1 GB POST costs
the server neither 1 GB of memory nor of disk.

Run as `python -m harness_site.webserver <daphne arguments>` (runharness does).
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from typing import Any
from urllib.parse import urlsplit

logger = logging.getLogger("harness.webserver")


def buffered_bytes(transport: Any) -> int:
    """Bytes written to a Twisted transport and not yet sent to the kernel."""
    data = getattr(transport, "dataBuffer", b"")
    return max(0, len(data) - getattr(transport, "offset", 0)) + getattr(transport, "_tempDataLen", 0)


class BoundedBody:
    """A request's body as Twisted spools it, kept up to `limit` bytes; past that, dropped."""

    def __init__(self, spool: Any, limit: int) -> None:
        self.spool, self.limit = spool, limit
        self.size = 0
        self.over = False

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.over:
            return
        if self.size > self.limit:
            self.over = True
            self.spool.close()  # what was kept goes too: the request is refused whole
            self.spool = io.BytesIO()  # Twisted still rewinds it
            return
        self.spool.write(data)

    def __getattr__(self, name: str) -> Any:  # seek, read, close: the spool's
        return getattr(self.spool, name)


def body_limit(target: bytes, *, request_bytes: int, artifact_bytes: int) -> tuple[int, str]:
    """The most a request to `target` (its request line's target) may send, and the
    variable that says so."""
    path = urlsplit(target).path
    if path.startswith(b"/artifacts/blob/"):
        return artifact_bytes, "ARTIFACTS_MAX_BYTES"
    return request_bytes, "HARNESS_MAX_REQUEST_BYTES"


def install(limit: int, stall_seconds: float, *, request_bytes: int, artifact_bytes: int) -> None:
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

        body_variable = ""
        content: Any

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # daphne hands the application the raw body (`content`), never `args`.
            self._parsePOSTFormSubmission = False

        def gotLength(self, length: int | None) -> None:
            super().gotLength(length)
            # The channel holds the request line's target until the body is in.
            most, self.body_variable = body_limit(
                getattr(self.channel, "_path", b"/"), request_bytes=request_bytes, artifact_bytes=artifact_bytes
            )
            self.content = BoundedBody(self.content, most)

        def process(self) -> Any:
            if not getattr(self.content, "over", False):
                return super().process()
            logger.warning(
                "refused a request body over its limit",
                extra={
                    "method": self.method.decode(errors="replace")[:16],
                    "path": self.path.decode(errors="replace")[:200],
                    "status": 413,
                    "bytes": self.content.size,
                },
            )
            detail = f"request body: over the size limit ({self.body_variable})"
            self.handle_reply(
                {
                    "type": "http.response.start",
                    "status": 413,
                    "headers": [(b"Content-Type", b"application/json"), (b"X-Content-Type-Options", b"nosniff")],
                }
            )
            self.handle_reply({"type": "http.response.body", "body": json.dumps({"detail": detail}).encode()})
            return None

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
    install(
        settings.HARNESS_STREAM_MAX_BUFFER_BYTES,
        settings.HARNESS_STREAM_STALL_SECONDS,
        request_bytes=settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
        artifact_bytes=settings.ARTIFACTS_MAX_BYTES,
    )
    from daphne.cli import CommandLineInterface

    from common.processes import gc_tune
    from harness_site.asgi import application  # noqa: F401 (imported now, to be frozen with the rest)

    gc_tune(settings.HARNESS_GC_THRESHOLD)

    sys.argv[0] = "daphne"
    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
