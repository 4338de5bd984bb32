"""The run engine as operators run it: real runworker processes, real clients."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import psutil
import pytest

from tests.integration.harness import POSTGRES, ROOT, Harness

pytestmark = pytest.mark.integration


def engine_processes(harness: Harness) -> list[psutil.Process]:
    assert harness.process is not None
    tree = psutil.Process(harness.process.pid).children(recursive=True)
    return [proc for proc in tree if "runengine" in " ".join(proc.cmdline())]


def statuses(client: httpx.Client, ids: list[str]) -> dict[str, str]:
    return {run_id: client.get(f"/api/runs/{run_id}").json()["status"] for run_id in ids}


def test_a_killed_worker_leaves_no_run_running(tmp_path):
    """kill -9 of a worker process mid-flight: its runs are retried by the reaper (attempts
    remain) on the worker started in its place, and none is left running."""
    harness = Harness(
        tmp_path,
        HARNESS_WORKERS="1",
        HARNESS_WORKER_CONCURRENCY="20",
        HARNESS_OFFLINE_DELAY_MS="500",
        HARNESS_RUN_LEASE_SECONDS="2",
        HARNESS_RUN_MAX_ATTEMPTS="2",
    ).start()
    try:
        key = harness.api_key("alice")
        with harness.client(key) as client:
            ids = [
                client.post("/api/runs", json={"input": f"What is {n} * 3?", "agent": "calculator", "model": "offline"})
                .raise_for_status()
                .json()["id"]
                for n in range(10)
            ]
            deadline = time.monotonic() + 30
            while list(statuses(client, ids).values()).count("running") < 10:
                assert time.monotonic() < deadline, statuses(client, ids)
                time.sleep(0.1)
            [engine] = engine_processes(harness)
            engine.kill()  # SIGKILL: no cleanup code runs
            engine.wait(10)
            time.sleep(3)  # every lease runs out
            reaped = harness.manage("reap_runs").stdout
            assert "requeued" in reaped.lower() or "10" in reaped, reaped
            deadline = time.monotonic() + 60
            while set(statuses(client, ids).values()) - {"succeeded", "failed"}:
                assert time.monotonic() < deadline, statuses(client, ids)
                time.sleep(0.2)
            done = [client.get(f"/api/runs/{run_id}").json() for run_id in ids]
        assert {run["status"] for run in done} == {"succeeded"}
        assert {run["attempts"] for run in done} == {2}
        assert len(engine_processes(harness)) == 1  # started again in its place
    finally:
        harness.close()


@pytest.mark.skipif(not POSTGRES, reason="the connection pool and its limits are Postgres's")
def test_an_exhausted_pool_and_a_refusing_database_answer_503_and_write_nothing(tmp_path):
    import psycopg

    harness = Harness(tmp_path, DATABASE_POOL_SIZE="1", DATABASE_POOL_TIMEOUT_SECONDS="0.5").start()
    try:
        assert harness.postgres is not None
        key = harness.api_key("alice")
        body = {"input": "What is 1 + 1?", "agent": "calculator", "model": "offline"}
        dsn = harness.postgres.admin_dsn.replace("dbname=postgres", f"dbname={harness.postgres.name}")
        with harness.client(key) as client:
            client.post("/api/runs", json=body).raise_for_status()  # the pool's one connection is open
            count_before = client.get("/api/runs").json()["items"]
            # 1. Exhausted: a request holds the web's only connection (blocked on a table lock),
            #    so the next one waits for the pool past its timeout.
            with psycopg.connect(dsn) as locker:
                locker.execute("LOCK TABLE runs_run IN ACCESS EXCLUSIVE MODE")
                results: dict[str, Any] = {}
                blocked = threading.Thread(
                    target=lambda: results.setdefault("first", client.post("/api/runs", json=body))
                )
                blocked.start()
                time.sleep(0.5)
                second = httpx.post(
                    f"{harness.base_url}/api/runs", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10
                )
                locker.rollback()
            blocked.join(10)
            assert second.status_code == 503, second.text
            assert second.headers["Retry-After"] == "2"
            assert second.headers["Content-Type"].startswith("application/json")
            assert "database" in second.json()["detail"]
            assert results["first"].status_code == 202
            # 2. Refused: the database takes no new connection at all.
            with psycopg.connect(harness.postgres.admin_dsn, autocommit=True) as admin:
                admin.execute(f'ALTER DATABASE "{harness.postgres.name}" ALLOW_CONNECTIONS false')
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                    [harness.postgres.name],
                )
                try:
                    refused = client.post("/api/runs", json=body)
                    listing = client.get("/api/runs")
                finally:
                    admin.execute(f'ALTER DATABASE "{harness.postgres.name}" ALLOW_CONNECTIONS true')
            assert refused.status_code == 503, refused.text
            assert refused.headers["Retry-After"] == "2" and "detail" in refused.json()
            assert listing.status_code == 503 and listing.headers["Content-Type"].startswith("application/json")
            # Nothing half-created: exactly the two accepted runs exist.
            deadline = time.monotonic() + 10
            while True:
                try:
                    items = client.get("/api/runs").json()["items"]
                    break
                except Exception:
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
            assert len(items) == len(count_before) + 1
    finally:
        harness.close()


def test_the_web_process_never_imports_the_agents_sdk():
    """The ASGI application, the URLconf and every API module load without `agents`."""
    code = """
import importlib, pkgutil, sys
import django
django.setup()
import harness_site.asgi, harness_site.urls, harness_site.api
from django.urls import get_resolver
get_resolver().url_patterns
for app in ("runs", "artifacts", "sandboxes", "accounts", "audit", "evals"):
    for name in ("api", "admin", "views", "consumers", "selectors", "services", "schemas"):
        try:
            importlib.import_module(f"{app}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{app}.{name}":
                raise
leaked = sorted(name for name in sys.modules if name == "agents" or name.startswith("agents."))
print("LEAKED" if leaked else "CLEAN", leaked[:5])
"""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "harness_site.settings",
        "HARNESS_IGNORE_ENV_FILE": "1",
        "DEBUG": "true",
    }
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip().splitlines()[-1].startswith("CLEAN"), out.stdout


def ready_lines(harness: Harness) -> list[dict[str, Any]]:
    return [line for line in map(json.loads, harness.log_lines()) if line.get("msg") == "run engine ready"]


def test_ready_follows_the_workers_heartbeats(tmp_path):
    harness = Harness(tmp_path, HARNESS_WORKER_BEAT_SECONDS="0.5").start()
    assert [line["event_loop"] for line in ready_lines(harness)] == ["uvloop"]  # HARNESS_WORKER_EVENT_LOOP's default
    try:
        client = harness.client()
        ready = client.get("/health/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["workers"]["live"] == 1
        # A worker killed outright: not ready once its beat is stale, ready again when runworker restarts it.
        (engine,) = engine_processes(harness)
        engine.kill()
        deadline = time.monotonic() + 15
        while client.get("/health/ready").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        stale = client.get("/health/ready")
        assert stale.status_code == 503 and stale.json()["checks"]["workers"]["ok"] is False
        assert client.get("/health").status_code == 200
        deadline = time.monotonic() + 90
        while client.get("/health/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert client.get("/health/ready").json()["checks"]["workers"]["live"] == 1
    finally:
        harness.close()
