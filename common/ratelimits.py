"""Limits per API key: requests per minute and open streams.

Both are shared by every web process through Redis when REDIS_URL is set, and kept in
the process otherwise (SQLite and development: one web process).

Requests: a fixed one-minute window per key, counted with an atomic increment in the
default cache, so concurrent requests never pass more than the limit in a window.
(django-ninja's throttles read a list of timestamps and write it back, which lets
concurrent requests through, and run synchronously on the event loop in async
operations; the count here happens where the key is looked up instead.)

Streams: each open stream holds a slot, a member of its key's set with an expiry. The
stream pushes the expiry forward while it is open and removes the member when it ends,
however it ends; a process that dies leaves members that expire within
STREAM_SLOT_TTL_SECONDS, and taking a slot prunes expired members first, so a crash never
blocks a key for longer than that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from typing import Protocol

import redis.asyncio
from django.conf import settings
from django.core.cache import cache
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 60
# A slot not refreshed for this long belongs to a stream that is gone (its process died).
STREAM_SLOT_TTL_SECONDS = 60
# What a 429 for too many open streams tells clients to wait: a slot frees when a stream ends.
STREAM_RETRY_AFTER_SECONDS = 5

# The clock, apart so that tests can hold it still.
clock = time.time


class RateLimited(Exception):
    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class StreamLimitReached(RateLimited):
    pass


def _count(key: str) -> int:
    try:
        return cache.incr(key)
    except ValueError:
        # The window's first request. `add` is atomic too: of two first requests one adds
        # and the other increments. The entry outlives its window, so no increment ever
        # lands on an expired one.
        if cache.add(key, 1, timeout=2 * WINDOW_SECONDS):
            return 1
        return cache.incr(key)


def api_rate_count(*, key_id: str) -> None:
    """Count one request of this API key; raise RateLimited past HARNESS_API_RATE_LIMIT in this minute."""
    limit = settings.HARNESS_API_RATE_LIMIT
    if not limit:
        return
    now = clock()
    window = int(now // WINDOW_SECONDS)
    try:
        count = _count(f"ratelimit:{key_id}:{window}")
    except RedisError as exc:
        # A limiter that cannot count lets requests through rather than take the API down.
        logger.warning("rate limit not counted", extra={"error": type(exc).__name__})
        return
    if count > limit:
        retry_after = max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))
        raise RateLimited(
            f"rate limit: over {limit} requests per minute for this API key (HARNESS_API_RATE_LIMIT); "
            f"retry after {retry_after} s",
            retry_after=retry_after,
        )


class SlotStore(Protocol):
    async def take(self, key_id: str, member: str, *, cap: int, now: float) -> bool: ...
    async def refresh(self, key_id: str, member: str, *, now: float) -> None: ...
    async def release(self, key_id: str, member: str) -> None: ...


class LocalSlots:
    """This process's open streams, per key: {member: expiry}."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: dict[str, dict[str, float]] = {}

    async def take(self, key_id: str, member: str, *, cap: int, now: float) -> bool:
        with self._lock:
            held = self._slots.setdefault(key_id, {})
            for expired in [name for name, expiry in held.items() if expiry <= now]:
                del held[expired]
            if len(held) >= cap:
                return False
            held[member] = now + STREAM_SLOT_TTL_SECONDS
            return True

    async def refresh(self, key_id: str, member: str, *, now: float) -> None:
        with self._lock:
            self._slots.setdefault(key_id, {})[member] = now + STREAM_SLOT_TTL_SECONDS

    async def release(self, key_id: str, member: str) -> None:
        with self._lock:
            held = self._slots.get(key_id, {})
            held.pop(member, None)
            if not held:
                self._slots.pop(key_id, None)


# Prune, count and add in one step: two processes never both take the last slot.
_TAKE_SCRIPT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


class RedisSlots:
    """Open streams of every web process, per key: a sorted set of members scored by expiry."""

    def __init__(self, url: str) -> None:
        self.url = url
        # redis.asyncio connections belong to the event loop that opened them.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis] = (
            weakref.WeakKeyDictionary()
        )

    def _client(self) -> redis.asyncio.Redis:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            timeout = settings.HARNESS_REDIS_TIMEOUT_SECONDS
            client = redis.asyncio.Redis.from_url(self.url, socket_connect_timeout=timeout, socket_timeout=timeout)
            self._clients[loop] = client
        return client

    @staticmethod
    def key(key_id: str) -> str:
        return f"{settings.HARNESS_REDIS_PREFIX}:streams:{key_id}"

    async def take(self, key_id: str, member: str, *, cap: int, now: float) -> bool:
        expiry = now + STREAM_SLOT_TTL_SECONDS
        taken = await self._client().eval(  # type: ignore[misc]  # redis-py types eval for both clients at once
            _TAKE_SCRIPT, 1, self.key(key_id), now, cap, expiry, member, STREAM_SLOT_TTL_SECONDS * 2
        )
        return bool(taken)

    async def refresh(self, key_id: str, member: str, *, now: float) -> None:
        async with self._client().pipeline(transaction=False) as pipe:
            pipe.zadd(self.key(key_id), {member: now + STREAM_SLOT_TTL_SECONDS})
            pipe.expire(self.key(key_id), STREAM_SLOT_TTL_SECONDS * 2)
            await pipe.execute()

    async def release(self, key_id: str, member: str) -> None:
        await self._client().zrem(self.key(key_id), member)


_stores: dict[str, SlotStore] = {}


def slot_store() -> SlotStore:
    url = settings.REDIS_URL
    store = _stores.get(url)
    if store is None:
        store = _stores[url] = RedisSlots(url) if url else LocalSlots()
    return store


_pending: set[asyncio.Task[None]] = set()


class StreamSlot:
    """One open stream's slot. `release` is idempotent; call it whenever the stream ends.
    Without a store it holds nothing (no key, no cap, or a store that could not be reached)."""

    def __init__(self, store: SlotStore | None = None, key_id: str = "", member: str = "") -> None:
        self.store, self.key_id, self.member = store, key_id, member
        self.released = store is None
        self._loop = asyncio.get_running_loop()
        self._refresher = None if store is None else self._loop.create_task(self._refresh_while_open(store))
        self._giving_back: asyncio.Task[None] | None = None

    async def _refresh_while_open(self, store: SlotStore) -> None:
        while True:
            await asyncio.sleep(STREAM_SLOT_TTL_SECONDS / 3)
            try:
                await store.refresh(self.key_id, self.member, now=clock())
            except RedisError as exc:
                logger.warning("stream slot not refreshed", extra={"error": type(exc).__name__})

    async def release(self) -> None:
        """Give the slot back, once whoever asks. The work is a task of its own: a stream torn
        down while it ends (its task cancelled as the client leaves) still gives it back."""
        if self.released or self.store is None or self._refresher is None:
            return
        if self._giving_back is None:
            self._giving_back = self._loop.create_task(self._give_back(self.store, self._refresher))
            _pending.add(self._giving_back)
            self._giving_back.add_done_callback(_pending.discard)
        await asyncio.shield(self._giving_back)

    async def _give_back(self, store: SlotStore, refresher: asyncio.Task[None]) -> None:
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher
        try:
            await store.release(self.key_id, self.member)
        except RedisError as exc:
            # The member expires on its own within STREAM_SLOT_TTL_SECONDS.
            logger.warning("stream slot not released", extra={"error": type(exc).__name__})
        finally:
            self.released = True

    def release_soon(self) -> None:
        """`release` from synchronous code on any thread (a response's closer)."""
        if self.released:
            return

        def schedule() -> None:
            task = self._loop.create_task(self.release())
            _pending.add(task)
            task.add_done_callback(_pending.discard)

        with contextlib.suppress(RuntimeError):  # the loop is closed: the member expires on its own
            self._loop.call_soon_threadsafe(schedule)


async def stream_slot_take(*, key_id: str | None) -> StreamSlot:
    """A slot for one open stream of this API key; raise StreamLimitReached at HARNESS_MAX_STREAMS_PER_KEY.

    A stream without a key (a staff session) or with the cap off holds nothing.
    """
    cap = settings.HARNESS_MAX_STREAMS_PER_KEY
    if not cap or key_id is None:
        return StreamSlot()
    store, member = slot_store(), uuid.uuid4().hex
    try:
        taken = await store.take(key_id, member, cap=cap, now=clock())
    except RedisError as exc:
        logger.warning("stream slot not counted", extra={"error": type(exc).__name__})
        return StreamSlot()
    if not taken:
        raise StreamLimitReached(
            f"too many open streams for this API key: at most {cap} (HARNESS_MAX_STREAMS_PER_KEY)",
            retry_after=STREAM_RETRY_AFTER_SECONDS,
        )
    return StreamSlot(store, key_id, member)


class SlotHeld[T]:
    """An SSE body that holds `slot` while it is sent and gives it back when it ends, and also
    when the response is closed before its body ever started (Django calls `close`)."""

    def __init__(self, body: AsyncIterator[T], slot: StreamSlot) -> None:
        self.body, self.slot = body, slot

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        try:
            async for chunk in self.body:
                yield chunk
        finally:
            await self.slot.release()

    def close(self) -> None:
        self.slot.release_soon()
