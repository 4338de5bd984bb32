"""Live, resumable run streams: replay from the durable event log, then follow it.

One async generator serves both the WebSocket consumer and the SSE view:

1. Subscribe first, so no event committed during the replay is missed: with Redis
   (REDIS_URL) to the run's channel, through this process's live follower; without it to
   this process's log follower.
2. Replay every event after `after` from the database, in order.
3. Follow: live batches from Redis, or batches from the log follower. Events are
   yielded strictly in `seq` order: anything at or below the last sent seq is dropped
   (no duplicates), and a gap is filled from the database before going on (no holes,
   no reordering).
4. Stop after the run's final event. While idle, yield None every
   HARNESS_STREAM_KEEPALIVE_SECONDS (the SSE view turns it into a comment); with
   Redis, look at the database then too, in case a live message was lost.

With Redis, one `LiveFollower` per event loop holds one pub/sub connection: a run's channel
is subscribed while a stream of it is open in this process (once, whatever the number of its
streams) and unsubscribed when the last one closes, and each batch published on it is handed
to every stream of the run. A stream's inbox holds at most HARNESS_STREAM_MAX_PENDING_BATCHES
batches; one further behind re-reads the log.

Without a channel layer, one `LogFollower` per event loop (the web server's) reads the
log for every run that has a stream open in this process: one statement per
HARNESS_STREAM_POLL_SECONDS tick for up to FOLLOW_CHUNK runs, whatever the number of
streams, and hands each new batch to every stream of its run. The database's load
grows with the runs being watched, not with the streams watching them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
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


def redis_pubsub_layer() -> Any:
    """The channel layer when it is Redis pub/sub (what REDIS_URL configures), else None."""
    from channels_redis.pubsub import RedisPubSubChannelLayer

    layer = get_channel_layer() if settings.CHANNEL_LAYERS else None
    if not isinstance(layer, RedisPubSubChannelLayer) or not settings.REDIS_URL:
        return None
    return layer


def layer_prefix() -> str:
    layers: dict[str, dict[str, Any]] = settings.CHANNEL_LAYERS
    return str((layers["default"].get("CONFIG") or {}).get("prefix", "asgi"))


def live_channel(prefix: str, run_id: str) -> str:
    """The Redis channel of a run's live events: its group's, as the channel layer names it."""
    return f"{prefix}__group__{group_name(run_id)}"


class BatchPublisher:
    """Live events of many runs to Redis in one round trip per batch (the run engine's loop
    publishes every committed batch of every run in flight). It writes what the pub/sub
    channel layer's group_send would: the layer's serialization, on the group's channel."""

    def __init__(self, layer: Any) -> None:
        import redis.asyncio

        self.serialize = layer.serialize
        self.prefix = layer_prefix()
        self.client = redis.asyncio.Redis.from_url(
            settings.REDIS_URL,
            # A Redis that takes the connection and then says nothing fails a publish after this.
            socket_connect_timeout=settings.HARNESS_REDIS_TIMEOUT_SECONDS,
            socket_timeout=settings.HARNESS_REDIS_TIMEOUT_SECONDS,
        )

    @classmethod
    def for_layer(cls) -> BatchPublisher | None:
        """One for the configured layer, or None where it is not Redis pub/sub (publish each then)."""
        layer = redis_pubsub_layer()
        return None if layer is None else cls(layer)

    def channel(self, run_id: str) -> str:
        return live_channel(self.prefix, run_id)

    async def send(self, batch: Sequence[tuple[str, dict[str, Any]]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for run_id, message in batch:
            try:
                data = self.serialize(message)
            except Exception as exc:  # e.g. an integer msgpack cannot hold: followers read the log
                logger.warning("live publish failed", extra={"run_id": run_id, "error": type(exc).__name__})
                continue
            pipe.publish(self.channel(run_id), data)
        try:
            await pipe.execute()
        except Exception as exc:
            # The database log stays the truth; followers re-read it on their next idle tick.
            logger.warning("live publish failed", extra={"runs": len(batch), "error": type(exc).__name__})

    async def close(self) -> None:
        await self.client.aclose()


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


def _event_row(seq: int, kind: str, data: Any) -> dict[str, Any]:
    return {"seq": seq, "type": kind, "data": json.loads(data) if isinstance(data, str | bytes) else data}


@dataclass(frozen=True)
class LogPage:
    events: list[dict[str, Any]]
    finished: bool  # the run is finished: its final event is in the log
    event_seq: int  # the run's last seq handed out, read in the same statement as `events`


def _events_after(run_id: str, after: int) -> LogPage:
    """The run's events after `after` (a page), whether the run is finished and its last
    seq, in one statement: its single snapshot holds a finished run's final event, which
    commits with the final status, and every event up to the run's `event_seq`, which is
    taken in the transaction that writes them (runs.events)."""
    run_table = connection.ops.quote_name(Run._meta.db_table)
    event_table = connection.ops.quote_name(RunEvent._meta.db_table)
    sql = (
        f"SELECT r.status, r.event_seq, e.seq, e.type, e.data FROM {run_table} r "  # noqa: S608 (names are ours)
        f"LEFT JOIN {event_table} e ON e.run_id = r.id AND e.seq > %s "
        "WHERE r.id = %s ORDER BY e.seq LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [after, run_id, PAGE])
        rows = cursor.fetchall()
    if not rows:
        return LogPage([], finished=False, event_seq=after)
    events = [_event_row(seq, kind, data) for _, _, seq, kind, data in rows if seq is not None]
    return LogPage(events, finished=rows[0][0] in Run.FINISHED_STATUSES, event_seq=int(rows[0][1]))


async def events_after(run_id: str, after: int) -> LogPage:
    return await db_call(_events_after, run_id, after)


# Runs per statement of the log follower (each brings three parameters).
FOLLOW_CHUNK = 200
OVERFLOW: list[dict[str, Any]] = []  # a sentinel batch: "batches were dropped, read the log"


def _events_of_runs(cursors: Sequence[tuple[str, int]]) -> dict[str, list[dict[str, Any]]]:
    """For each (run, seq), the run's next events after seq (at most PAGE), in one statement."""
    event_table = connection.ops.quote_name(RunEvent._meta.db_table)
    where = " OR ".join(["(run_id = %s AND seq > %s AND seq <= %s)"] * len(cursors))
    params: list[Any] = []
    for run_id, seq in cursors:
        params += [run_id, seq, seq + PAGE]
    sql = f"SELECT run_id, seq, type, data FROM {event_table} WHERE {where}"  # noqa: S608 (names are ours)
    found: dict[str, list[dict[str, Any]]] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for run_id, seq, kind, data in cursor.fetchall():
            found.setdefault(run_id, []).append(_event_row(seq, kind, data))
    for events in found.values():
        events.sort(key=lambda event: event["seq"])
    return found


class Subscription:
    """One stream's inbox at the log follower: batches of its run's new events, in order."""

    def __init__(self) -> None:
        self.batches: deque[list[dict[str, Any]]] = deque()
        self.ready = asyncio.Event()

    def put(self, batch: list[dict[str, Any]]) -> None:
        if len(self.batches) >= settings.HARNESS_STREAM_MAX_PENDING_BATCHES:
            # A stream this far behind re-reads the log: memory per stream stays bounded.
            self.batches.clear()
            self.batches.append(OVERFLOW)
        elif not self.batches or self.batches[-1] is not OVERFLOW:
            self.batches.append(batch)
        self.ready.set()

    async def get(self, timeout: float) -> list[dict[str, Any]] | None:
        """The next batch (OVERFLOW: read the log), or None after `timeout` seconds without one."""
        if not self.batches:
            self.ready.clear()
            try:
                await asyncio.wait_for(self.ready.wait(), timeout)
            except TimeoutError:
                return None
        return self.batches.popleft()


@dataclass
class _Followed:
    subscriptions: set[Subscription] = field(default_factory=set)
    cursor: int | None = None  # the last seq handed out; None until a stream has replayed
    finished: bool = False  # its final event was handed out: nothing more to read


class LogFollower:
    """Follows the event log of every run with a stream open on one event loop (no channel
    layer): one statement a tick for all of them, each new batch to every stream of its run."""

    def __init__(self) -> None:
        self.runs: dict[str, _Followed] = {}
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.failing = False  # the last read failed (logged once per streak)

    def subscribe(self, run_id: str) -> Subscription:
        subscription = Subscription()
        self.runs.setdefault(run_id, _Followed()).subscriptions.add(subscription)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._follow(), name="run-log-follower")
        return subscription

    def start_at(self, run_id: str, seq: int) -> None:
        """A stream has replayed the log up to `seq` (at most the run's real last seq): from
        then on the follower reads what comes after, unless it already follows the run."""
        followed = self.runs.get(run_id)
        if followed is not None and followed.cursor is None:
            followed.cursor = seq
            self.wake.set()

    def unsubscribe(self, run_id: str, subscription: Subscription) -> None:
        followed = self.runs.get(run_id)
        if followed is None:
            return
        followed.subscriptions.discard(subscription)
        if not followed.subscriptions:
            del self.runs[run_id]
            self.wake.set()  # with no run left, the follower ends (the next stream starts it)

    async def _follow(self) -> None:
        while self.runs:
            cursors = [
                (run_id, followed.cursor)
                for run_id, followed in self.runs.items()
                if followed.cursor is not None and not followed.finished
            ]
            if not cursors:
                self.wake.clear()
                await self.wake.wait()
                continue
            more = False
            for start in range(0, len(cursors), FOLLOW_CHUNK):
                try:
                    found = await db_call(_events_of_runs, cursors[start : start + FOLLOW_CHUNK])
                    for run_id, events in found.items():
                        more |= len(events) == PAGE
                        self._hand_out(run_id, events)
                except Exception as exc:
                    # The streams keep waiting (and keepalive); the next tick tries again.
                    if not self.failing:
                        logger.warning("stream log follow failed", extra={"error": type(exc).__name__})
                    self.failing = True
                else:
                    if self.failing:
                        logger.info("stream log follow recovered")
                    self.failing = False
            if not more:
                await asyncio.sleep(settings.HARNESS_STREAM_POLL_SECONDS)

    def _hand_out(self, run_id: str, events: list[dict[str, Any]]) -> None:
        followed = self.runs.get(run_id)
        if followed is None or followed.cursor is None:
            return  # every stream of it left meanwhile
        events = [event for event in events if event["seq"] > followed.cursor]
        if not events:
            return
        followed.cursor = events[-1]["seq"]
        followed.finished = events[-1]["type"] in FINAL_EVENT_TYPES
        for subscription in followed.subscriptions:
            subscription.put(events)


_followers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LogFollower] = weakref.WeakKeyDictionary()


def _per_loop[F](followers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, F], make: Callable[[], F]) -> F:
    """The running event loop's follower of one kind, made on first use (the web server has one
    loop, so one per process)."""
    loop = asyncio.get_running_loop()
    follower = followers.get(loop)
    if follower is None:
        follower = followers[loop] = make()
    return follower


def log_follower() -> LogFollower:
    """This event loop's log follower."""
    return _per_loop(_followers, LogFollower)


# The live follower's read returns this often without a message, so that a connection gone
# quiet is health-checked (a PING every LIVE_HEALTH_SECONDS).
LIVE_READ_SECONDS = 5.0
LIVE_HEALTH_SECONDS = 30
LIVE_RETRY_SECONDS = 1.0


@dataclass
class _Live:
    subscriptions: set[Subscription] = field(default_factory=set)
    confirmed: asyncio.Event = field(default_factory=asyncio.Event)  # Redis has it subscribed


class LiveFollower:
    """Live events from Redis for every run with a stream open on one event loop: one pub/sub
    connection for the process, one subscription per run (not per stream), each batch handed
    to every stream of its run. The runs' channels are subscribed while a stream of theirs is
    open and unsubscribed when the last one closes."""

    def __init__(self, layer: Any) -> None:
        import redis.asyncio

        self.deserialize = layer.deserialize
        self.prefix = layer_prefix()
        self.client = redis.asyncio.Redis.from_url(
            settings.REDIS_URL,
            health_check_interval=LIVE_HEALTH_SECONDS,
            socket_connect_timeout=settings.HARNESS_REDIS_TIMEOUT_SECONDS,
            socket_timeout=settings.HARNESS_REDIS_TIMEOUT_SECONDS,  # the reader's own reads set theirs
        )
        self.pubsub = self.client.pubsub()
        self.runs: dict[bytes, _Live] = {}  # by channel: what should be subscribed
        self.subscribed: set[bytes] = set()  # what Redis was told to subscribe
        self.lock = asyncio.Lock()
        self.reader: asyncio.Task[None] | None = None
        self.pending: set[asyncio.Task[None]] = set()
        self.queued_sync: asyncio.Task[None] | None = None  # a sync not yet holding the lock
        self.failing = False  # the last command or read failed (logged once per streak)

    def channel(self, run_id: str) -> bytes:
        return live_channel(self.prefix, run_id).encode()

    async def subscribe(self, run_id: str) -> Subscription:
        """A new stream's inbox for `run_id`, once Redis has the run's channel subscribed (or after
        HARNESS_STREAM_SUBSCRIBE_WAIT_SECONDS: with Redis away the stream lives on the log's idle
        re-reads, and a live batch after a gap, or the idle re-read, brings what it missed)."""
        channel = self.channel(run_id)
        subscription = Subscription()
        live = self.runs.get(channel)
        if live is None:
            live = self.runs[channel] = _Live()
            if channel in self.subscribed:
                live.confirmed.set()  # still subscribed for a stream that just left
        live.subscriptions.add(subscription)
        sync = self._sync_soon()  # after any sync in progress, which may be dropping the run
        if live.confirmed.is_set():
            return subscription  # Redis has the run subscribed: nothing to wait for
        try:
            # The wait covers the sync too: a Redis slow to answer holds a new stream no longer.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(settings.HARNESS_STREAM_SUBSCRIBE_WAIT_SECONDS):
                    await asyncio.shield(sync)  # left to finish (or fail) on its own
                    await live.confirmed.wait()
        except BaseException:  # the stream is gone (its client left) before it started
            self.unsubscribe(run_id, subscription)
            raise
        return subscription

    def unsubscribe(self, run_id: str, subscription: Subscription) -> None:
        channel = self.channel(run_id)
        live = self.runs.get(channel)
        if live is None:
            return
        live.subscriptions.discard(subscription)
        if not live.subscriptions:
            del self.runs[channel]
            self._sync_soon()

    def _sync_soon(self) -> asyncio.Task[None]:
        """A sync that will read what the open streams need: the one already waiting for the lock
        if there is one (it has not read them yet), so that with Redis slow or silent at most one
        sync runs and one waits, however many streams come and go."""
        if self.queued_sync is None or self.queued_sync.done():
            task = self.queued_sync = asyncio.get_running_loop().create_task(self._sync())
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)
        return self.queued_sync

    async def _sync(self) -> None:
        """Tell Redis to subscribe what the open streams need and unsubscribe the rest. Whatever
        order streams come and go in, the last sync leaves Redis matching them."""
        async with self.lock:
            if self.queued_sync is asyncio.current_task():
                self.queued_sync = None  # what changes from now on needs a sync after this one
            wanted = set(self.runs)
            add, drop = wanted - self.subscribed, self.subscribed - wanted
            try:
                if add:
                    await self.pubsub.subscribe(*add)
                    self.subscribed |= add
                if drop:
                    await self.pubsub.unsubscribe(*drop)
                    self.subscribed -= drop
            except Exception as exc:
                self._failed(exc)
            if self.reader is None or self.reader.done():
                # Started once the connection is tried: it reads the confirmations from then on,
                # and syncs again after a failure until Redis is back.
                self.reader = asyncio.get_running_loop().create_task(self._read(), name="run-live-follower")

    async def _read(self) -> None:
        while True:
            try:
                message = await self.pubsub.get_message(timeout=LIVE_READ_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The streams go on with the log's idle re-reads; subscribe again once Redis is back.
                self._failed(exc)
                await asyncio.sleep(LIVE_RETRY_SECONDS)
                # What failed to subscribe (a reconnect subscribes the rest again).
                await asyncio.shield(self._sync_soon())
                continue
            if self.failing:
                logger.info("stream live follow recovered")
                self.failing = False
            if message is None:
                continue
            live = self.runs.get(message["channel"])
            if live is None:
                continue  # every stream of the run left
            if message["type"] == "subscribe":
                live.confirmed.set()
            elif message["type"] == "message":
                self._hand_out(live, message["data"])

    def _hand_out(self, live: _Live, data: bytes) -> None:
        try:
            events = self.deserialize(data).get("events", [])
        except Exception as exc:
            logger.warning("stream live message unreadable", extra={"error": type(exc).__name__})
            return
        if events:
            batch = sorted(events, key=lambda event: event["seq"])
            for subscription in live.subscriptions:
                subscription.put(batch)

    def _failed(self, exc: Exception) -> None:
        if not self.failing:
            logger.warning("stream live follow failed", extra={"error": type(exc).__name__})
        self.failing = True


_live_followers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LiveFollower] = weakref.WeakKeyDictionary()


def live_follower() -> LiveFollower | None:
    """This event loop's live follower where live events go through Redis pub/sub; else None."""
    layer = redis_pubsub_layer()
    if layer is None:
        return None
    return _per_loop(_live_followers, lambda: LiveFollower(layer))


Receive = Callable[[float], Awaitable[list[dict[str, Any]] | None]]


async def run_event_stream(run_id: str, after: int = 0) -> AsyncIterator[dict[str, Any] | None]:
    """The run's events after `after`, one at a time (None on each idle keepalive interval)."""
    async with contextlib.aclosing(run_event_batches(run_id, after)) as batches:
        async for batch in batches:
            if batch is None:
                yield None
                continue
            for event in batch:
                yield event


async def run_event_batches(run_id: str, after: int = 0) -> AsyncGenerator[list[dict[str, Any]] | None]:
    """The run's events after `after` as they come, a batch at a time (a page of the log, a
    committed batch), in seq order, ending with the final event; None on each idle keepalive
    interval. A stream writes each batch at once."""
    keepalive = settings.HARNESS_STREAM_KEEPALIVE_SECONDS
    live = live_follower()
    if live is not None:
        # New events come live from Redis; while idle, look at the log too, in case a live
        # message was lost.
        subscription = await live.subscribe(run_id)
        try:
            async with contextlib.aclosing(
                _replay_then_follow(run_id, after, subscription.get, keepalive=keepalive, reread_when_idle=True)
            ) as batches:
                async for batch in batches:
                    yield batch
        finally:
            live.unsubscribe(run_id, subscription)
        return
    # Without Redis: new events come from the process's log follower.
    follower = log_follower()
    subscription = follower.subscribe(run_id)
    try:
        async with contextlib.aclosing(
            _replay_then_follow(
                run_id,
                after,
                subscription.get,
                keepalive=keepalive,
                replayed=lambda seq: follower.start_at(run_id, seq),
                reread_when_idle=False,
            )
        ) as batches:
            async for batch in batches:
                yield batch
    finally:
        follower.unsubscribe(run_id, subscription)


async def _replay_then_follow(
    run_id: str,
    after: int,
    receive: Receive,
    *,
    keepalive: float,
    reread_when_idle: bool,
    replayed: Callable[[int], None] | None = None,
) -> AsyncGenerator[list[dict[str, Any]] | None]:
    """Replay the log after `after`, then yield what `receive` brings, strictly in seq order,
    a batch at a time (never empty), until the final event; None on each idle keepalive interval.

    `receive(timeout)` gives the next batch of live events in seq order, None when idle for
    `timeout` seconds, or OVERFLOW (read the log again). `replayed(seq)` is told how far the
    replay went: everything up to the run's event_seq was committed when its page was read.
    """
    last, read_log = after, True
    while True:
        if read_log:
            page = await events_after(run_id, last)
            rows, ended = _up_to_final(page.events)
            if rows:
                last = rows[-1]["seq"]
                yield rows
            if ended:
                return
            if page.finished and not page.events:
                return  # its final event was at or before `after`
            if len(page.events) == PAGE:
                continue
            read_log = False
            if replayed is not None:
                # The follower hands this stream whatever commits after (if it follows the
                # run already, from an earlier point: duplicates are dropped below).
                replayed(min(last, page.event_seq))
        batch = await receive(keepalive)
        if batch is None:
            yield None
            read_log = reread_when_idle
            continue
        if batch is OVERFLOW:
            read_log = True
            continue
        live = [row for row in batch if row["seq"] > last]
        if live and live[0]["seq"] > last + 1:
            read_log = True  # a gap: fill it from the log, in order
            continue
        rows, ended = _up_to_final(live)
        if rows:
            last = rows[-1]["seq"]
            yield rows
        if ended:
            return
        if batch and batch[-1]["type"] in FINAL_EVENT_TYPES:
            return  # the run ended at or before `after`


def _up_to_final(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    """The rows up to and including a final event, and whether there was one."""
    for index, row in enumerate(rows):
        if row["type"] in FINAL_EVENT_TYPES:
            return rows[: index + 1], True
    return rows, False
