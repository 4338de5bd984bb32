"""The harness as its users meet it: `runharness` (daphne + worker), HTTP clients, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from runs.tests.fake_openai import FakeOpenAI
from tests.integration.harness import ROOT, Harness
from tests.integration.test_stream_clients import daphne_process

pytestmark = pytest.mark.integration

LONG_INPUT = " ".join(f"w{i}" for i in range(400))


@pytest.fixture(scope="module")
def fake_openai():
    with FakeOpenAI("sk-the-servers-real-key-0000") as fake:
        yield fake


@pytest.fixture(scope="module")
def harness(tmp_path_factory, fake_openai):
    h = Harness(
        tmp_path_factory.mktemp("harness"),
        HARNESS_OFFLINE_DELAY_MS="20",
        HARNESS_CANCEL_CHECK_SECONDS="0.1",
        # A key the fake server rejects (and echoes back): the secret-grep test looks for it.
        OPENAI_API_KEY="sk-live-INTEGRATION-SECRET-42424242",
        OPENAI_BASE_URL=fake_openai.base_url,
    )
    h.start()
    yield h
    h.close()


@pytest.fixture(scope="module")
def key(harness):
    return harness.api_key("alice")


def test_quickstart_health_key_run_and_read_back(harness, key):
    public = harness.client()
    assert public.get("/health").json() == {
        "status": "ok",
        "model": "gpt-5.4-mini",
        "backends": {"postgres": harness.postgres is not None, "sandbox": False, "r2": False},
    }
    client = harness.client(key)
    started = time.monotonic()
    created = client.post("/api/runs", json={"input": "What is 12 * 12?", "agent": "calculator", "model": "offline"})
    assert created.status_code == 202
    body = created.json()
    assert body["status"] == "queued" and time.monotonic() - started < 2
    done = harness.wait_for(client, body["id"], ("succeeded", "failed"))
    assert done["status"] == "succeeded", done
    assert done["output"] == "12 * 12 = 144"
    assert done["usage"]["requests"] == 2 and done["started_at"] and done["finished_at"]
    listed = client.get("/api/runs", params={"status": "succeeded"}).json()["items"]
    assert body["id"] in [item["id"] for item in listed]


def test_an_outsider_learns_nothing(harness, key):
    run = harness.client(key).post("/api/runs", json={"input": "2+2", "agent": "calculator", "model": "offline"}).json()
    outsider = harness.client(harness.api_key("mallory"))
    assert outsider.get(f"/api/runs/{run['id']}").status_code == 404
    assert outsider.post(f"/api/runs/{run['id']}/cancel").status_code == 404
    assert outsider.get("/api/runs").json()["items"] == []
    assert harness.client().get("/api/runs").status_code == 401


def test_cancel_stops_a_running_run(harness, key):
    client = harness.client(key)
    run = client.post("/api/runs", json={"input": LONG_INPUT, "agent": "assistant", "model": "offline"}).json()
    assert harness.wait_for(client, run["id"], ("running",))["status"] == "running"
    time.sleep(0.3)
    response = client.post(f"/api/runs/{run['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    # The worker notices, stops the agent, and records nothing after the final event.
    time.sleep(1.0)
    events = harness.sql(
        f"from runs.models import RunEvent; print(json.dumps(list(RunEvent.objects.filter(run_id='{run['id']}').order_by('seq').values_list('type', flat=True))))"
    )
    assert events[-1] == "run.cancelled" and events.count("run.cancelled") == 1
    assert client.get(f"/api/runs/{run['id']}").json()["status"] == "cancelled"
    assert any('"status": "superseded"' in line and run["id"] in line for line in harness.log_lines()), (
        "the worker did not report stopping the run"
    )
    again = client.post(f"/api/runs/{run['id']}/cancel")
    assert again.status_code == 409


def test_a_real_model_run_without_a_usable_key_fails_clearly_and_leaks_nothing(harness, key, fake_openai):
    client = harness.client(key)
    run = client.post("/api/runs", json={"input": "hello", "agent": "assistant"}).json()
    assert run["model"] == "gpt-5.4-mini"
    done = harness.wait_for(client, run["id"], ("succeeded", "failed"))
    assert done["status"] == "failed"
    assert "Incorrect API key" in done["error"]
    secrets = ["sk-live-INTEGRATION-SECRET-42424242", key]
    everything = harness.log_path.read_text() + harness.err_path.read_text() + json.dumps(done)
    for secret in secrets:
        assert secret not in everything
    # The fake server did receive the key: the request really went over the wire.
    assert "Bearer sk-live-INTEGRATION-SECRET-42424242" in fake_openai.auth_headers


def test_logs_are_json_lines_and_run_lines_carry_the_run_id(harness, key):
    client = harness.client(key)
    run = client.post("/api/runs", json={"input": "3 * 3", "agent": "calculator", "model": "offline"}).json()
    harness.wait_for(client, run["id"], ("succeeded",))
    entries = [json.loads(line) for line in harness.log_lines() if line.strip()]
    mine = [entry for entry in entries if entry.get("run_id") == run["id"]]
    messages = {entry["msg"] for entry in mine}
    assert {"run started", "run finished", "request"} <= messages


@pytest.mark.parametrize(
    "content_type", ["multipart/form-data; boundary=xyz", "application/x-www-form-urlencoded", "application/json"]
)
def test_a_huge_body_is_refused_without_being_held(harness, key, content_type):
    """Past HARNESS_MAX_REQUEST_BYTES the web server keeps nothing of a body and answers 413
    itself: a 64 MB POST costs it no 64 MB of memory (nor of disk)."""
    web = daphne_process(harness)
    size = 64 * 1024 * 1024
    if content_type.startswith("multipart"):
        head = b'--xyz\r\nContent-Disposition: form-data; name="input"\r\n\r\n'
        body = head + b"a" * (size - len(head) - 11) + b"\r\n--xyz--\r\n"
    else:
        body = b"input=" + b"a" * (size - 6)
    before = web.memory_info().rss
    answer = harness.client(key).post("/api/runs", content=body, headers={"Content-Type": content_type}, timeout=120)
    grown = web.memory_info().rss - before
    assert answer.status_code == 413, answer.text
    assert answer.json() == {"detail": "request body: over the size limit (HARNESS_MAX_REQUEST_BYTES)"}
    assert grown < 16 * 1024 * 1024, f"the web process grew by {grown / 2**20:.0f} MiB"
    assert harness.client().get("/health").status_code == 200


def test_a_body_of_exactly_the_limit_reaches_the_api_and_one_byte_more_does_not(harness, key):
    limit = 1_048_576  # HARNESS_MAX_REQUEST_BYTES's default
    run = json.dumps({"input": "What is 2 + 2?", "agent": "calculator", "model": "offline"}).encode()
    client = harness.client(key)
    at_limit = client.post(
        "/api/runs", content=run + b" " * (limit - len(run)), headers={"Content-Type": "application/json"}
    )
    assert at_limit.status_code == 202, at_limit.text
    over = client.post(
        "/api/runs", content=run + b" " * (limit + 1 - len(run)), headers={"Content-Type": "application/json"}
    )
    assert over.status_code == 413, over.text
    assert over.json() == {"detail": "request body: over the size limit (HARNESS_MAX_REQUEST_BYTES)"}
    chunked = client.post(
        "/api/runs",
        content=iter([run, b" " * limit]),  # no Content-Length: the body is counted as it comes
        headers={"Content-Type": "application/json"},
    )
    assert chunked.status_code == 413, chunked.text


def test_sessions_survive_a_restart(harness, key):
    client = harness.client(key)
    first = client.post("/api/runs", json={"input": "first message", "agent": "assistant", "model": "offline"}).json()
    harness.wait_for(client, first["id"], ("succeeded",))
    assert harness.stop() == 0
    harness.start()
    client = harness.client(key)
    second = client.post(
        "/api/runs",
        json={"input": "second message", "agent": "assistant", "model": "offline", "session_id": first["session_id"]},
    ).json()
    done = harness.wait_for(client, second["id"], ("succeeded", "failed"))
    assert done["session_id"] == first["session_id"]
    assert done["output"].startswith("Offline assistant, turn 2:")


def test_ctrl_c_stops_web_and_worker(tmp_path):
    h = Harness(tmp_path).start()
    try:
        children = psutil.Process(h.process.pid).children(recursive=True)
        assert len(children) >= 4  # daphne, the run engine, the jobs cluster and its processes
        assert h.stop() == 0
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert alive == []
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{h.base_url}/health", timeout=1)
    finally:
        h.close()


def jobs_cluster_stops(harness: Harness, command: str, log: Path) -> float | None:
    """Start `manage.py COMMAND` (the jobs cluster) in a process group of its own, then do what
    Ctrl-C under `make run` does to it: SIGINT to the group, then its supervisor's SIGTERM
    straight after. Seconds until the group is empty, or None if it was not within 15 s."""
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603
            [sys.executable, "manage.py", command],
            cwd=ROOT,
            env=harness.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while "running." not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "running." in log.read_text(), log.read_text()
        os.killpg(process.pid, signal.SIGINT)
        time.sleep(0.001)
        os.kill(process.pid, signal.SIGTERM)
        sent = time.monotonic()
        while time.monotonic() - sent < 15:
            if process.poll() is not None and not group_members(process.pid):
                return time.monotonic() - sent
            time.sleep(0.05)
        return None
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(10)


def group_members(group: int) -> list[int]:
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == group and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return members


@pytest.mark.one_database
def test_the_jobs_cluster_stops_once_however_many_stop_signals_arrive(tmp_path):
    """Ctrl-C reaches every process of the terminal's group, and runworker then sends SIGTERM:
    two signals a moment apart. django-q2's own qcluster, stopping from inside its handler, can
    hang on the second and leave its processes behind (a third of the time on a busy machine,
    as two spinning processes make this one); runjobs stops once, and leaves nothing."""
    harness = Harness(tmp_path)
    spinning = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])  # noqa: S603
        for _ in range(2)
    ]
    try:
        for attempt in range(10):
            log = tmp_path / f"jobs-{attempt}.log"
            took = jobs_cluster_stops(harness, "runjobs", log)
            assert took is not None and took < 10, log.read_text()
            assert "has stopped" in log.read_text()
    finally:
        for spinner in spinning:
            spinner.kill()
            spinner.wait()


def test_a_crashed_worker_leaves_no_zombie_run(tmp_path):
    h = Harness(
        tmp_path, HARNESS_OFFLINE_DELAY_MS="50", HARNESS_RUN_LEASE_SECONDS="1", HARNESS_CANCEL_CHECK_SECONDS="0.1"
    ).start()
    try:
        key = h.api_key("alice")
        client = h.client(key)
        run = client.post("/api/runs", json={"input": LONG_INPUT, "agent": "assistant", "model": "offline"}).json()
        assert h.wait_for(client, run["id"], ("running",))["status"] == "running"
        h.kill()  # the whole container dies mid-run
        time.sleep(1.5)  # the lease runs out
        report = h.manage("reap_runs").stdout
        assert f"failed: {run['id']}" in report
        h.start()
        done = h.client(key).get(f"/api/runs/{run['id']}").json()
        assert done["status"] == "failed" and "stopped responding" in done["error"]
        actions = h.sql(
            f"from audit.models import AuditLog; print(json.dumps(list(AuditLog.objects.filter(run_id='{run['id']}').order_by('id').values_list('action', flat=True))))"
        )
        assert actions == ["run.created", "run.started", "run.failed"]
    finally:
        h.close()


def test_the_banner_appears_once_the_web_answers(tmp_path):
    # A newcomer copies the banner's `curl .../health` the moment it appears: it must answer.
    harness = Harness(tmp_path)
    process = subprocess.Popen(  # noqa: S603
        [sys.executable, "manage.py", "runharness", "--no-worker", "--port", str(harness.port)],
        cwd=ROOT,
        env=harness.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 60
        for line in process.stderr:
            if line.startswith("Agent harness on") or time.monotonic() > deadline:
                break
        assert line.startswith("Agent harness on"), line
        assert httpx.get(f"{harness.base_url}/health", timeout=5).status_code == 200
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.communicate(timeout=60)
