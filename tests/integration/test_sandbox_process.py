"""Sandboxes through the real harness: HTTP clients run the coder agent, escape attempts stay
inside bubblewrap, the harness stays healthy, and a crashed worker's sandbox is reaped."""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest

from tests.integration.harness import Harness

pytestmark = [pytest.mark.integration, pytest.mark.one_database]

CANARY = "sk-canary" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def root():
    path = Path(tempfile.mkdtemp(prefix="harness-sbx-it-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def harness(tmp_path_factory, root):
    h = Harness(
        tmp_path_factory.mktemp("sandbox"),
        OPENAI_API_KEY=CANARY,
        HARNESS_SANDBOX_ROOT=str(root),
        HARNESS_SANDBOX_COMMAND_TIMEOUT_SECONDS="5",
        HARNESS_SANDBOX_CPU_SECONDS="5",
        HARNESS_SANDBOX_MAX_PROCESSES="32",
        HARNESS_SANDBOX_MEMORY_MB="512",
        HARNESS_SANDBOX_CLOSE_GRACE_SECONDS="0",
        HARNESS_RUN_LEASE_SECONDS="2",
    )
    h.start()
    yield h
    h.close()


def run_and_wait(harness: Harness, client: httpx.Client, text: str, timeout: float = 60) -> dict:
    run = client.post("/api/runs", json={"input": text, "agent": "coder", "model": "offline"})
    assert run.status_code == 202, run.text
    return harness.wait_for(client, run.json()["id"], ("succeeded", "failed", "cancelled"), timeout=timeout)


def tool_outputs(client: httpx.Client, run_id: str) -> list[str]:
    with client.stream("GET", f"/api/runs/{run_id}/events", timeout=30) as response:
        body = "".join(response.iter_text())
    import json

    events = [json.loads(line[len("data: ") :]) for line in body.splitlines() if line.startswith("data: ")]
    return [event["data"]["output"] for event in events if event["type"] == "tool.output"]


def assert_healthy_and_cleaned(harness: Harness, client: httpx.Client, run_id: str, root: Path) -> None:
    assert httpx.get(f"{harness.base_url}/health", timeout=5).json()["status"] == "ok"
    (sandbox,) = client.get(f"/api/runs/{run_id}/sandboxes").json()
    assert sandbox["status"] == "stopped" and sandbox["cleanup_state"] == "done"
    assert list(root.iterdir()) == []


def test_escape_attempts_over_http_are_contained(harness, root):
    client = harness.client(harness.api_key("alice"))
    database = harness.workdir / "harness.sqlite3"
    script = f"""```sh
env | grep -c . ; env | grep -i -e key -e secret -e database -e redis || echo NO-SECRETS-IN-ENV
for f in {database} /etc/shadow /root {Path.cwd() / "manage.py"}; do cat "$f" >/dev/null 2>&1 && echo "LEAK:$f" || echo "DENIED:$f"; done
python3 -c "import socket; s=socket.socket(); s.settimeout(2); print(s.connect_ex(('127.0.0.1', {harness.port})))"
touch /usr/pwned 2>/dev/null && echo WROTE-USR || echo USR-READONLY
```"""
    done = run_and_wait(harness, client, script)
    assert done["status"] == "succeeded", done
    (output,) = tool_outputs(client, done["id"])
    assert "NO-SECRETS-IN-ENV" in output and "LEAK:" not in output and output.count("DENIED:") == 4
    assert "USR-READONLY" in output
    assert "\n0\n" not in output  # connect_ex to the harness port did not succeed
    assert CANARY not in output and CANARY not in harness.log_path.read_text()
    assert_healthy_and_cleaned(harness, client, done["id"], root)


def test_a_fork_bomb_leaves_the_harness_serving(harness, root):
    client = harness.client(harness.api_key("bob"))
    started = time.monotonic()
    done = run_and_wait(harness, client, "```sh\nbomb() { bomb | bomb & }; bomb; sleep 2; echo done\n```")
    assert done["status"] == "succeeded", done
    assert time.monotonic() - started < 60
    assert_healthy_and_cleaned(harness, client, done["id"], root)
    calc = client.post("/api/runs", json={"input": "What is 2 + 2?", "agent": "calculator", "model": "offline"})
    assert harness.wait_for(client, calc.json()["id"], ("succeeded",))["output"] == "2 + 2 = 4"


def test_status_endpoint_over_http(harness):
    client = harness.client(harness.api_key("carol"))
    body = client.get("/api/sandbox/status").json()
    assert body["provider"] == "local" and body["available"] is True
    assert httpx.get(f"{harness.base_url}/api/sandbox/status").status_code == 401
    assert httpx.get(f"{harness.base_url}/health").json()["backends"]["sandbox"] is False


def test_a_crashed_worker_leaves_nothing_the_reapers_do_not_clean(harness, root):
    client = harness.client(harness.api_key("dave"))
    posted = time.time()
    run = client.post(
        "/api/runs", json={"input": "```sh\nsleep 300 & sleep 299\n```", "agent": "coder", "model": "offline"}
    ).json()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = client.get(f"/api/runs/{run['id']}/sandboxes").json()
        if rows and rows[0]["status"] == "live" and any(root.iterdir()):
            break
        time.sleep(0.1)
    (workspace,) = list(root.iterdir())

    def survivors() -> list[dict[str, object]]:
        """This run's sleeps: started since it was posted, in its workspace (anything else on the
        host may run a `sleep 300` too: another instance's tests, a shell)."""
        return [
            {**p.info, "pid": p.pid}
            for p in psutil.process_iter(["cmdline", "cwd", "create_time", "ppid"])
            if (p.info["cmdline"] or [])[-1:] in (["300"], ["299"])
            and str(p.info["cwd"] or "").startswith(str(workspace))
            and p.info["create_time"] >= posted - 1
        ]

    # Both sleeps are running, and seen as this run's, when the worker is killed.
    deadline = time.monotonic() + 30
    while len(survivors()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sorted(p["cmdline"][-1] for p in survivors()) == ["299", "300"]  # type: ignore[index]
    harness.kill()  # SIGKILL to the whole tree: no cleanup code runs

    # --die-with-parent: the sandbox's processes die with their worker (the kernel takes the
    # pid namespace down when bwrap's init goes, which can take a moment on a loaded machine;
    # a leaked one would live on for minutes).
    deadline = time.monotonic() + 30
    while survivors() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert survivors() == []
    assert workspace.exists()  # the workspace is what a crash leaves behind

    time.sleep(2.5)  # past the run's lease
    assert "failed 1" in harness.manage("reap_runs").stdout
    out = harness.manage("reap_sandboxes").stdout
    assert "cleaned 1" in out, out
    assert not workspace.exists()
    harness.start()
    client = harness.client(harness.api_key("dave"))
    (sandbox,) = client.get(f"/api/runs/{run['id']}/sandboxes").json()
    assert sandbox["cleanup_state"] == "done" and sandbox["exit_info"]["reason"] == "reaped: run is failed"
    assert client.get(f"/api/runs/{run['id']}").json()["status"] == "failed"


def test_a_run_printing_256_mb_costs_its_worker_little_and_slows_no_other_run(harness):
    """The worker's memory stays bounded, its lease holds, the other runs on its loop go on,
    and what is stored of the 256 MB is capped."""
    import threading

    import psutil

    assert harness.process is not None
    tree = psutil.Process(harness.process.pid).children(recursive=True)
    [engine] = [proc for proc in tree if "runengine" in " ".join(proc.cmdline())]
    key = harness.api_key("printer")
    baseline = engine.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], engine.memory_info().rss)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with harness.client(key) as client:
            big = client.post(
                "/api/runs",
                json={
                    "input": "```sh\nhead -c 268435456 /dev/zero | tr '\\0' x\n```",
                    "agent": "coder",
                    "model": "offline",
                },
            ).json()
            harness.wait_for(client, big["id"], ("running", "succeeded", "failed"), timeout=20)
            started = time.monotonic()
            quick = client.post(
                "/api/runs", json={"input": "What is 6 * 7?", "agent": "calculator", "model": "offline"}
            ).json()
            quick_done = harness.wait_for(client, quick["id"], ("succeeded", "failed"), timeout=20)
            quick_seconds = time.monotonic() - started
            done_big = harness.wait_for(client, big["id"], ("succeeded", "failed", "cancelled"), timeout=90)
            raw = client.get(f"/api/runs/{big['id']}")
            outputs = tool_outputs(client, big["id"])
            with client.stream("GET", f"/api/runs/{big['id']}/events", timeout=30) as response:
                stream_bytes = sum(len(chunk) for chunk in response.iter_bytes())
    finally:
        done.set()
        sampler.join()
    assert quick_done["status"] == "succeeded" and quick_seconds < 5, quick_seconds
    assert done_big["status"] == "succeeded", done_big
    assert done_big["attempts"] == 1  # its lease held: never reaped, never retried
    growth_mb = (peak[0] - baseline) / 2**20
    assert growth_mb < 200, growth_mb
    assert len(raw.content) < 200_000 and stream_bytes < 500_000, (len(raw.content), stream_bytes)
    assert outputs and "[output truncated: 268435456 bytes in all" in outputs[0]
    assert all(len(output) <= 65_536 for output in outputs)
