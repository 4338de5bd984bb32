"""The run engine: many runs at once on one asyncio event loop per worker process.

How django-q2 feeds it: `run_enqueue` puts each run's id on its own broker queue
(HARNESS_RUN_QUEUE: a list in Redis with REDIS_URL, rows of django-q2's ORM queue
otherwise), unsigned, so web and worker need not share a SECRET_KEY to pass runs. The engine's feeder takes a task from that queue only while it has a
free slot (HARNESS_WORKER_CONCURRENCY), so a full worker takes nothing and queued
runs wait in the broker for whichever worker frees a slot first. Scheduled jobs
(reaper, retention, nightly eval) stay on django-q2's ordinary cluster.

Per process, not per run:
- one feeder (a thread blocked on the broker, so the loop never is);
- one watcher thread that, every HARNESS_CANCEL_CHECK_SECONDS, reads the status of
  every run in flight in one query (cancel, reaped) and, every third of the lease,
  renews every lease in one UPDATE. It is a thread so leases stay alive while the
  loop is busy; it stops renewing a run past its timeout, so a wedged run is reaped;
- a few database threads (HARNESS_WORKER_DB_THREADS) for claims, event batches and
  outcomes (a pooled connection is given back after each call: common.db);
- a thread pool for synchronous tools (HARNESS_WORKER_THREADS), each call giving its
  database connection back when it ends.
A run's owner may have at most HARNESS_PRINCIPAL_MAX_INFLIGHT runs running over all
workers; a run over that cap is held (not in a slot) and claimed once the owner has
room, so one principal's burst cannot take every slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import signal
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection

from common.db import db_call, db_call_sync
from execution.beats import other_keys, worker_beat, worker_gone
from execution.catalog import catalog_publish, registry_version
from execution.executor import execute_claimed
from execution.tracing import tracing_install
from runs import services
from runs.models import Run
from runs.streams import BatchPublisher, publish, set_publisher

logger = logging.getLogger(__name__)

# Runs held back by the principal cap, per worker, as a multiple of its slots: past
# that the feeder waits too.
HELD_PER_SLOT = 10
HELD_RETRY_SECONDS = 0.5
# Live event batches sent to Redis in one round trip, at most.
PUBLISH_BATCH = 100


def new_worker_id() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class InFlight:
    """A run this worker holds: its claim token (the run row's worker_id) and how to stop it."""

    run_id: str
    token: str
    deadline: float  # time.monotonic(): past it the watcher stops renewing the lease
    owner_id: int | None = None
    finishing: bool = False  # its outcome is being written: the watcher leaves it alone
    result: Any = None  # the SDK's RunResultStreaming, once started
    stopped: str | None = None  # why it was stopped from outside


class ToolThreads(ThreadPoolExecutor):
    """The loop's default executor (the SDK runs sync tools with asyncio.to_thread):
    each call gives its database connection back to the pool when it ends."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return super().submit(_then_release_connection, fn, *args, **kwargs)


def _then_release_connection[R](fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    try:
        return fn(*args, **kwargs)
    finally:
        close_old_connections()


class Engine:
    def __init__(self, *, concurrency: int | None = None, principal_cap: int | None = None) -> None:
        self.worker_id = new_worker_id()
        # Whether this process's agents are published (execution.catalog); retried on the beat until so.
        self.published = False
        self.concurrency = concurrency or settings.HARNESS_WORKER_CONCURRENCY
        self.principal_cap = principal_cap or settings.HARNESS_PRINCIPAL_MAX_INFLIGHT
        self.inflight: dict[str, InFlight] = {}
        self.lock = threading.Lock()
        self.busy = 0  # slots taken (claiming or running)
        self.held: dict[int, deque[str]] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.claims = itertools.count(1)
        self.db_threads = ThreadPoolExecutor(settings.HARNESS_WORKER_DB_THREADS, thread_name_prefix="harness-db")
        self.stop_watching = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.beating = False  # serving workers say they are up (execution.beats); run_once does not
        self.room: asyncio.Event | None = None

    # --- plumbing -------------------------------------------------------------------

    async def db[R](self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
        """Run an ORM function on one of this worker's database threads."""
        return await db_call(fn, *args, executor=self.db_threads, **kwargs)

    def _start_loop_services(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop.set_default_executor(
            ToolThreads(max_workers=settings.HARNESS_WORKER_THREADS, thread_name_prefix="harness-tool")
        )
        self.room = asyncio.Event()
        self.room.set()
        tracing_install()
        # Bounded: a Redis that stops answering holds the publisher, not the worker's memory.
        self.publish_queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(
            settings.HARNESS_WORKER_PUBLISH_BACKLOG
        )
        self.publish_dropping = False
        self.batch_publisher = BatchPublisher.for_layer()
        self.publisher = asyncio.create_task(self._publisher())
        if settings.CHANNEL_LAYERS:
            set_publisher(self._publish_threadsafe)
        threading.Thread(target=self._watch, name="harness-watcher", daemon=True).start()

    async def _stop_loop_services(self) -> None:
        self.stop_watching.set()
        set_publisher(None)
        # What is still to publish, the batch being sent included, for up to a second.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.publish_queue.join(), timeout=1)
        self.publisher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.publisher
        if self.batch_publisher is not None:
            await self.batch_publisher.close()
        await asyncio.get_running_loop().run_in_executor(None, self.db_threads.shutdown)

    def _publish_threadsafe(self, run_id: str, message: dict[str, Any]) -> None:
        """Live events go out on the loop's own channel-layer connection, in commit order."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._publish_later, run_id, message)

    def _publish_later(self, run_id: str, message: dict[str, Any]) -> None:
        """Queue a batch for Redis; with HARNESS_WORKER_PUBLISH_BACKLOG already waiting, drop it:
        live events are a shortcut, every stream reads what it missed from the log."""
        queue = self.publish_queue
        if self.publish_dropping and queue.qsize() <= queue.maxsize // 2:
            self.publish_dropping = False  # drained (to half): a new streak of drops warns again
        try:
            queue.put_nowait((run_id, message))
        except asyncio.QueueFull:
            if not self.publish_dropping:
                logger.warning("live publish backlog full", extra={"limit": queue.maxsize})
                self.publish_dropping = True

    async def _publisher(self) -> None:
        """What is queued when it wakes goes out in one round trip (commit order kept)."""
        queue = self.publish_queue
        while True:
            batch = [await queue.get()]
            while not queue.empty() and len(batch) < PUBLISH_BATCH:
                batch.append(queue.get_nowait())
            try:
                if self.batch_publisher is not None:
                    await self.batch_publisher.send(batch)
                else:
                    for run_id, message in batch:
                        await publish(run_id, message)
            except Exception as exc:  # never the end of live events: the log stays the truth
                logger.warning("live publish failed", extra={"events": len(batch), "error": type(exc).__name__})
            finally:
                for _ in batch:
                    queue.task_done()

    # --- one run ------------------------------------------------------------------

    async def _execute(self, run_id: str, replay: list[dict[str, Any]] | None = None) -> str | None:
        """Claim and execute one run in a slot the caller has taken."""
        handle = InFlight(
            run_id=run_id,
            token=f"{self.worker_id}/{next(self.claims)}",
            deadline=time.monotonic() + settings.HARNESS_RUN_TIMEOUT_SECONDS + settings.HARNESS_RUN_LEASE_SECONDS,
        )
        try:
            claim = await self.db(
                services.run_claim, run_id=run_id, worker_id=handle.token, principal_cap=self.principal_cap
            )
        except services.PrincipalBusy as busy:
            held = self.held.setdefault(busy.owner_id, deque())
            if run_id not in held:  # the reaper may enqueue a held run again
                held.append(run_id)
            return None
        if claim is None:
            logger.info("run not claimed: already taken, cancelled or finished", extra={"run_id": run_id})
            return None
        handle.owner_id = claim.run.owner_id
        with self.lock:
            self.inflight[run_id] = handle
        try:
            return await execute_claimed(self, handle, claim, replay)
        finally:
            with self.lock:
                self.inflight.pop(run_id, None)

    async def run_once(self, run_id: str, *, replay: list[dict[str, Any]] | None = None) -> str | None:
        """Execute one run to its end with this engine's watcher (a loop of its own)."""
        self._start_loop_services()
        try:
            return await self._execute(run_id, replay)
        finally:
            await self._stop_loop_services()

    # --- serving: the feeder, slots, held runs ----------------------------------------

    async def serve(self, stop: asyncio.Event) -> None:
        """Take runs from the broker while there is room, until `stop` is set; then give
        running runs HARNESS_WORKER_STOP_GRACE_SECONDS to finish."""
        self.beating = True
        self._start_loop_services()
        feeder = asyncio.create_task(self._feed())
        holder = asyncio.create_task(self._retry_held())
        for task in (feeder, holder):
            task.add_done_callback(_log_crash)
        try:  # up before it says so: /health/ready counts it from here
            # The agents it runs, for the web to validate runs against (execution.catalog).
            await self.db(catalog_publish, self.worker_id)
            self.published = True
            await self.db(
                worker_beat,
                worker_id=self.worker_id,
                concurrency=self.concurrency,
                inflight=0,
                registry_version=registry_version(),
            )
            others = await self.db(other_keys, than=self.worker_id)
        except DatabaseError as exc:
            logger.warning("heartbeat not written", extra={"error": type(exc).__name__})
        else:
            if others:
                logger.error(
                    "SECRET_KEY differs from that of other live workers: give every process the same SECRET_KEY "
                    "(artifact links and jobs signed by one are refused by the others)",
                    extra={"workers": others[:5]},
                )
        logger.info(
            "run engine ready",
            extra={
                "worker_id": self.worker_id,
                "concurrency": self.concurrency,
                "principal_cap": self.principal_cap,
                "event_loop": type(asyncio.get_running_loop()).__module__.partition(".")[0],
            },
        )
        await stop.wait()
        feeder.cancel()
        holder.cancel()
        held = [run_id for queue in self.held.values() for run_id in queue]
        self.held.clear()
        for run_id in held:  # back on the queue for another worker (claims make a repeat harmless)
            await self.db(services.run_enqueue, run_id)
        if self.tasks:
            logger.info("worker stopping: waiting for runs in flight", extra={"runs": len(self.tasks)})
            await asyncio.wait(set(self.tasks), timeout=settings.HARNESS_WORKER_STOP_GRACE_SECONDS)
        left = [task for task in self.tasks if not task.done()]
        for task in left:
            task.cancel()
        if left:
            logger.warning("worker stopped with runs in flight; the reaper will take them", extra={"runs": len(left)})
            await asyncio.wait(left, timeout=5)
        try:  # before the database threads stop
            await self.db(worker_gone, worker_id=self.worker_id)
        except DatabaseError:
            pass  # its beat goes stale instead
        await self._stop_loop_services()

    def _update_room(self) -> None:
        if self.room is None:
            return
        held = sum(len(queue) for queue in self.held.values())
        if self.busy < self.concurrency and held < self.concurrency * HELD_PER_SLOT:
            self.room.set()
        else:
            self.room.clear()

    def _launch(self, run_id: str) -> None:
        self.busy += 1
        self._update_room()
        task = asyncio.create_task(self._slot(run_id))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _slot(self, run_id: str) -> None:
        try:
            await self._execute(run_id)
        except Exception:
            logger.exception("run engine: a run's slot ended with an error", extra={"run_id": run_id})
        finally:
            self.busy -= 1
            self._update_room()

    async def _feed(self) -> None:
        room = self.room
        if room is None:
            raise RuntimeError("the engine's loop services are not started")
        loop = asyncio.get_running_loop()
        feed_thread = ThreadPoolExecutor(1, thread_name_prefix="harness-feed")
        try:
            # The database broker touches the database as it is made: on the feed thread.
            broker = await loop.run_in_executor(feed_thread, services.run_broker)
            while True:
                await room.wait()
                try:
                    tasks = await loop.run_in_executor(feed_thread, broker.dequeue)
                except Exception as exc:
                    logger.warning("run queue unavailable", extra={"error": type(exc).__name__})
                    await asyncio.sleep(1)
                    continue
                for ack_id, payload in tasks or []:
                    if ack_id is not None:
                        await loop.run_in_executor(feed_thread, broker.acknowledge, ack_id)
                    run_id = _task_run_id(payload)
                    if run_id is not None:
                        self._launch(run_id)
        finally:
            feed_thread.submit(_close_this_threads_connection)
            feed_thread.shutdown(wait=False, cancel_futures=False)

    async def _retry_held(self) -> None:
        """Runs held by the principal cap: try each owner's oldest again when there is a slot."""
        while True:
            await asyncio.sleep(HELD_RETRY_SECONDS)
            for owner_id in list(self.held):
                queue = self.held[owner_id]
                if not queue:
                    del self.held[owner_id]
                    continue
                if self.busy >= self.concurrency:
                    break
                if self._owner_running(owner_id) >= self.principal_cap:
                    continue  # this worker alone fills the owner's cap: no query needed
                self._launch(queue.popleft())
            self._update_room()

    def _owner_running(self, owner_id: int) -> int:
        with self.lock:
            return sum(1 for handle in self.inflight.values() if handle.owner_id == owner_id)

    # --- the watcher thread -----------------------------------------------------------

    def _watch(self) -> None:
        """Cancels and lease renewals for every run in flight, from one thread."""
        renew_every = settings.HARNESS_RUN_LEASE_SECONDS / 3
        next_renewal = time.monotonic() + renew_every
        next_beat = time.monotonic()
        while not self.stop_watching.wait(settings.HARNESS_CANCEL_CHECK_SECONDS):
            if self.beating and time.monotonic() >= next_beat:
                next_beat = time.monotonic() + settings.HARNESS_WORKER_BEAT_SECONDS
                try:
                    if not self.published:
                        db_call_sync(catalog_publish, self.worker_id)
                        self.published = True
                    db_call_sync(
                        worker_beat,
                        worker_id=self.worker_id,
                        concurrency=self.concurrency,
                        inflight=len(self.inflight),
                        registry_version=registry_version(),
                    )
                except DatabaseError as exc:
                    logger.warning("watcher: heartbeat not written", extra={"error": type(exc).__name__})
            with self.lock:
                handles = [handle for handle in self.inflight.values() if not handle.stopped and not handle.finishing]
            if not handles:
                next_renewal = min(next_renewal, time.monotonic() + renew_every)
                continue
            try:
                states = db_call_sync(services.run_states, run_ids=[handle.run_id for handle in handles])
                for handle in handles:
                    status, holder = states.get(handle.run_id, ("deleted", ""))
                    if status != Run.Status.RUNNING or holder != handle.token:
                        self._stop_threadsafe(handle, status if status != Run.Status.RUNNING else "taken over")
                now = time.monotonic()
                if now >= next_renewal:
                    tokens = [handle.token for handle in handles if now < handle.deadline]
                    db_call_sync(services.run_heartbeat_many, worker_ids=tokens)
                    next_renewal = now + renew_every
            except DatabaseError as exc:
                logger.warning("watcher: database unavailable", extra={"error": type(exc).__name__})
        connection.close()

    def _stop_threadsafe(self, handle: InFlight, why: str) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._stop, handle, why)

    def _stop(self, handle: InFlight, why: str) -> None:
        if handle.stopped:
            return
        handle.stopped = why
        logger.info("run stopped from outside", extra={"run_id": handle.run_id, "status": why})
        if handle.result is not None:
            handle.result.cancel(mode="immediate")


def _close_this_threads_connection() -> None:
    connection.close()  # looked up on the calling thread: Django's connections are per thread


def _log_crash(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("run engine: %s stopped", task.get_name(), exc_info=task.exception())


RUN_ID = re.compile(r"run_[0-9A-Za-z]{1,64}")


def _task_run_id(payload: Any) -> str | None:
    """The run id a task carries: `run:<id>`; a task in the signed form of earlier versions
    is still read."""
    text = payload.decode(errors="replace") if isinstance(payload, bytes) else str(payload)
    if text.startswith(services.RUN_TASK_PREFIX):
        run_id = text.removeprefix(services.RUN_TASK_PREFIX)
        if RUN_ID.fullmatch(run_id):
            return run_id
    else:
        from django_q.signing import SignedPackage

        try:
            return str(SignedPackage.loads(payload)["args"][0])
        except Exception:  # noqa: S110 (said below)
            pass
    logger.warning("run queue: a task that is not a run was dropped", extra={"task": text[:80]})
    return None


def serve_forever() -> None:
    """One worker process: the engine until SIGTERM or SIGINT."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await Engine().serve(stop)

    loop_run(main())


def loop_run[R](main: Coroutine[Any, Any, R]) -> R:
    """`asyncio.run` on the event loop HARNESS_WORKER_EVENT_LOOP names."""
    if settings.HARNESS_WORKER_EVENT_LOOP == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
