"""Live, resumable run streams: replay from the durable event log, then follow it.

One async generator serves both the WebSocket consumer and the SSE view:

1. With a channel layer (REDIS_URL), subscribe to the run's group *first*, so no
   event published during the replay is missed.
2. Replay every event after `after` from the database, in order.
3. Follow: live messages from the group, or (no Redis) the database itself every
   HARNESS_STREAM_POLL_SECONDS. Events are yielded strictly in `seq` order:
   anything at or below the last sent seq is dropped (no duplicates), and a
   gap is filled from the database before going on (no holes, no reordering).
4. Stop after the run's final event. While idle, yield None every
   HARNESS_STREAM_KEEPALIVE_SECONDS (the SSE view turns it into a comment),
   and look at the database then too, in case a live message was lost.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.core import signing
from django.db import connection, transaction

from common.db import calling_loop, db_call
from runs.models import Run, RunEvent

logger = logging.getLogger(__name__)

FINAL_EVENT_TYPES = frozenset({"run.succeeded", "run.failed", "run.cancelled"})
TOKEN_SALT = "runs.stream-token"  # noqa: S105 (a signing namespace, not a secret)


def group_name(run_id: str) -> str:
    return f"run.{run_id}"


def event_payload(event: RunEvent) -> dict[str, Any]:
    return {"seq": event.seq, "type": event.type, "data": event.data}


Publisher = Callable[[str, dict[str, Any]], None]
_publisher: Publisher | None = None


def set_publisher(publisher: Publisher | None) -> None:
    """Route this process's live events through `publisher` (the run engine sends them from
    its own event loop and channel-layer connection); None restores the default."""
    global _publisher
    _publisher = publisher


async def publish(run_id: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await layer.group_send(group_name(run_id), message)
    except Exception as exc:
        # The database log stays the truth; followers re-read it on their next idle tick.
        logger.warning("live publish failed", extra={"run_id": run_id, "error": type(exc).__name__})


_pending: set[asyncio.Task[None]] = set()


def _publish_soon(run_id: str, message: dict[str, Any]) -> None:
    task = asyncio.get_running_loop().create_task(publish(run_id, message))
    _pending.add(task)
    task.add_done_callback(_pending.discard)


def events_publish_on_commit(run_id: str, events: list[dict[str, Any]]) -> None:
    """After the transaction that wrote `events` ({seq, type, data}) commits, send them to live listeners."""
    if not events or not settings.CHANNEL_LAYERS:
        return
    message = {"type": "run.events", "events": events}
    publisher = _publisher
    loop = calling_loop.get()
    if publisher is not None:
        transaction.on_commit(lambda: publisher(run_id, message))
    elif loop is not None and loop.is_running():
        # Written for a coroutine (db_call): publish on its loop's channel-layer connection.
        transaction.on_commit(lambda: loop.call_soon_threadsafe(_publish_soon, run_id, message))
    else:
        transaction.on_commit(lambda: async_to_sync(publish)(run_id, message))


def stream_token_issue(*, run_id: str, user_id: int, api_key_id: str) -> str:
    """A token for this run's stream; the stream it opens counts against the issuing key's cap."""
    return signing.dumps({"r": run_id, "u": user_id, "k": api_key_id}, salt=TOKEN_SALT, compress=True)


def stream_token_read(token: str, *, run_id: str) -> tuple[int, str] | None:
    """The user id and API key id a token was issued to for this run, or None (bad, expired,
    or another run's)."""
    try:
        payload = signing.loads(token, salt=TOKEN_SALT, max_age=settings.HARNESS_STREAM_TOKEN_SECONDS)
    except signing.BadSignature:
        return None
    if (
        not isinstance(payload, dict)
        or payload.get("r") != run_id
        or not isinstance(payload.get("u"), int)
        or not isinstance(payload.get("k"), str)
    ):
        return None
    return payload["u"], payload["k"]


PAGE = 500


def _events_after(run_id: str, after: int) -> tuple[list[dict[str, Any]], bool]:
    """The run's events after `after` (a page) and whether the run is finished, in one
    statement: its single snapshot holds a finished run's final event, which commits
    with the final status."""
    run_table = connection.ops.quote_name(Run._meta.db_table)
    event_table = connection.ops.quote_name(RunEvent._meta.db_table)
    sql = (
        f"SELECT r.status, e.seq, e.type, e.data FROM {run_table} r "  # noqa: S608 (names are ours)
        f"LEFT JOIN {event_table} e ON e.run_id = r.id AND e.seq > %s "
        "WHERE r.id = %s ORDER BY e.seq LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [after, run_id, PAGE])
        rows = cursor.fetchall()
    finished = bool(rows) and rows[0][0] in Run.FINISHED_STATUSES
    events = [
        {"seq": seq, "type": kind, "data": json.loads(data) if isinstance(data, str | bytes) else data}
        for _, seq, kind, data in rows
        if seq is not None
    ]
    return events, finished


async def events_after(run_id: str, after: int) -> tuple[list[dict[str, Any]], bool]:
    return await db_call(_events_after, run_id, after)


async def run_event_stream(run_id: str, after: int = 0) -> AsyncIterator[dict[str, Any] | None]:
    layer = get_channel_layer() if settings.CHANNEL_LAYERS else None
    channel = None
    if layer is not None:
        channel = await layer.new_channel()
        await layer.group_add(group_name(run_id), channel)
    keepalive = settings.HARNESS_STREAM_KEEPALIVE_SECONDS
    loop = asyncio.get_running_loop()
    last, read_log, idle_since = after, True, loop.time()
    try:
        while True:
            if read_log:
                rows, finished = await events_after(run_id, last)
                for row in rows:
                    last = row["seq"]
                    yield row
                    if row["type"] in FINAL_EVENT_TYPES:
                        return
                if finished and not rows:
                    return  # its final event was at or before `after`
                if rows:
                    idle_since = loop.time()
                if len(rows) == PAGE:
                    continue
                read_log = layer is None
            if layer is None:
                await asyncio.sleep(settings.HARNESS_STREAM_POLL_SECONDS)
                if loop.time() - idle_since >= keepalive:
                    idle_since = loop.time()
                    yield None
                continue
            try:
                message = await asyncio.wait_for(layer.receive(channel), timeout=keepalive)
            except TimeoutError:
                yield None
                read_log = True  # in case a live message was lost
                continue
            live = sorted(message.get("events", []), key=lambda event: event["seq"])
            if live and live[0]["seq"] > last + 1:
                read_log = True  # a gap: fill it from the log, in order
                continue
            for row in live:
                if row["seq"] <= last:
                    continue
                last = row["seq"]
                yield row
                if row["type"] in FINAL_EVENT_TYPES:
                    return
    finally:
        if layer is not None and channel is not None:
            await layer.group_discard(group_name(run_id), channel)
