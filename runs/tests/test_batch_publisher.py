"""The run engine's live events go to Redis a batch per round trip, as the channel layer would send them."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from channels.layers import get_channel_layer

from conftest import redis_reachable
from runs.streams import BatchPublisher, group_name

pytestmark = pytest.mark.skipif(not redis_reachable(), reason="no Redis on 127.0.0.1:6379 (CI machines run one)")


def test_a_batch_reaches_each_run_s_followers_in_commit_order(redis_layer):
    # Pub/sub channels are shared by everything on this Redis: ids of this test's own.
    run_a, run_b = f"run_{uuid.uuid4().hex}", f"run_{uuid.uuid4().hex}"

    async def main() -> tuple[list[int], list[int]]:
        layer = get_channel_layer()
        channels = {}
        for run_id in (run_a, run_b):
            channels[run_id] = await layer.new_channel()
            await layer.group_add(group_name(run_id), channels[run_id])
        publisher = BatchPublisher.for_layer()
        assert publisher is not None
        batch = [(run_a, {"type": "run.events", "events": [{"seq": seq}]}) for seq in (2, 3)]
        batch.insert(1, (run_b, {"type": "run.events", "events": [{"seq": 7}]}))
        try:
            await publisher.send(batch)
            got_a = [await asyncio.wait_for(layer.receive(channels[run_a]), 5) for _ in range(2)]
            got_b = [await asyncio.wait_for(layer.receive(channels[run_b]), 5)]
        finally:
            await publisher.close()
            for run_id, channel in channels.items():
                await layer.group_discard(group_name(run_id), channel)
        return [m["events"][0]["seq"] for m in got_a], [m["events"][0]["seq"] for m in got_b]

    assert asyncio.run(main()) == ([2, 3], [7])


def test_a_redis_that_is_gone_costs_a_warning_not_the_publisher(redis_layer, caplog):
    redis_layer.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there

    async def main() -> None:
        publisher = BatchPublisher.for_layer()
        assert publisher is not None
        await publisher.send([("run_x", {"type": "run.events", "events": []})])
        await publisher.close()

    asyncio.run(main())
    assert "live publish failed" in caplog.text


def test_a_message_the_layer_cannot_serialize_is_skipped_and_the_rest_go(redis_layer, caplog):
    run_id = f"run_{uuid.uuid4().hex}"

    async def main() -> list[int]:
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(group_name(run_id), channel)
        publisher = BatchPublisher.for_layer()
        assert publisher is not None
        too_big = {"type": "run.events", "events": [{"seq": 3, "data": {"n": 2**64}}]}  # msgpack holds < 2**64
        batch = [(run_id, {"type": "run.events", "events": [{"seq": seq}]}) for seq in (2, 4)]
        try:
            await publisher.send([batch[0], (run_id, too_big), batch[1]])
            got = [await asyncio.wait_for(layer.receive(channel), 5) for _ in range(2)]
        finally:
            await publisher.close()
            await layer.group_discard(group_name(run_id), channel)
        return [m["events"][0]["seq"] for m in got]

    assert asyncio.run(main()) == [2, 4]  # a follower fills the gap (3) from the log
    [record] = caplog.records
    assert record.getMessage() == "live publish failed" and record.error == "OverflowError"


def test_other_layers_publish_message_by_message(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    assert BatchPublisher.for_layer() is None
    settings.CHANNEL_LAYERS = {}
    assert BatchPublisher.for_layer() is None
