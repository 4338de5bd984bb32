"""A web process's live follower: one Redis pub/sub connection for every stream it serves, one
subscription per run while a stream of it is open, against the real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
import uuid

import pytest
import redis

from conftest import redis_reachable
from runs.streams import OVERFLOW, BatchPublisher, LiveFollower, live_follower, publish
from runs.tests.conftest import REDIS_URL

pytestmark = pytest.mark.skipif(not redis_reachable(), reason="no Redis on 127.0.0.1:6379 (CI machines run one)")


def new_run_id() -> str:
    # Pub/sub channels are shared by everything on this Redis: ids of this test's own.
    return f"run_{uuid.uuid4().hex}"


def subscribers(follower: LiveFollower, run_id: str) -> int:
    """How many connections Redis has subscribed to the run's channel."""
    counts: list[tuple[bytes, int]] = redis.Redis.from_url(REDIS_URL).pubsub_numsub(follower.channel(run_id))  # type: ignore[assignment]
    return int(counts[0][1])


async def settled(condition, timeout: float = 5) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_streams_of_a_run_share_one_subscription_that_ends_with_the_last(redis_layer):
    run_id, other = new_run_id(), new_run_id()

    async def main() -> None:
        follower = live_follower()
        assert follower is not None and live_follower() is follower  # one per event loop
        first = await follower.subscribe(run_id)
        # Subscribed before it returns: nothing published from now on is missed.
        assert subscribers(follower, run_id) == 1
        second = await follower.subscribe(run_id)
        third = await follower.subscribe(other)
        assert subscribers(follower, run_id) == 1 and follower.subscribed == {
            follower.channel(run_id),
            follower.channel(other),
        }
        publisher = BatchPublisher.for_layer()
        assert publisher is not None
        try:
            # As the engine sends them: several runs' batches in one round trip, each in seq order.
            await publisher.send(
                [
                    (run_id, {"type": "run.events", "events": [{"seq": 3}, {"seq": 2}]}),
                    (other, {"type": "run.events", "events": [{"seq": 7}]}),
                    (run_id, {"type": "run.events", "events": [{"seq": 4}]}),
                ]
            )
            for inbox in (first, second):
                assert await inbox.get(5) == [{"seq": 2}, {"seq": 3}]
                assert await inbox.get(5) == [{"seq": 4}]
            assert await third.get(5) == [{"seq": 7}]
            # channels' own group_send (the web's path for other messages) reaches it too.
            await publish(run_id, {"type": "run.events", "events": [{"seq": 5}]})
            assert await first.get(5) == [{"seq": 5}]
            assert await first.get(0.2) is None  # nothing more: the idle tick
        finally:
            await publisher.close()
        follower.unsubscribe(run_id, first)
        await asyncio.sleep(0.1)
        assert subscribers(follower, run_id) == 1  # the second stream is still open
        follower.unsubscribe(run_id, second)
        follower.unsubscribe(other, third)
        await settled(lambda: not follower.subscribed)
        assert subscribers(follower, run_id) == 0 and subscribers(follower, other) == 0
        assert follower.runs == {}

    asyncio.run(main())


def test_a_stream_arriving_as_the_last_one_leaves_keeps_the_run_subscribed(redis_layer):
    run_id = new_run_id()

    async def main() -> None:
        follower = live_follower()
        assert follower is not None
        for _ in range(20):
            leaving = await follower.subscribe(run_id)
            follower.unsubscribe(run_id, leaving)  # its unsubscribe is still to be sent...
            arriving = await follower.subscribe(run_id)  # ...when the next stream comes
            await asyncio.sleep(0.02)
            assert subscribers(follower, run_id) == 1
            await publish(run_id, {"type": "run.events", "events": [{"seq": 1}]})
            assert await arriving.get(5) == [{"seq": 1}]
            follower.unsubscribe(run_id, arriving)
        await settled(lambda: not follower.subscribed)
        assert subscribers(follower, run_id) == 0

    asyncio.run(main())


def test_a_stream_far_behind_is_told_to_read_the_log(redis_layer, settings):
    settings.HARNESS_STREAM_MAX_PENDING_BATCHES = 3
    run_id = new_run_id()

    async def main() -> object:
        follower = live_follower()
        assert follower is not None
        inbox = await follower.subscribe(run_id)
        for seq in range(1, 6):
            await publish(run_id, {"type": "run.events", "events": [{"seq": seq}]})
        await settled(lambda: len(inbox.batches) == 1 and inbox.batches[0] is OVERFLOW)
        got = await inbox.get(1)
        follower.unsubscribe(run_id, inbox)
        return got

    assert asyncio.run(main()) is OVERFLOW


def test_a_redis_that_is_gone_leaves_streams_to_the_log_with_one_warning(redis_layer, caplog):
    redis_layer.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    caplog.set_level(logging.WARNING, logger="runs.streams")

    async def main() -> None:
        follower = live_follower()
        assert follower is not None
        inbox = await follower.subscribe(new_run_id())
        assert await inbox.get(0.1) is None  # idle: the stream re-reads the log on each tick
        await follower.subscribe(new_run_id())

    asyncio.run(main())
    warnings = [record for record in caplog.records if record.getMessage() == "stream live follow failed"]
    assert len(warnings) == 1 and warnings[0].error == "ConnectionError"


def test_without_redis_pub_sub_there_is_no_live_follower(settings):
    async def main() -> object:
        return live_follower()

    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    assert asyncio.run(main()) is None
    settings.CHANNEL_LAYERS = {}
    assert asyncio.run(main()) is None


@pytest.fixture
def silent_redis():
    """The URL of a Redis that takes connections and then says nothing (a network black hole);
    yields it and the connections it took."""
    silent = socket.create_server(("127.0.0.1", 0))
    silent.listen(64)
    silent.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                held.append(silent.accept()[0])  # kept open, never answered

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    yield f"redis://127.0.0.1:{silent.getsockname()[1]}/0", held
    stop.set()
    acceptor.join()
    for connection in held:
        connection.close()
    silent.close()


def test_a_redis_that_never_answers_holds_a_new_stream_no_longer_than_the_subscribe_wait(redis_layer, silent_redis):
    """A new stream on a silent Redis still starts within HARNESS_STREAM_SUBSCRIBE_WAIT_SECONDS,
    on the log's re-reads."""
    redis_layer.REDIS_URL, held = silent_redis
    redis_layer.HARNESS_STREAM_SUBSCRIBE_WAIT_SECONDS = 0.3

    async def main() -> list[float]:
        follower = live_follower()
        assert follower is not None
        took = []
        for _ in range(2):
            started = time.monotonic()
            inbox = await asyncio.wait_for(follower.subscribe(new_run_id()), 10)
            took.append(time.monotonic() - started)
            assert await inbox.get(0.05) is None  # idle: the stream re-reads the log on each tick
        return took

    took = asyncio.run(main())
    assert held, "the follower never connected"
    assert all(0.25 <= seconds < 1.0 for seconds in took), took


def test_a_publisher_on_a_silent_redis_gives_up_with_a_warning(redis_layer, silent_redis, caplog):
    """The run engine's publisher is not held for good by a Redis that says nothing: its batch
    fails after the socket timeout (the engine's backlog bounds what waits meanwhile)."""
    redis_layer.REDIS_URL, held = silent_redis
    caplog.set_level(logging.WARNING, logger="runs.streams")

    async def main() -> float:
        publisher = BatchPublisher.for_layer()
        assert publisher is not None
        started = time.monotonic()
        await asyncio.wait_for(publisher.send([(new_run_id(), {"type": "run.events", "events": [{"seq": 1}]})]), 30)
        return time.monotonic() - started

    took = asyncio.run(main())
    assert held and took < 10, took
    assert [record.error for record in caplog.records if record.getMessage() == "live publish failed"] == [
        "TimeoutError"
    ]


def test_a_stream_waits_for_its_subscription_at_most_the_subscribe_wait(redis_layer):
    """With Redis answering, a new stream starts once its run is subscribed (well within the wait)."""
    redis_layer.HARNESS_STREAM_SUBSCRIBE_WAIT_SECONDS = 5

    async def main() -> float:
        follower = live_follower()
        assert follower is not None
        run_id = new_run_id()
        started = time.monotonic()
        inbox = await follower.subscribe(run_id)
        took = time.monotonic() - started
        assert subscribers(follower, run_id) == 1
        follower.unsubscribe(run_id, inbox)
        return took

    assert asyncio.run(main()) < 1


def test_a_stream_that_leaves_while_waiting_for_its_subscription_leaves_nothing_behind(redis_layer, silent_redis):
    """A client gone while its stream waits on a silent Redis: its inbox and its run's place in
    what should be subscribed go with it."""
    redis_layer.REDIS_URL, _ = silent_redis
    redis_layer.HARNESS_STREAM_SUBSCRIBE_WAIT_SECONDS = 5

    async def main() -> LiveFollower:
        follower = live_follower()
        assert follower is not None
        waiting = asyncio.create_task(follower.subscribe(new_run_id()))
        await asyncio.sleep(0.2)
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        return follower

    assert asyncio.run(main()).runs == {}


def test_streams_arriving_on_a_silent_redis_share_the_syncs_that_wait(redis_layer, silent_redis):
    """However many streams come and go while Redis says nothing, at most one sync waits for the
    one in progress: the follower's tasks do not pile up."""
    redis_layer.REDIS_URL, _ = silent_redis
    redis_layer.HARNESS_STREAM_SUBSCRIBE_WAIT_SECONDS = 0.05

    async def main() -> int:
        follower = live_follower()
        assert follower is not None
        for _ in range(30):
            run_id = new_run_id()
            inbox = await follower.subscribe(run_id)
            follower.unsubscribe(run_id, inbox)
        return len(follower.pending)

    assert asyncio.run(main()) <= 2


def test_a_stream_of_a_run_already_subscribed_starts_at_once(redis_layer, silent_redis):
    """A second stream of a run whose subscription Redis confirmed waits for nothing, even with
    Redis silent since."""
    redis_layer.HARNESS_STREAM_SUBSCRIBE_WAIT_SECONDS = 2

    async def main() -> float:
        follower = live_follower()
        assert follower is not None
        run_id = new_run_id()
        first = await follower.subscribe(run_id)
        live = follower.runs[follower.channel(run_id)]
        assert live.confirmed.is_set()
        await follower.lock.acquire()  # a sync stuck on a silent Redis holds the lock
        try:
            started = time.monotonic()
            second = await follower.subscribe(run_id)
            took = time.monotonic() - started
        finally:
            follower.lock.release()
        follower.unsubscribe(run_id, second)
        follower.unsubscribe(run_id, first)
        return took

    assert asyncio.run(main()) < 0.5


def test_a_subscribe_wait_of_zero_starts_streams_at_once_and_still_subscribes(redis_layer, silent_redis):
    """HARNESS_STREAM_SUBSCRIBE_WAIT_SECONDS=0: a new stream waits for nothing, even on a Redis
    that never answers (it relies on the log for what is published before its run is
    subscribed); on a Redis that answers, the subscription still follows and live batches
    reach the stream."""
    redis_layer.HARNESS_STREAM_SUBSCRIBE_WAIT_SECONDS = 0
    real_redis = redis_layer.REDIS_URL

    async def on_silent_redis() -> float:
        follower = live_follower()
        assert follower is not None
        started = time.monotonic()
        inbox = await follower.subscribe(new_run_id())
        took = time.monotonic() - started
        assert await inbox.get(0.05) is None
        return took

    redis_layer.REDIS_URL, held = silent_redis
    assert asyncio.run(on_silent_redis()) < 0.1
    assert held, "the follower never connected"

    async def on_redis() -> None:
        follower = live_follower()
        assert follower is not None
        run_id = new_run_id()
        inbox = await follower.subscribe(run_id)
        await settled(lambda: follower.runs[follower.channel(run_id)].confirmed.is_set())
        assert subscribers(follower, run_id) == 1
        publisher = BatchPublisher.for_layer()
        assert publisher is not None
        try:
            await publisher.send([(run_id, {"type": "run.events", "events": [{"seq": 1}]})])
            assert await inbox.get(5) == [{"seq": 1}]
        finally:
            await publisher.close()
        follower.unsubscribe(run_id, inbox)
        await settled(lambda: not follower.subscribed)

    redis_layer.REDIS_URL = real_redis
    asyncio.run(on_redis())
