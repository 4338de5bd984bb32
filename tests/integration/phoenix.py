"""Start a real Arize Phoenix server (`phoenix serve`) for tests, and read spans back from it.

Each server gets free loopback ports (HTTP and OTLP/gRPC), a fresh temporary working
directory (its SQLite database lives there: nothing is shared with another instance of
this project on the host), and its own process group, which `stop()` ends: SIGTERM,
then SIGKILL after a grace period.

    server = PhoenixServer().start()
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = server.otlp_endpoint   # exporter appends /v1/traces
    spans = server.spans("my-project", wait_for=lambda spans: len(spans) >= 2)
    server.stop()
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

STARTUP_TIMEOUT_SECONDS = 120
STOP_GRACE_SECONDS = 10


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def phoenix_executable() -> Path:
    """The `phoenix` console script of the interpreter running the tests (the venv's bin)."""
    path = Path(sys.executable).parent / "phoenix"
    if not path.exists():
        raise RuntimeError(
            f"no phoenix executable next to {sys.executable}: `uv sync --group dev` installs arize-phoenix"
        )
    return path


class PhoenixServer:
    def __init__(self, *, startup_timeout: float = STARTUP_TIMEOUT_SECONDS) -> None:
        self.startup_timeout = startup_timeout
        self.workdir = Path(tempfile.mkdtemp(prefix="harness-phoenix-"))
        self.log_path = self.workdir / "phoenix.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.grpc_port = 0
        self.startup_seconds: float | None = None

    @property
    def base_url(self) -> str:
        """The UI and REST API, e.g. http://127.0.0.1:PORT (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def otlp_endpoint(self) -> str:
        """The value for OTEL_EXPORTER_OTLP_ENDPOINT: the OTLP/HTTP exporter appends `/v1/traces`."""
        return self.base_url

    @property
    def traces_endpoint(self) -> str:
        """The full OTLP/HTTP traces URL (OTLPSpanExporter(endpoint=...), OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)."""
        return f"{self.base_url}/v1/traces"

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    def _env(self) -> dict[str, str]:
        # Nothing of the caller's Phoenix/OpenTelemetry configuration (a Postgres URL, auth,
        # a collector endpoint) may leak into the test server.
        env = {key: value for key, value in os.environ.items() if not key.startswith(("PHOENIX_", "OTEL_"))}
        env.update(
            {
                "PHOENIX_HOST": "127.0.0.1",
                "PHOENIX_PORT": str(self.port),
                "PHOENIX_GRPC_PORT": str(self.grpc_port),
                "PHOENIX_WORKING_DIR": str(self.workdir),
                "PHOENIX_TELEMETRY_ENABLED": "false",
                "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
                "PHOENIX_ALLOWED_SANDBOX_PROVIDERS": "NONE",
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def start(self) -> PhoenixServer:
        executable = phoenix_executable()
        for attempt in range(3):  # another process may take a "free" port before Phoenix binds it
            self.port, self.grpc_port = free_port(), free_port()
            with self.log_path.open("ab") as log:
                log.write(f"--- start {attempt + 1}: http {self.port}, grpc {self.grpc_port}\n".encode())
                log.flush()
                started = time.monotonic()
                self.process = subprocess.Popen(
                    [str(executable), "serve"],
                    cwd=self.workdir,
                    env=self._env(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            if self._wait_ready():
                self.startup_seconds = time.monotonic() - started
                return self
            self._kill_group()
            if "address already in use" not in self.log_tail().lower():
                break
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"Phoenix did not come up within {self.startup_timeout:.0f} s; log tail:\n{tail}")

    def _wait_ready(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                # /readyz also checks Phoenix's database (migrations done).
                if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        return False

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def rss_mb(self) -> float:
        """Resident memory of the server's process group, in MiB (Linux /proc)."""
        assert self.process is not None
        total_kb = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.getpgid(int(entry.name)) != self.process.pid:
                    continue
                for line in (entry / "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total_kb += int(line.split()[1])
            except (OSError, ValueError):
                continue
        return total_kb / 1024

    def client(self) -> Any:
        from phoenix.client import Client

        return Client(base_url=self.base_url)

    def spans(
        self,
        project: str,
        *,
        wait_for: Callable[[list[dict[str, Any]]], bool] | None = None,
        timeout: float = 30,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """The project's spans, once `wait_for(spans)` holds (by default: once there is any).

        Spans reach Phoenix in batches (BatchSpanProcessor, then Phoenix's own insert queue),
        so this polls. A project that does not exist yet (no span received) reads as no spans.
        Fails with the last spans seen if the predicate does not hold within `timeout` seconds.
        """
        predicate = wait_for or bool
        client = self.client()
        deadline = time.monotonic() + timeout
        spans: list[dict[str, Any]] = []
        while True:
            try:
                spans = [dict(span) for span in client.spans.get_spans(project_identifier=project, limit=limit)]
            except httpx.HTTPStatusError as error:
                if error.response.status_code != 404:  # 404: the project does not exist yet
                    raise
                spans = []
            if predicate(spans):
                return spans
            if time.monotonic() > deadline:
                names = [span.get("name") for span in spans]
                raise AssertionError(
                    f"Phoenix project {project!r}: condition not met within {timeout} s; {len(spans)} spans: {names}"
                )
            time.sleep(0.25)

    def _kill_group(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after a grace period; then remove the working dir."""
        if self.process is not None:
            group = self.process.pid
            try:
                os.killpg(group, signal.SIGTERM)
                self.process.wait(timeout=STOP_GRACE_SECONDS)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                pass
            # Whatever is left of this group (the server or a straggler child) is killed.
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=30)
            self.process = None
        shutil.rmtree(self.workdir, ignore_errors=True)
