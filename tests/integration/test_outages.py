"""Outages and misconfiguration through the real harness: the broker down while runs are
posted, and a web process and a worker started with different SECRET_KEYs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.harness import ROOT, Harness
from tests.integration.servers import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.one_database]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def test_a_run_posted_while_the_broker_is_down_is_accepted_once_and_runs_when_it_is_back(tmp_path, redis_server):
    harness = Harness(
        tmp_path,
        REDIS_URL=redis_server.url,
        HARNESS_REQUEUE_AFTER_SECONDS="1",
    ).start()
    try:
        client = harness.client(harness.api_key("alice"))
        body = {"input": "What is 6 * 7?", "agent": "calculator", "model": "offline"}
        first = client.post("/api/runs", json=body).json()
        assert harness.wait_for(client, first["id"], ("succeeded",))["status"] == "succeeded"

        redis_server.stop()
        response = client.post("/api/runs", json=body)
        # Accepted and kept: one run, queued, in JSON, not an HTML 500 a client would retry.
        assert response.status_code == 202, response.text
        run = response.json()
        assert run["status"] == "queued"
        assert len(client.get("/api/runs").json()["items"]) == 2
        assert any('"run queue unavailable' in line and run["id"] in line for line in harness.log_lines())

        redis_server.start()  # the same port, empty: the task was never written
        time.sleep(1.1)
        reaped = harness.manage("reap_runs")
        assert run["id"] in reaped.stdout + reaped.stderr, reaped
        done = harness.wait_for(client, run["id"], ("succeeded", "failed"), timeout=60)
        assert done["status"] == "succeeded", done
        assert len(client.get("/api/runs").json()["items"]) == 2
    finally:
        harness.close()


def test_a_redis_that_stops_answering_costs_a_request_seconds_and_a_stream_no_event(tmp_path, redis_server):
    """Redis frozen (SIGSTOP: connections open, nothing answered) with a run in flight and its
    stream open: the stream still gets every event in order from the log, a new stream starts,
    a new run is accepted within seconds and stays queued, and it runs once Redis is back."""
    harness = Harness(
        tmp_path,
        REDIS_URL=redis_server.url,
        HARNESS_REQUEUE_AFTER_SECONDS="1",
        HARNESS_OFFLINE_DELAY_MS="150",  # a few seconds a run: frozen mid-run
    ).start()
    try:
        client = harness.client(harness.api_key("alice"))
        body = {"input": "What is 6 * 7?", "agent": "calculator", "model": "offline"}
        run = client.post("/api/runs", json=body).json()
        got: list[dict[str, object]] = []
        with httpx.stream(
            "GET", f"{harness.base_url}/api/runs/{run['id']}/events", headers=client.headers, timeout=60
        ) as response:
            events = sse_events(response)
            got.append(next(events))
            got.append(next(events))  # live over Redis: the run is under way
            redis_server.freeze()
            frozen = time.monotonic()
            got.extend(events)
        assert [event["seq"] for event in got] == list(range(1, len(got) + 1))
        assert got[-1]["type"] == "run.succeeded" and time.monotonic() - frozen < 30

        started = time.monotonic()
        with httpx.stream(
            "GET", f"{harness.base_url}/api/runs/{run['id']}/events", headers=client.headers, timeout=30
        ) as response:
            again = list(sse_events(response))
        assert [event["seq"] for event in again] == [event["seq"] for event in got]
        assert time.monotonic() - started < 10

        started = time.monotonic()
        response = client.post("/api/runs", json=body, timeout=30)
        assert response.status_code == 202, response.text
        assert time.monotonic() - started < 10
        queued = response.json()
        assert queued["status"] == "queued"
        assert any('"run queue unavailable' in line and queued["id"] in line for line in harness.log_lines())

        redis_server.thaw()
        time.sleep(1.1)
        harness.manage("reap_runs")
        assert harness.wait_for(client, queued["id"], ("succeeded", "failed"), timeout=60)["status"] == "succeeded"
    finally:
        redis_server.thaw()
        harness.close()


def sse_events(response: httpx.Response) -> Iterator[dict[str, object]]:
    """The events of a text/event-stream response, as they arrive."""
    assert response.headers["content-type"].startswith("text/event-stream")
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield json.loads(line[len("data: ") :])


def test_a_worker_with_another_secret_key_still_runs_runs_and_readiness_says_why(tmp_path):
    harness = Harness(tmp_path)  # migrated; its web and worker are started apart below
    web_env = dict(harness.env)
    worker_env = dict(harness.env, SECRET_KEY="a-different-secret-key-for-the-worker-0123")
    log = (tmp_path / "processes.log").open("ab")
    web = subprocess.Popen(
        [sys.executable, "manage.py", "runharness", "--no-worker", "--port", str(harness.port)],
        cwd=ROOT,
        env=web_env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "runworker"],
        cwd=ROOT,
        env=worker_env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        ready: httpx.Response | None = None
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"{harness.base_url}/health/ready", timeout=2)
                if ready.json()["checks"]["workers"]["live"]:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        assert ready is not None
        workers = ready.json()["checks"]["workers"]
        assert ready.status_code == 503 and workers["live"] == 1 and workers["ok"] is False
        assert "different SECRET_KEY" in workers["error"]
        assert "a-different-secret-key" not in ready.text

        # Runs do not depend on the key: the worker takes this one at once (not after the
        # reaper's ~2 minutes).
        client = harness.client(harness.api_key("alice"))
        run = client.post("/api/runs", json={"input": "2+2", "agent": "calculator", "model": "offline"}).json()
        assert harness.wait_for(client, run["id"], ("succeeded", "failed"), timeout=20)["status"] == "succeeded"
    finally:
        for process in (web, worker):
            try:
                os.killpg(process.pid, signal.SIGINT)
                process.wait(timeout=40)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        log.close()
        harness.close()
