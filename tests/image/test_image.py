"""The container image, built without a Docker engine and booted: `make image` (buildah), then the
web command and the worker command run from it as two containers (`buildah run`, host network),
sharing a temporary var/ (HARNESS_VAR_DIR) with a SQLite database, as an operator would run them.

The build is `make image` every time: warm, buildah's layer cache reuses every layer whose inputs
(the base, the lock file, the tree) did not change, so a second session costs seconds.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

pytestmark = pytest.mark.slow_image

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/agent-harness:image-test"
STORAGE = os.environ.get("BUILDAH_STORAGE", "overlay")  # as the Makefile's BUILDAH
BUILDAH = ["buildah", "--storage-driver", STORAGE]
if STORAGE != "overlay":
    BUILDAH += ["--root", f"/var/lib/containers/storage-{STORAGE}"]
VAR = "/var/harness"  # where the temporary var/ is mounted inside each container
ENV = {
    "HARNESS_VAR_DIR": VAR,
    "SECRET_KEY": "image-test-secret-key-0123456789abcdef",
    "HARNESS_WORKERS": "1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def buildah(*args: str, timeout: float = 120) -> str:
    done = subprocess.run([*BUILDAH, *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"buildah {' '.join(args)}: {done.stderr}"
    return done.stdout


class Container:
    """A working container of the image; `run` is a one-off command, `start` a long-running one."""

    def __init__(self, image: str, var_dir: Path, role: str) -> None:
        self.var_dir = var_dir
        self.name = f"harness-image-test-{role}-{uuid.uuid4().hex[:8]}"
        buildah("from", "--pull-never", "--name", self.name, image)
        self.process: subprocess.Popen[bytes] | None = None
        self.command: list[str] = []
        self.log_path = var_dir / f"{role}.log"
        self.err_path = var_dir / f"{role}.err"

    def argv(self, command: list[str]) -> list[str]:
        argv = [*BUILDAH, "run", "--isolation", "chroot", "--network", "host", "--volume", f"{self.var_dir}:{VAR}"]
        for key, value in ENV.items():
            argv += ["--env", f"{key}={value}"]
        return [*argv, self.name, "--", *command]

    def run(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(list(command)), capture_output=True, text=True, timeout=180)

    def start(self, *command: str) -> None:
        self.command = list(command)
        with self.log_path.open("ab") as log, self.err_path.open("ab") as err:
            self.process = subprocess.Popen(self.argv(list(command)), stdout=log, stderr=err, start_new_session=True)

    def logged(self) -> str:
        return self.log_path.read_text() + self.err_path.read_text()

    def main_process(self) -> psutil.Process | None:
        """The command itself (the container's PID 1 in a runtime's terms), under buildah's chroot helpers."""
        assert self.process is not None
        for child in psutil.Process(self.process.pid).children(recursive=True):
            try:
                # Not buildah-chroot-exec, whose arguments are the command's own argv.
                if child.cmdline()[1:] == self.command[1:] and child.cmdline()[0].endswith(self.command[0]):
                    return child
            except psutil.NoSuchProcess:
                continue
        return None

    def stop(self) -> tuple[int, list[str]]:
        """`docker stop`: SIGTERM to the command, which stops its own children. Returns buildah run's
        exit code and whatever was still running in the container's process group afterwards."""
        assert self.process is not None
        main = self.main_process()
        assert main is not None, self.logged()
        main.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        stragglers = []
        time.sleep(0.5)
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if os.getpgid(proc.pid) == self.process.pid:
                    stragglers.append(" ".join(proc.info["cmdline"] or []))
            except (ProcessLookupError, psutil.Error):
                continue
        return code, stragglers

    def close(self) -> None:
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)  # everything this test started in it
            except ProcessLookupError:
                pass
            self.process.wait(timeout=30)
        subprocess.run([*BUILDAH, "rm", self.name], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def image() -> dict[str, Any]:
    if os.geteuid() != 0:
        pytest.fail("the image tests run buildah as root (storage in /var/lib/containers, chroot isolation)")
    started = time.monotonic()
    built = subprocess.run(
        ["make", "--no-print-directory", "image", f"IMAGE={IMAGE}", f"BUILDAH_STORAGE={STORAGE}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert built.returncode == 0, f"make image failed:\n{built.stdout[-5000:]}\n{built.stderr[-5000:]}"
    print(f"make image: {time.monotonic() - started:.0f}s; {built.stdout.strip().splitlines()[-1]}")
    return json.loads(buildah("inspect", "--type", "image", IMAGE))


@pytest.fixture
def var_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="harness-image-var-"))
    os.chown(path, 1000, 1000)  # the image's user (harness, 1000:1000) writes its database there
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=False)


def test_the_image_runs_as_a_non_root_user_without_build_tools(image, var_dir):
    config = image["Docker"]["config"]
    assert config["User"] == "1000:1000"
    assert config["Cmd"] == ["python", "manage.py", "runharness"]
    assert config["Healthcheck"]["Test"][-1].endswith("/health', timeout=4)")
    box = Container(IMAGE, var_dir, "probe")
    try:
        probed = box.run(
            "sh",
            "-c",
            "id -u; command -v bwrap; python -c 'import sys; print(sys.version_info[:2])';"
            " for tool in uv gcc cc c++ make; do command -v $tool && echo has-$tool; done; true",
        )
        assert probed.returncode == 0, probed.stderr
        lines = probed.stdout.split()
        assert lines[0] == "1000" and lines[1] == "/usr/bin/bwrap", probed.stdout
        assert "(3, 12)" in probed.stdout, probed.stdout
        assert "has-" not in probed.stdout, probed.stdout
    finally:
        box.close()


def test_the_web_and_the_worker_from_the_image_take_an_offline_run(image, var_dir):
    port = free_port()
    web = Container(IMAGE, var_dir, "web")
    worker = Container(IMAGE, var_dir, "worker")
    try:
        migrated = web.run("python", "manage.py", "migrate", "--noinput")  # the release job
        assert migrated.returncode == 0, migrated.stderr
        made = web.run("python", "manage.py", "createapikey", "alice")
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip().splitlines()[-1]

        web.start("python", "manage.py", "runharness", "--no-worker", "--host", "127.0.0.1", "--port", str(port))
        worker.start("python", "manage.py", "runharness", "--no-web")
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        health = None
        while time.monotonic() < deadline:
            for box in (web, worker):
                assert box.process is not None and box.process.poll() is None, f"exited early:\n{box.logged()}"
            try:
                health = httpx.get(f"{base}/health", timeout=2)
            except httpx.HTTPError:
                health = None
            if health is not None and health.status_code == 200 and '"run engine ready"' in worker.logged():
                break
            time.sleep(0.3)
        else:
            pytest.fail(f"the containers did not come up:\nweb:\n{web.logged()}\nworker:\n{worker.logged()}")

        assert health.json() == {
            "status": "ok",
            "model": "offline",
            "backends": {"postgres": False, "sandbox": False, "r2": False},
        }
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=10) as client:
            created = client.post(
                "/api/runs", json={"input": "What is 6 * 7?", "agent": "calculator", "model": "offline"}
            )
            assert created.status_code == 202, f"{created.text}\n{web.logged()[-4000:]}"
            run_id = created.json()["id"]
            deadline = time.monotonic() + 60
            finished = ("succeeded", "failed", "cancelled")
            while (run := client.get(f"/api/runs/{run_id}").json())["status"] not in finished:
                assert time.monotonic() < deadline, run
                time.sleep(0.2)
        assert run["status"] == "succeeded", run
        assert run["output"] == "6 * 7 = 42"
        # The worker container ran it; the web container only queued it.
        assert run_id in worker.logged() and (var_dir / "harness.sqlite3").exists()

        for box in (web, worker):
            code, stragglers = box.stop()
            assert stragglers == [], f"left running after SIGTERM: {stragglers}"
            assert code == 0, box.logged()
    finally:
        web.close()
        worker.close()
