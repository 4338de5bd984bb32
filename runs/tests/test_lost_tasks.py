"""The reaper enqueues a queued run again when its task is no longer on the run queue (the broker
was down, or lost its data), however many other tasks the queue holds meanwhile."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import redis
from django.utils import timezone
from django_q.brokers.redis_broker import Redis

from conftest import make_principal, make_run, redis_reachable
from runs import services
from runs.models import Run

pytestmark = pytest.mark.django_db(transaction=True)  # a run is enqueued when its transaction commits

REDIS_URL = "redis://127.0.0.1:6379/3"


def task(run: Run) -> str:
    return f"{services.RUN_TASK_PREFIX}{run.pk}"


def queued_tasks() -> list[str]:
    broker = services.run_broker()
    return list(broker.get_connection().filter(key=broker.list_key).values_list("payload", flat=True))


def test_a_lost_run_is_enqueued_again_while_the_queue_holds_others(alice, settings):
    settings.HARNESS_REQUEUE_AFTER_SECONDS = 60
    waiting, lost, young = make_run(alice), make_run(alice), make_run(alice)
    services.run_broker().get_connection().filter(payload=task(lost)).delete()  # its task is gone
    services.run_broker().get_connection().filter(payload=task(young)).delete()
    old = timezone.now() - timedelta(seconds=120)
    Run.objects.filter(pk__in=[waiting.pk, lost.pk]).update(created_at=old)
    assert services.run_broker().queue_size() == 1  # the waiting run's task: the queue is not empty

    report = services.run_reap()

    assert report.reenqueued == [lost.pk]
    # The waiting run's task is there once, not twice; the young run's is not due yet.
    assert sorted(queued_tasks()) == sorted([task(waiting), task(lost)])
    assert services.run_reap().reenqueued == []  # and the next pass finds it on the queue


def test_an_owner_at_the_cap_has_its_queued_runs_left_to_its_workers(alice, settings):
    settings.HARNESS_REQUEUE_AFTER_SECONDS = 60
    settings.HARNESS_PRINCIPAL_MAX_INFLIGHT = 1
    bob = make_principal("bob")
    running, held, other = make_run(alice), make_run(alice), make_run(bob)
    assert services.run_claim(run_id=running.pk, worker_id="w:1") is not None
    services.run_broker().get_connection().all().delete()  # taken by workers, or lost
    Run.objects.filter(pk__in=[held.pk, other.pk]).update(created_at=timezone.now() - timedelta(seconds=120))

    # Alice is at her cap: her queued run may be held by a worker, so only bob's is enqueued.
    assert services.run_reap().reenqueued == [other.pk]
    Run.objects.filter(pk=running.pk).update(status=Run.Status.SUCCEEDED)
    assert services.run_reap().reenqueued == [held.pk]


def test_an_unreachable_queue_defers_the_search_to_a_later_pass(alice, settings, monkeypatch):
    settings.HARNESS_REQUEUE_AFTER_SECONDS = 60
    lost = make_run(alice)
    services.run_broker().get_connection().all().delete()
    Run.objects.filter(pk=lost.pk).update(created_at=timezone.now() - timedelta(seconds=120))

    def unreachable(broker, tasks):
        raise redis.ConnectionError("Connection refused")

    monkeypatch.setattr(services, "tasks_waiting", unreachable)
    assert services.run_reap().reenqueued == []
    monkeypatch.undo()
    assert services.run_reap().reenqueued == [lost.pk]


def test_tasks_are_found_on_a_redis_list():
    if not redis_reachable():
        pytest.skip("no Redis on 127.0.0.1:6379: the Redis path is not tested here (CI machines run one)")
    broker = Redis(list_key=f"lost-tasks-test-{uuid.uuid4().hex}")
    broker.connection = redis.Redis.from_url(REDIS_URL)
    try:
        for name in ("run:a", "run:b", "run:a"):
            broker.enqueue(name)
        assert services.tasks_waiting(broker, ["run:a", "run:c", "run:b"]) == {"run:a", "run:b"}
        assert services.tasks_waiting(broker, []) == set()

        class BeforeLpos:  # a Redis older than 6.0.6 answers LPOS with an error
            def lpos(self, *args: object) -> None:
                pass

            def execute(self) -> None:
                raise redis.ResponseError("unknown command 'LPOS'")

        connection = broker.connection
        broker.connection = type("Old", (), {"pipeline": lambda self, **_: BeforeLpos(), "lrange": connection.lrange})()
        assert services.tasks_waiting(broker, ["run:a", "run:c"]) == {"run:a"}
        broker.connection = connection
    finally:
        broker.delete_queue()
        broker.connection.close()
