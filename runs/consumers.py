"""WebSocket: ws://HOST/ws/runs/{run_id}/?after=N[&token=...]

Authenticate with `?token=` (POST /api/runs/{id}/stream-token), an
`Authorization: Bearer <API key>` header, or a staff session from our own pages.
Each message is one event `{"seq", "type", "data"}`; after the final event the
server closes with 1000. 4401: no valid credentials; 4404: no such run for you;
4400: bad `after`; 4429: the key already has HARNESS_MAX_STREAMS_PER_KEY streams open.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from common.db import db_call
from common.ratelimits import StreamLimitReached, StreamSlot, stream_slot_take
from runs.stream_auth import stream_authorize
from runs.streams import run_event_stream


class RunStreamConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    slot: StreamSlot | None = None
    # Its events come from runs.streams (the process's live or log follower), not from a channel
    # of its own: an alias no layer is configured under gives it none, and so no Redis
    # subscription per connection.
    channel_layer_alias = "runs.streams"

    async def connect(self) -> None:
        run_id = self.scope["url_route"]["kwargs"]["run_id"]
        query = parse_qs(self.scope.get("query_string", b"").decode())
        headers = {name.decode().lower(): value.decode() for name, value in self.scope.get("headers", [])}
        authorization = headers.get("authorization", "")
        api_key = authorization[7:].strip() if authorization.lower().startswith("bearer ") else None
        await self.accept()
        try:
            after = int((query.get("after") or ["0"])[0])
            if after < 0:
                raise ValueError
        except ValueError:
            await self.close(code=4400)
            return
        principal, found = await db_call(
            stream_authorize,
            run_id=run_id,
            api_key=api_key,
            token=(query.get("token") or [None])[0],
            session_user=self.scope.get("user"),
            origin=headers.get("origin"),
        )
        if principal is None:
            await self.close(code=4401)
            return
        if not found:
            await self.close(code=4404)
            return
        try:
            self.slot = await stream_slot_take(key_id=principal.api_key_id)
        except StreamLimitReached as exc:
            await self.close(code=4429, reason=exc.message)
            return
        self.pump = asyncio.create_task(self._pump(run_id, after))

    async def _pump(self, run_id: str, after: int) -> None:
        async for event in run_event_stream(run_id, after):
            if event is not None:  # keepalive ticks: daphne pings WebSockets itself
                await self.send_json(event)
        await self.close(code=1000)
        await self._release()

    async def _release(self) -> None:
        if self.slot is not None:
            await self.slot.release()

    async def disconnect(self, code: int) -> None:
        pump = getattr(self, "pump", None)
        if pump is not None and not pump.done():
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        await self._release()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        pass  # the stream is one-way
