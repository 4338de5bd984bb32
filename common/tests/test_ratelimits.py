"""The per-key limits' counters at their edges, on the local backends and (when one runs) on Redis."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any, cast

import pytest
from django.test import override_settings

from accounts.services import apikey_create
from audit.services import Actor
from common import ratelimits
from common.ratelimits import (
    LocalSlots,
    RateLimited,
    RedisSlots,
    SlotHeld,
    SlotStore,
    StreamLimitReached,
    api_rate_count,
    stream_slot_take,
)
from conftest import redis_reachable

REDIS_URL = "redis://127.0.0.1:6379/3"
WINDOW_START = 1_800_000_000 - 1_800_000_000 % 60  # a clock minute's first second


@pytest.fixture(params=["local", "redis"])
def cache_backend(request: Any) -> Iterator[str]:
    """The default cache as the web process has it: its memory, or Redis (a prefix of its own,
    so no counter is shared with another test run)."""
    if request.param == "local":
        with override_settings(
            CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "t"}}
        ):
            yield request.param
        return
    if not redis_reachable():
        pytest.skip("no Redis on 127.0.0.1:6379")
    caches = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": f"test-{uuid.uuid4().hex}",
        }
    }
    with override_settings(CACHES=caches):
        yield request.param


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The limiter's clock, held at now[0]."""
    now = [WINDOW_START + 10.4]
    monkeypatch.setattr(ratelimits, "clock", lambda: now[0])
    return now


def key_id() -> str:
    return f"key_{uuid.uuid4().hex}"


@override_settings(HARNESS_API_RATE_LIMIT=3)
def test_exactly_the_limit_passes_in_a_minute_then_it_waits_for_the_next(cache_backend, frozen):
    key = key_id()
    for _ in range(3):
        api_rate_count(key_id=key)
    with pytest.raises(RateLimited) as refused:
        api_rate_count(key_id=key)
    assert refused.value.retry_after == 50  # 60 - 10.4, rounded up
    assert "3 requests per minute" in refused.value.message and "HARNESS_API_RATE_LIMIT" in refused.value.message
    frozen[0] = WINDOW_START + 59.8
    with pytest.raises(RateLimited) as refused:
        api_rate_count(key_id=key)
    assert refused.value.retry_after == 1  # never 0
    frozen[0] = WINDOW_START + 60
    for _ in range(3):
        api_rate_count(key_id=key)
    with pytest.raises(RateLimited):
        api_rate_count(key_id=key)


@override_settings(HARNESS_API_RATE_LIMIT=1)
def test_keys_are_counted_apart(cache_backend, frozen):
    first, second = key_id(), key_id()
    api_rate_count(key_id=first)
    with pytest.raises(RateLimited):
        api_rate_count(key_id=first)
    api_rate_count(key_id=second)


@override_settings(HARNESS_API_RATE_LIMIT=0)
def test_zero_is_no_limit(cache_backend, frozen):
    key = key_id()
    for _ in range(1000):
        api_rate_count(key_id=key)


@override_settings(HARNESS_API_RATE_LIMIT=50)
def test_concurrent_requests_never_pass_more_than_the_limit(cache_backend, frozen):
    key, passed, lock = key_id(), [], threading.Lock()
    start = threading.Barrier(16)

    def client() -> None:
        start.wait()
        for _ in range(10):
            try:
                api_rate_count(key_id=key)
            except RateLimited:
                continue
            with lock:
                passed.append(1)

    threads = [threading.Thread(target=client) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(passed) == 50


# --- Through the API -----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # async operations read the key on another thread
@override_settings(HARNESS_API_RATE_LIMIT=2)
def test_the_api_answers_429_with_retry_after_past_a_keys_limit(api, alice, outsider, frozen):
    for _ in range(5):
        assert api.get("/api/runs", who=None).status_code == 401
        assert api.client.get("/api/runs", headers={"Authorization": "Bearer hk_forged"}).status_code == 401
    assert api.get("/api/runs", who=alice).status_code == 200  # sync operation
    assert api.get("/api/runs/run_missing", who=alice).status_code == 404  # async operation
    for path in ("/api/runs", "/api/runs/run_missing"):
        refused = api.get(path, who=alice)
        assert refused.status_code == 429
        assert refused["Retry-After"] == "50"
        assert "HARNESS_API_RATE_LIMIT" in refused.json()["detail"]
    assert (
        api.post("/api/runs", {"input": "1+1", "agent": "calculator", "model": "offline"}, who=alice).status_code == 429
    )
    # Another key of the same user, and anyone else, is counted apart.
    _, second_key = apikey_create(user=alice.user, actor=Actor.system("tests"))
    headers = {"Authorization": f"Bearer {second_key}"}
    assert api.client.get("/api/runs", headers=headers).status_code == 200
    assert api.get("/api/runs", who=outsider).status_code == 200
    assert api.get("/api/runs/run_missing", who=outsider).status_code == 404
    frozen[0] += 60
    assert api.get("/api/runs", who=alice).status_code == 200


# --- Open streams --------------------------------------------------------------------


@pytest.fixture(params=["local", "redis"])
def store(request: Any) -> SlotStore:
    if request.param == "local":
        return LocalSlots()
    if not redis_reachable():
        pytest.skip("no Redis on 127.0.0.1:6379")
    return RedisSlots(REDIS_URL)


async def _closed(store: SlotStore) -> None:
    if isinstance(store, RedisSlots):
        await store._client().aclose()


def test_a_key_takes_at_most_its_cap_and_a_dead_streams_slot_expires(store):
    async def scenario() -> None:
        key, now = key_id(), 1000.0
        assert await store.take(key, "a", cap=2, now=now)
        assert await store.take(key, "b", cap=2, now=now)
        assert not await store.take(key, "c", cap=2, now=now)
        assert await store.take(key_id(), "c", cap=2, now=now)  # another key
        await store.release(key, "a")
        await store.release(key, "a")  # twice is harmless
        assert await store.take(key, "c", cap=2, now=now)
        assert not await store.take(key, "d", cap=2, now=now)
        # "b" stays refreshed; "c" belongs to a process that died and is pruned once it expires.
        await store.refresh(key, "b", now=now + 40)
        assert not await store.take(key, "d", cap=2, now=now + ratelimits.STREAM_SLOT_TTL_SECONDS - 1)
        assert await store.take(key, "d", cap=2, now=now + ratelimits.STREAM_SLOT_TTL_SECONDS)
        assert not await store.take(key, "e", cap=2, now=now + ratelimits.STREAM_SLOT_TTL_SECONDS)
        await _closed(store)

    asyncio.run(scenario())


def test_concurrent_takes_never_pass_the_cap(store):
    async def scenario() -> None:
        key = key_id()
        taken = await asyncio.gather(*(store.take(key, f"m{n}", cap=5, now=1000.0) for n in range(40)))
        assert sum(taken) == 5
        await _closed(store)

    asyncio.run(scenario())


@override_settings(HARNESS_MAX_STREAMS_PER_KEY=2, REDIS_URL="")
def test_stream_slots_are_given_back_however_the_stream_ends():
    async def chunks() -> AsyncIterator[str]:
        yield "a"
        yield "b"

    async def scenario() -> None:
        key = key_id()
        first = await stream_slot_take(key_id=key)
        second = await stream_slot_take(key_id=key)
        with pytest.raises(StreamLimitReached) as refused:
            await stream_slot_take(key_id=key)
        assert refused.value.retry_after >= 1 and "HARNESS_MAX_STREAMS_PER_KEY" in refused.value.message
        # A body sent to its end gives its slot back.
        assert [chunk async for chunk in SlotHeld(chunks(), first)] == ["a", "b"]
        assert first.released
        # A response closed before its body started gives it back too.
        SlotHeld(chunks(), second).close()
        await asyncio.sleep(0.05)
        assert second.released
        third = await stream_slot_take(key_id=key)
        fourth = await stream_slot_take(key_id=key)
        with pytest.raises(StreamLimitReached):
            await stream_slot_take(key_id=key)
        # A body cancelled mid-stream (the client went away) gives it back.
        body = cast(AsyncGenerator[str], SlotHeld(chunks(), third).__aiter__())
        assert await anext(body) == "a"
        await body.aclose()
        assert third.released
        await fourth.release()
        # Streams without a key (staff sessions) hold nothing.
        for _ in range(5):
            assert (await stream_slot_take(key_id=None)).released

    asyncio.run(scenario())


def test_a_slot_is_given_back_even_when_the_stream_ending_it_is_cancelled(store):
    """A stream ends (its final event) and its client leaves at that moment: the task giving the
    slot back is cancelled midway. The slot is given back all the same, once."""

    class Slow:
        def __init__(self, inner: SlotStore) -> None:
            self.inner, self.releasing, self.go, self.releases = inner, asyncio.Event(), asyncio.Event(), 0

        async def take(self, key_id: str, member: str, *, cap: int, now: float) -> bool:
            return await self.inner.take(key_id, member, cap=cap, now=now)

        async def refresh(self, key_id: str, member: str, *, now: float) -> None:
            await self.inner.refresh(key_id, member, now=now)

        async def release(self, key_id: str, member: str) -> None:
            self.releasing.set()
            await self.go.wait()
            self.releases += 1
            await self.inner.release(key_id, member)

    async def scenario() -> None:
        key, slow = key_id(), Slow(store)
        assert await slow.take(key, "m", cap=1, now=ratelimits.clock())
        slot = ratelimits.StreamSlot(slow, key, "m")
        ending = asyncio.create_task(slot.release())
        await slow.releasing.wait()
        ending.cancel()  # the stream's task, torn down as its client leaves
        with pytest.raises(asyncio.CancelledError):
            await ending
        slot.release_soon()  # the response's closer asks too
        assert not await store.take(key, "other", cap=1, now=ratelimits.clock())  # still held meanwhile
        slow.go.set()
        await slot.release()
        assert slot.released and slow.releases == 1
        assert await store.take(key, "other", cap=1, now=ratelimits.clock())
        await _closed(store)

    asyncio.run(scenario())


@override_settings(HARNESS_MAX_STREAMS_PER_KEY=0, REDIS_URL="")
def test_a_zero_cap_holds_nothing():
    async def scenario() -> None:
        key = key_id()
        for _ in range(50):
            await stream_slot_take(key_id=key)

    asyncio.run(scenario())
