"""The harness on a Neon-shaped database: the app through PgBouncer in transaction mode with
TLS and SCRAM (the pooled endpoint), migrations straight to Postgres over TLS (the direct one).

The main flows run through the pooler: create, execute (tools, a sandbox, an artifact),
stream, cancel, concurrent runs on the run engine, the reaper and the eval gate.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.integration.harness import Harness
from tests.integration.pgtls import NeonLike, available

pytestmark = [pytest.mark.integration, pytest.mark.own_services]


@pytest.fixture(scope="module")
def neon():
    why = available()
    if why:
        pytest.skip(why)
    database = NeonLike().start()
    yield database
    database.stop()


@pytest.fixture(scope="module")
def harness(neon, tmp_path_factory):
    root = Path(tempfile.mkdtemp(prefix="harness-pooled-sbx-"))
    h = Harness(
        tmp_path_factory.mktemp("pooled"),
        DATABASE_URL=neon.url(pooled=True),
        DIRECT_DATABASE_URL=neon.url(pooled=False),
        HARNESS_SANDBOX_ROOT=str(root),
        HARNESS_SANDBOX_CLOSE_GRACE_SECONDS="0",
    )
    h.start()
    yield h
    h.close()
    shutil.rmtree(root, ignore_errors=True)


def test_channel_binding_works_on_the_direct_endpoint_and_the_pooler_says_it_cannot(neon):
    with psycopg.connect(neon.url(pooled=False, channel_binding="require"), connect_timeout=5) as conn:
        ssl, version = conn.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert ssl and version.startswith("TLS")
    # PgBouncer (1.18 here) does not offer SCRAM-SHA-256-PLUS to clients: with
    # channel_binding=require the client refuses it rather than silently going without.
    with pytest.raises(psycopg.OperationalError, match="channel binding is required"):
        psycopg.connect(neon.url(pooled=True, channel_binding="require"), connect_timeout=5)
    # Without TLS both endpoints refuse, as Neon's do.
    for pooled in (False, True):
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(neon.url(pooled=pooled, sslmode="disable"), connect_timeout=5)


def sse_events(client: httpx.Client, run_id: str) -> list[dict]:
    with client.stream("GET", f"/api/runs/{run_id}/events", timeout=60) as response:
        body = "".join(response.iter_text())
    return [json.loads(line[len("data: ") :]) for line in body.splitlines() if line.startswith("data: ")]


def test_runs_execute_and_stream_through_the_pooler(harness):
    client = harness.client(harness.api_key("alice"))
    body = {"input": "What is 6 * 7?", "agent": "calculator", "model": "offline"}
    run = client.post("/api/runs", json=body).json()
    events = sse_events(client, run["id"])
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "run.succeeded"
    assert client.get(f"/api/runs/{run['id']}").json()["output"].endswith("= 42")

    # Thirty at once on the run engine: every one succeeds, none is lost or doubled.
    with ThreadPoolExecutor(10) as pool:
        ids = list(
            pool.map(lambda n: client.post("/api/runs", json=body | {"input": f"{n} + 1"}).json()["id"], range(30))
        )
    done = [harness.wait_for(client, run_id, ("succeeded", "failed"), timeout=90) for run_id in ids]
    assert {item["status"] for item in done} == {"succeeded"}, [item["error"] for item in done]


def test_a_sandbox_run_and_an_artifact_through_the_pooler(harness):
    client = harness.client(harness.api_key("bob"))
    coder = client.post(
        "/api/runs",
        json={
            "input": "```sh\necho pooled > outputs/p.txt; cat outputs/p.txt\n```",
            "agent": "coder",
            "model": "offline",
        },
    ).json()
    scribe = client.post("/api/runs", json={"input": "Pooled notes.", "agent": "scribe", "model": "offline"}).json()
    for run in (coder, scribe):
        finished = harness.wait_for(client, run["id"], ("succeeded", "failed"), timeout=90)
        assert finished["status"] == "succeeded", finished
    (sandbox,) = client.get(f"/api/runs/{coder['id']}/sandboxes").json()
    assert sandbox["cleanup_state"] == "done"
    names = {artifact["name"] for artifact in client.get(f"/api/runs/{coder['id']}/artifacts").json()}
    assert "p.txt" in names
    (note,) = client.get(f"/api/runs/{scribe['id']}/artifacts").json()
    detail = client.get(f"/api/artifacts/{note['id']}").json()
    assert httpx.get(detail["download_url"]).content == b"Pooled notes."


def test_cancel_the_reaper_and_the_eval_gate_through_the_pooler(harness):
    client = harness.client(harness.api_key("carol"))
    slow = client.post("/api/runs", json={"input": "```sh\nsleep 20\n```", "agent": "coder", "model": "offline"}).json()
    harness.wait_for(client, slow["id"], ("running",), timeout=30)
    cancelled = client.post(f"/api/runs/{slow['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"

    settings = harness.sql(
        "from django.conf import settings\n"
        "print(json.dumps([settings.DATABASES['default']['DISABLE_SERVER_SIDE_CURSORS'], 'direct' in settings.DATABASES]))"
    )
    assert settings == [True, True]  # no cursor outlives its pooled transaction; migrations go direct

    reaped = harness.manage("reap_runs")
    assert reaped.stdout.startswith("requeued 0, failed 0"), reaped.stdout
    gate = harness.manage("eval", "--dataset", "starter", check=False)
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert "passed (100.0%" in gate.stdout
