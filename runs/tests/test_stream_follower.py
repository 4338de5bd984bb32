"""The log follower (no channel layer): many streams of a run share one read of the log.

In-process, on the test database: streams are `run_event_stream` generators on one event
loop, and events are appended as the worker appends them (runs.events)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import override_settings

from common.db import db_call
from runs import events, streams
from runs.models import Run, Session

pytestmark = pytest.mark.django_db(transaction=True)


def _queued_run() -> str:
    owner = User.objects.create(username="alice")
    run = Run.objects.create(
        owner=owner, session=Session.objects.create(owner=owner), agent="calculator", model="offline", input="1+1"
    )
    events.events_append(run_id=run.id, events=[(events.QUEUED, {"status": "queued"})])
    return run.id


async def _append(run_id: str, *kinds: str) -> None:
    await db_call(
        events.events_append, run_id=run_id, events=[(kind, {"n": index}) for index, kind in enumerate(kinds)]
    )


async def _until(condition: Callable[[], bool], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def _next_event(stream: AsyncIterator[dict[str, Any] | None]) -> dict[str, Any]:
    while True:
        event = await anext(stream)
        if event is not None:
            return event


def _counting(monkeypatch: pytest.MonkeyPatch, name: str) -> list[Any]:
    calls: list[Any] = []
    original = getattr(streams, name)

    def counted(*args: Any) -> Any:
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(streams, name, counted)
    return calls


def _run(coroutine: Callable[[], Awaitable[None]]) -> None:
    with override_settings(HARNESS_STREAM_POLL_SECONDS=0.02, HARNESS_STREAM_KEEPALIVE_SECONDS=30):
        asyncio.run(asyncio.wait_for(coroutine(), 30))  # a stream that hangs fails the test


def test_thirty_streams_get_every_event_from_one_follower(monkeypatch):
    run_id = _queued_run()
    replays = _counting(monkeypatch, "_events_after")
    follows = _counting(monkeypatch, "_events_of_runs")

    async def scenario() -> None:
        # One resumes from beyond the log's end (a client's `after` is not checked against
        # it): it must not hold the others back, and it ends with the run.
        beyond = streams.run_event_stream(run_id, after=1000)
        beyond_task = asyncio.create_task(_drain(beyond))
        await _until(lambda: len(replays) == 1)
        opened = [streams.run_event_stream(run_id) for _ in range(30)]
        for stream in opened:
            assert (await _next_event(stream))["type"] == events.QUEUED
        follower = streams.log_follower()
        assert list(follower.runs) == [run_id] and len(follower.runs[run_id].subscriptions) == 31
        await _append(run_id, events.STARTED, events.TEXT_DELTA)
        await _append(run_id, events.TEXT_DELTA)
        await _append(run_id, events.MESSAGE, events.SUCCEEDED)
        for stream in opened:
            got = [event async for event in stream if event is not None]
            assert [event["seq"] for event in got] == [2, 3, 4, 5, 6]
            assert got[-1]["type"] == events.SUCCEEDED
        assert await asyncio.wait_for(beyond_task, 10) == []
        # Every stream was released, and the follower ended with them.
        assert follower.runs == {}
        await _until(lambda: follower.task is not None and follower.task.done())

    _run(scenario)
    # One replay per stream; everything after came from the follower's reads, each of
    # which covered the run for all 31 streams at once.
    assert len(replays) == 31
    assert follows and all(len(cursors) == 1 for (cursors,) in follows)


async def _drain(stream: AsyncIterator[dict[str, Any] | None]) -> list[dict[str, Any]]:
    return [event async for event in stream if event is not None]


async def _collect(stream: AsyncIterator[dict[str, Any] | None], into: list[dict[str, Any]]) -> None:
    async for event in stream:
        if event is not None:
            into.append(event)


def test_a_stream_that_falls_far_behind_rereads_the_log_in_order(monkeypatch, settings):
    settings.HARNESS_STREAM_MAX_PENDING_BATCHES = 2
    run_id = _queued_run()
    replays = _counting(monkeypatch, "_events_after")

    async def scenario() -> None:
        slow = streams.run_event_stream(run_id)
        assert (await _next_event(slow))["seq"] == 1
        slow_next = asyncio.create_task(_next_event(slow))  # takes one more, then reads nothing
        prompt: list[dict[str, Any]] = []
        prompt_task = asyncio.create_task(_collect(streams.run_event_stream(run_id), prompt))
        await _until(lambda: len(prompt) == 1)
        follower = streams.log_follower()
        followed = follower.runs[run_id]
        for seq in range(2, 7):  # five batches, each handed out before the next is written
            await _append(run_id, events.TEXT_DELTA)
            await _until(functools.partial(lambda seq: followed.cursor == seq and len(prompt) == seq, seq))
        assert (await slow_next)["seq"] == 2
        # The slow stream's inbox kept no more than the limit: it was told to re-read instead.
        assert [list(inbox.batches) for inbox in followed.subscriptions if inbox.batches] == [[streams.OVERFLOW]]
        await _append(run_id, events.SUCCEEDED)
        rest = await _drain(slow)
        assert [event["seq"] for event in rest] == [3, 4, 5, 6, 7]
        assert rest[-1]["type"] == events.SUCCEEDED
        await asyncio.wait_for(prompt_task, 10)
        assert [event["seq"] for event in prompt] == [1, 2, 3, 4, 5, 6, 7]

    _run(scenario)
    assert len(replays) == 3  # the two streams' replays, and the slow one's re-read


def test_a_gap_in_what_the_follower_hands_out_is_filled_from_the_log(monkeypatch):
    run_id = _queued_run()
    replays = _counting(monkeypatch, "_events_after")
    original = streams._events_of_runs

    def missing_seq_2(cursors: Any) -> dict[str, list[dict[str, Any]]]:
        return {run: [event for event in found if event["seq"] != 2] for run, found in original(cursors).items()}

    monkeypatch.setattr(streams, "_events_of_runs", missing_seq_2)

    async def scenario() -> None:
        got: list[dict[str, Any]] = []
        task = asyncio.create_task(_collect(streams.run_event_stream(run_id), got))
        await _until(lambda: len(got) == 1)
        follower = streams.log_follower()
        await _until(lambda: follower.runs[run_id].cursor == 1)
        await _append(run_id, events.STARTED, events.TEXT_DELTA)  # 2 and 3: the follower hands out 3 only
        await _until(lambda: len(got) == 3)
        await _append(run_id, events.SUCCEEDED)
        await asyncio.wait_for(task, 10)
        assert [event["seq"] for event in got] == [1, 2, 3, 4]

    _run(scenario)
    assert len(replays) == 2  # the replay, and the read that filled the gap


def test_an_inbox_holds_exactly_the_pending_batch_limit(settings):
    settings.HARNESS_STREAM_MAX_PENDING_BATCHES = 4

    async def scenario() -> None:
        inbox = streams.Subscription()
        for seq in range(1, 5):
            inbox.put([{"seq": seq}])
        assert [batch[0]["seq"] for batch in inbox.batches] == [1, 2, 3, 4]  # at the limit: all kept
        inbox.put([{"seq": 5}])
        assert list(inbox.batches) == [streams.OVERFLOW]  # one over: re-read the log instead
        inbox.put([{"seq": 6}])
        assert list(inbox.batches) == [streams.OVERFLOW]  # and nothing more queues behind it
        assert await inbox.get(1) is streams.OVERFLOW

    asyncio.run(scenario())
