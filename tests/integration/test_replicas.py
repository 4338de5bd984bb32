"""Two replicas as if on two hosts: each a web process and a worker with its own var/ and
sandbox root, sharing one Postgres, one Redis and one S3 store."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest

from artifacts.tests.conftest import ACCESS_KEY, BUCKET, SECRET_KEY, s3_server  # noqa: F401  (fixture)
from tests.integration.harness import Harness
from tests.integration.servers import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.own_services]

POSTGRES_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


@pytest.fixture(scope="module")
def shared_database() -> Iterator[str]:
    name = f"harness_replicas_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgres://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, shared_database, shared_redis, s3_server) -> Iterator[list[Harness]]:  # noqa: F811
    env = {
        "DATABASE_URL": shared_database,
        "REDIS_URL": shared_redis.url,
        "HARNESS_REDIS_PREFIX": "replicas",  # one deployment: one run queue
        "R2_BUCKET": BUCKET,
        "S3_ENDPOINT_URL": s3_server.endpoint,
        "R2_ACCESS_KEY_ID": ACCESS_KEY,
        "R2_SECRET_ACCESS_KEY": SECRET_KEY,
        "HARNESS_RUN_LEASE_SECONDS": "3",
        "HARNESS_RUN_MAX_ATTEMPTS": "2",
        "HARNESS_WORKER_CONCURRENCY": "2",
        "HARNESS_OFFLINE_DELAY_MS": "150",
        "HARNESS_SANDBOX_CLOSE_GRACE_SECONDS": "0",
    }
    started: list[Harness] = []
    try:
        for name in ("a", "b"):
            started.append(Harness(tmp_path_factory.mktemp(f"replica-{name}"), **env).start())
        yield started
    finally:
        for harness in started:
            harness.close()


def sse(base_url: str, key: str, run_id: str) -> list[dict]:
    with httpx.stream(
        "GET", f"{base_url}/api/runs/{run_id}/events", headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as response:
        body = "".join(response.iter_text())
    return [json.loads(line[len("data: ") :]) for line in body.splitlines() if line.startswith("data: ")]


def test_a_run_created_on_one_web_streams_from_the_other_and_both_workers_run_runs(replicas):
    a, b = replicas
    key = a.api_key("alice")
    on_a = a.client(key)
    runs = [
        on_a.post("/api/runs", json={"input": f"{n} * 3", "agent": "calculator", "model": "offline"}).json()
        for n in range(16)
    ]
    events = sse(b.base_url, key, runs[0]["id"])  # followed on the other replica's web process
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "run.succeeded"
    on_b = b.client(key)
    done = [b.wait_for(on_b, run["id"], ("succeeded", "failed"), timeout=60) for run in runs]
    assert {run["status"] for run in done} == {"succeeded"}
    ready = httpx.get(f"{b.base_url}/health/ready", timeout=5).json()
    assert ready["checks"]["workers"]["live"] == 2, ready
    claims = b.sql(
        "from audit.models import AuditLog\n"
        f"ids = {[run['id'] for run in runs]!r}\n"
        "print(json.dumps(list(AuditLog.objects.filter(action='run.started', run_id__in=ids)"
        ".values_list('actor_id', flat=True))))"
    )
    engines = {int(worker_id.split(":")[1]) for worker_id in claims}  # a worker id is host:pid:nonce/n
    assert engines & _engine_pids(a) and engines & _engine_pids(b), engines  # both replicas' workers took runs


def test_one_replicas_sandbox_reaper_never_touches_the_others_sandboxes(replicas):
    a, b = replicas
    key = a.api_key("dora")
    on_a = a.client(key)
    run = on_a.post(
        "/api/runs", json={"input": "```sh\nsleep 15; echo still-here\n```", "agent": "coder", "model": "offline"}
    ).json()
    deadline = time.monotonic() + 30
    sandboxes: list[dict] = []
    while time.monotonic() < deadline and not (sandboxes and sandboxes[0]["status"] == "live"):
        sandboxes = on_a.get(f"/api/runs/{run['id']}/sandboxes").json()
        time.sleep(0.1)
    (sandbox,) = sandboxes
    workspace = Path(
        a.sql(
            "from sandboxes.models import Sandbox\n"
            f"print(json.dumps(Sandbox.objects.get(pk={sandbox['id']!r}).provider_session_id))"
        )
    )
    roots = [
        h.sql("from django.conf import settings\nprint(json.dumps(str(settings.HARNESS_SANDBOX_ROOT)))") for h in (a, b)
    ]
    assert roots[0] != roots[1]  # each replica its own root
    # Either replica's worker may have taken the run: the other one's reaper is the test.
    assert workspace.parent in (Path(roots[0]), Path(roots[1]))
    other = b if workspace.parent == Path(roots[0]) else a
    reaped = other.manage("reap_sandboxes")  # while the sandbox is live on the first replica
    assert sandbox["id"] not in reaped.stdout + reaped.stderr and workspace.exists()
    done = a.wait_for(on_a, run["id"], ("succeeded", "failed"), timeout=60)
    assert done["status"] == "succeeded" and "still-here" in done["output"], done


def test_killing_one_replica_gets_its_runs_reaped_and_retried_on_the_other(replicas):
    a, b = replicas
    key = b.api_key("bob")
    on_b = b.client(key)
    # Long enough to be running on A when it dies: a sandbox block of a few seconds.
    runs = [
        on_b.post(
            "/api/runs", json={"input": f"```sh\nsleep 4; echo {n}\n```", "agent": "coder", "model": "offline"}
        ).json()
        for n in range(6)
    ]
    deadline = time.monotonic() + 30
    on_a: list[str] = []
    while time.monotonic() < deadline and not on_a:
        on_a = _running_on(a, [run["id"] for run in runs])
        time.sleep(0.2)
    assert on_a, "no run reached replica A's worker"
    a.kill()  # the host is gone: no cleanup, no goodbye
    time.sleep(3.5)  # its leases run out
    reaped = b.manage("reap_runs").stdout
    assert all(run_id in reaped for run_id in on_a), reaped
    done = [b.wait_for(on_b, run["id"], ("succeeded", "failed"), timeout=90) for run in runs]
    assert {run["status"] for run in done} == {"succeeded"}, [run["error"] for run in done]
    retried = [run for run in done if run["id"] in on_a]
    assert retried and all(run["attempts"] == 2 for run in retried)


def _running_on(harness: Harness, run_ids: list[str]) -> list[str]:
    """Those of these runs that this replica's worker holds now (a worker id is host:pid:nonce)."""
    pids = _engine_pids(harness)
    held = harness.sql(
        "from runs.models import Run\n"
        f"ids = {run_ids!r}\n"
        "print(json.dumps(list(Run.objects.filter(id__in=ids, status='running').values_list('id', 'worker_id'))))"
    )
    return [run_id for run_id, worker_id in held if int(worker_id.split(":")[1]) in pids]


def _engine_pids(harness: Harness) -> set[int]:
    assert harness.process is not None
    return {child.pid for child in psutil.Process(harness.process.pid).children(recursive=True)}
