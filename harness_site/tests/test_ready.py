"""GET /health/ready: the readiness probe (database, broker, object store, a live worker)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from execution.beats import worker_beat, worker_gone
from execution.models import WorkerBeat

pytestmark = pytest.mark.django_db(transaction=True)


def test_not_ready_without_a_live_worker_then_ready_with_one():
    client = Client()
    response = client.get("/health/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["checks"]["workers"]["ok"] is False and body["checks"]["workers"]["live"] == 0
    assert body["checks"]["database"]["ok"] and body["checks"]["broker"]["ok"]
    assert body["checks"]["object_store"] == {
        "ok": True,
        "kind": "local files",
        "ms": body["checks"]["object_store"]["ms"],
    }

    worker_beat(worker_id="host:1:abc", concurrency=100, inflight=3)
    body = client.get("/health/ready").json()
    assert body["status"] == "ready"
    assert body["checks"]["workers"] | {"ms": 0} == {
        "ok": True,
        "live": 1,
        "runs_in_flight": 3,
        "capacity": 100,
        "within_seconds": 15.0,
        "ms": 0,
    }

    # A worker that stopped beating (killed) stops counting after three intervals.
    WorkerBeat.objects.update(seen_at=timezone.now() - timedelta(seconds=16))
    assert client.get("/health/ready").status_code == 503
    worker_beat(worker_id="host:1:abc", concurrency=100, inflight=0)
    assert client.get("/health/ready").status_code == 200
    worker_gone(worker_id="host:1:abc")
    assert client.get("/health/ready").status_code == 503
    # /health keeps its exact contract: liveness needs the database only.
    assert client.get("/health").status_code == 200
