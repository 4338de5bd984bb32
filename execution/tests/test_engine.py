"""The run engine in-process: many runs on one loop, backpressure, the principal cap,
cancels, and sync tools that block. Real database, real SDK, the ORM broker queue."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
from django.db import close_old_connections
from django.test import override_settings

from audit.models import AuditLog
from audit.services import Actor
from conftest import make_principal, make_run, settings_import
from execution.engine import Engine, loop_run
from runs import registry, services
from runs.models import Run

pytestmark = pytest.mark.django_db(transaction=True)

# The calculator's offline answer streams 7 words: 7 × this many ms per run.
SLOW_WORD_MS = 300


@contextmanager
def serving(**engine_options: Any) -> Iterator[Engine]:
    """An engine serving the run queue on a thread of its own, stopped on exit."""
    engine = Engine(**engine_options)
    ready = threading.Event()
    stop: dict[str, Any] = {}

    def main() -> None:
        async def serve() -> None:
            stop["event"] = asyncio.Event()
            stop["loop"] = asyncio.get_running_loop()
            ready.set()
            await engine.serve(stop["event"])

        loop_run(serve())  # the loop HARNESS_WORKER_EVENT_LOOP names, as a worker process runs it
        close_old_connections()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield engine
    finally:
        stop["loop"].call_soon_threadsafe(stop["event"].set)
        thread.join(30)


def wait_until(predicate: Callable[[], bool], timeout: float = 30, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(every)


def all_finished(runs: list[Run]) -> bool:
    return not Run.objects.filter(pk__in=[run.pk for run in runs], status__in=Run.ACTIVE_STATUSES).exists()


def sample_running(runs: list[Run], samples: list[int], owner: Any = None) -> bool:
    running = Run.objects.filter(pk__in=[run.pk for run in runs], status=Run.Status.RUNNING)
    if owner is not None:
        running = running.filter(owner=owner)
    samples.append(running.count())
    return all_finished(runs)


def assert_gap_free_with_one_final_event(run: Run) -> None:
    events = list(run.events.order_by("seq").values_list("seq", "type"))
    assert [seq for seq, _ in events] == list(range(1, len(events) + 1))
    finals = [kind for _, kind in events if kind in ("run.succeeded", "run.failed", "run.cancelled")]
    assert finals == [events[-1][1]]


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
def test_twenty_slow_runs_run_at_once_on_one_loop_and_a_cancel_touches_only_its_run(alice, event_loop):
    runs = [make_run(alice, input=f"What is {n} + 1?") for n in range(20)]
    samples: list[int] = []
    loops: list[str] = []
    with (
        override_settings(HARNESS_OFFLINE_DELAY_MS=SLOW_WORD_MS, HARNESS_WORKER_EVENT_LOOP=event_loop),
        serving(concurrency=20) as engine,
    ):
        wait_until(lambda: Run.objects.filter(status=Run.Status.RUNNING).count() == 20, timeout=20)
        loops.append(type(engine.loop).__module__.partition(".")[0])
        victim = runs[7]
        services.run_cancel(run=victim, actor=Actor.system("tests"))
        wait_until(lambda: sample_running(runs, samples), timeout=60)
    assert loops == [event_loop]
    assert max(samples) <= 20
    for run in runs:
        run.refresh_from_db()
        assert_gap_free_with_one_final_event(run)
        if run.pk == victim.pk:
            assert run.status == "cancelled"
            assert not run.events.filter(seq__gt=run.event_seq).exists()
        else:
            assert run.status == "succeeded", (run.pk, run.error)
            assert AuditLog.objects.filter(run_id=run.pk, action="run.succeeded").count() == 1


@override_settings(HARNESS_OFFLINE_DELAY_MS=100)
def test_a_full_worker_takes_no_more_runs_and_the_rest_wait_queued(alice):
    runs = [make_run(alice) for _ in range(9)]
    samples: list[int] = []
    with serving(concurrency=3):
        wait_until(lambda: sample_running(runs, samples), timeout=60, every=0.02)
    assert max(samples) == 3
    assert {run.status for run in Run.objects.filter(pk__in=[r.pk for r in runs])} == {"succeeded"}


@override_settings(HARNESS_OFFLINE_DELAY_MS=SLOW_WORD_MS)
def test_one_principals_burst_does_not_starve_another(alice):
    bob = make_principal("bob")
    burst = [make_run(alice) for _ in range(8)]
    late = [make_run(bob) for _ in range(2)]
    alice_running: list[int] = []
    with serving(concurrency=10, principal_cap=2):
        # Bob's runs, queued after all of Alice's, start while Alice's burst still waits.
        wait_until(lambda: Run.objects.filter(pk__in=[r.pk for r in late], status="running").count() == 2)
        assert Run.objects.filter(pk__in=[r.pk for r in burst], status="queued").count() >= 4
        wait_until(lambda: sample_running(burst + late, alice_running, owner=alice.user), timeout=60, every=0.02)
    assert max(alice_running) == 2
    assert set(Run.objects.filter(pk__in=[r.pk for r in burst + late]).values_list("status", flat=True)) == {
        "succeeded"
    }


def nap(seconds: float) -> str:
    """Sleep, the way a blocking synchronous tool does."""
    time.sleep(seconds)
    return f"slept {seconds}"


SLEEPER = registry.AgentSpec(
    name="sleeper",
    description="Calls a blocking tool.",
    instructions="Call nap.",
    tools=(nap,),
    offline_plan=lambda text: registry.OfflineToolCall("nap", {"seconds": 2}),
    offline_reply=lambda text, output, turn: output or "no nap",
)


def test_a_blocking_sync_tool_does_not_delay_another_run_on_the_same_loop(alice, monkeypatch):
    monkeypatch.setitem(registry.AGENTS, "sleeper", replace(SLEEPER))
    sleeper = make_run(alice, agent="sleeper", input="nap please")
    with serving(concurrency=4):
        wait_until(lambda: Run.objects.filter(pk=sleeper.pk, status="running").exists())
        time.sleep(0.3)  # the nap has begun
        quick = make_run(alice)
        wait_until(lambda: Run.objects.filter(pk=quick.pk, status="succeeded").exists(), timeout=10)
        assert Run.objects.get(pk=sleeper.pk).status == "running"
        wait_until(lambda: all_finished([sleeper]), timeout=20)
    sleeper.refresh_from_db()
    quick.refresh_from_db()
    assert sleeper.status == "succeeded" and sleeper.output == "slept 2.0"
    assert quick.finished_at < sleeper.finished_at
    assert (quick.finished_at - quick.created_at).total_seconds() < 1.5, "the quick run waited for the nap"


@override_settings(HARNESS_OFFLINE_DELAY_MS=SLOW_WORD_MS)
def test_a_held_run_enqueued_again_is_held_once(alice):
    runs = [make_run(alice) for _ in range(2)]
    with serving(concurrency=3, principal_cap=1) as engine:
        wait_until(lambda: Run.objects.filter(status="running").count() == 1)
        wait_until(lambda: sum(len(held) for held in engine.held.values()) == 1)
        held = next(iter(engine.held.values()))[0]
        services.run_enqueue(held)  # as the reaper does for a queued run it cannot find on the queue
        wait_until(lambda: services.run_broker().queue_size() == 0)
        time.sleep(0.3)  # the repeat was taken and claimed against the cap
        assert [list(queue) for queue in engine.held.values()] == [[held]]
    assert services.run_broker().queue_size() == 1  # given back once at the stop
    assert sorted(Run.objects.filter(pk__in=[r.pk for r in runs]).values_list("status", flat=True)) == [
        "queued",
        "succeeded",
    ]


@override_settings(HARNESS_OFFLINE_DELAY_MS=SLOW_WORD_MS)
def test_a_stopping_worker_puts_the_runs_it_held_back_on_the_queue(alice):
    runs = [make_run(alice) for _ in range(3)]
    with serving(concurrency=3, principal_cap=1):
        wait_until(lambda: Run.objects.filter(status="running").count() == 1)
        time.sleep(0.3)  # the other two were taken from the queue and held
        assert services.run_broker().queue_size() == 0
    # The stop let the running one finish and gave the held ones back.
    assert services.run_broker().queue_size() == 2
    assert sorted(Run.objects.filter(pk__in=[r.pk for r in runs]).values_list("status", flat=True)) == [
        "queued",
        "queued",
        "succeeded",
    ]
    with serving(concurrency=3, principal_cap=1):
        wait_until(lambda: all_finished(runs), timeout=30)
    assert set(Run.objects.filter(pk__in=[r.pk for r in runs]).values_list("status", flat=True)) == {"succeeded"}


def test_the_watcher_reads_every_run_it_holds_in_one_statement(alice):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    runs = [make_run(alice) for _ in range(60)]  # more than the driver caches statements for
    Run.objects.filter(pk=runs[0].pk).update(status=Run.Status.RUNNING, worker_id="w/1")
    asked = [run.pk for run in runs] + ["run_gone"]
    with CaptureQueriesContext(connection) as queries:
        states = services.run_states(run_ids=asked)
    assert len(queries) == 1
    assert states[runs[0].pk] == (Run.Status.RUNNING, "w/1")
    assert all(states[run.pk] == (Run.Status.QUEUED, "") for run in runs[1:])
    assert "run_gone" not in states and len(states) == 60
    assert services.run_states(run_ids=[]) == {}


def test_live_publishing_outlives_a_failed_batch_and_a_stop_waits_for_the_one_being_sent(caplog):
    sent: list[str] = []

    class Publisher:
        async def send(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
            if batch[0][1]["n"] == "bad":
                raise RuntimeError("not sendable")
            await asyncio.sleep(0.3)  # still on its way when the worker stops
            sent.extend(message["n"] for _, message in batch)

        async def close(self) -> None:
            sent.append("closed")

    async def main() -> None:
        engine = Engine()
        engine._start_loop_services()
        engine.batch_publisher = Publisher()  # type: ignore[assignment]
        engine._publish_threadsafe("run_a", {"n": "bad"})
        await asyncio.sleep(0.05)
        engine._publish_threadsafe("run_a", {"n": "1"})
        engine._publish_threadsafe("run_b", {"n": "2"})
        await asyncio.sleep(0.05)
        await engine._stop_loop_services()

    asyncio.run(main())
    assert sent == ["1", "2", "closed"]
    assert "live publish failed" in caplog.text


def test_live_publishing_holds_at_most_the_backlog_while_redis_is_stuck(settings, caplog):
    """A Redis that stops answering holds the engine's publisher: what waits for it is bounded
    (HARNESS_WORKER_PUBLISH_BACKLOG batches; past it batches are dropped, streams read them from
    the log), with one warning, and publishing carries on once Redis answers again."""
    settings.HARNESS_WORKER_PUBLISH_BACKLOG = 5
    sent: list[str] = []

    class Publisher:
        def __init__(self) -> None:
            self.answering = asyncio.Event()

        async def send(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
            await self.answering.wait()
            sent.extend(message["n"] for _, message in batch)

        async def close(self) -> None:
            pass

    async def main() -> None:
        engine = Engine()
        engine._start_loop_services()
        publisher = engine.batch_publisher = Publisher()  # type: ignore[assignment]
        engine._publish_threadsafe("run_a", {"n": "0"})
        await asyncio.sleep(0.05)  # the publisher took it, and waits on Redis
        for n in range(1, 21):
            engine._publish_threadsafe("run_a", {"n": str(n)})
        await asyncio.sleep(0.05)
        assert engine.publish_queue.qsize() == 5
        publisher.answering.set()
        await asyncio.sleep(0.05)
        engine._publish_threadsafe("run_a", {"n": "21"})
        await asyncio.sleep(0.05)
        await engine._stop_loop_services()

    asyncio.run(main())
    assert sent == ["0", "1", "2", "3", "4", "5", "21"]
    dropped = [record for record in caplog.records if record.getMessage() == "live publish backlog full"]
    assert len(dropped) == 1 and dropped[0].limit == 5


def test_each_streak_of_dropped_live_batches_warns_once_even_with_a_backlog_of_one(settings, caplog):
    settings.HARNESS_WORKER_PUBLISH_BACKLOG = 1

    async def main() -> None:
        engine = Engine()
        engine._start_loop_services()
        engine.publisher.cancel()  # nothing takes from the queue: Redis is stuck
        for streak in range(2):
            for n in range(3):
                engine._publish_later("run_a", {"n": f"{streak}.{n}"})
            assert engine.publish_queue.qsize() == 1
            engine.publish_queue.get_nowait()  # Redis took what waited
            engine.publish_queue.task_done()
            engine._publish_later("run_a", {"n": f"{streak}.after"})  # room again: the streak ends
            engine.publish_queue.get_nowait()
            engine.publish_queue.task_done()
        await engine._stop_loop_services()

    asyncio.run(main())
    assert [record.getMessage() for record in caplog.records].count("live publish backlog full") == 2


@pytest.mark.django_db(transaction=False)
def test_an_unknown_event_loop_fails_at_boot_naming_the_choices():
    done = settings_import(HARNESS_WORKER_EVENT_LOOP="tokio")
    assert done.returncode != 0, done.stderr
    assert "HARNESS_WORKER_EVENT_LOOP: expected 'uvloop' or 'asyncio', got 'tokio'" in done.stderr, done.stderr


@pytest.mark.django_db(transaction=False)
def test_a_redis_prefix_names_the_queues_and_a_bad_one_fails_at_boot():
    from django.conf import settings

    assert settings.HARNESS_RUN_QUEUE == f"{settings.HARNESS_REDIS_PREFIX}.runs"
    assert settings.Q_CLUSTER["name"] == settings.HARNESS_REDIS_PREFIX
    for good in ("staging-eu.2", "x" * 40):
        assert settings_import(HARNESS_REDIS_PREFIX=good).returncode == 0, good
    for bad in ("", "has space", "-leading", "x" * 41, "a:b"):
        done = settings_import(HARNESS_REDIS_PREFIX=bad)
        assert done.returncode != 0 and "HARNESS_REDIS_PREFIX: 1 to 40 letters" in done.stderr, (bad, done.stderr)
