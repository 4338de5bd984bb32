"""A stand-in for the `e2b` package's AsyncSandbox, for testing the E2B provider at the SDK boundary.

The SDK's real E2BSandboxClient and E2BSandboxSession run unchanged against it. Its
"remote" sandbox is a scratch directory whose /workspace and /tmp are bound into a
bubblewrap jail where commands really run, so the SDK's own helper scripts, path checks
and shell tool behave as they would on E2B. It records every create call, command and
environment it is given, and every kill. No network and no E2B account are involved.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BWRAP_BASE = [
    "bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin",
    "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/sbin", "/sbin",
    "--proc", "/proc", "--dev", "/dev",
]  # fmt: skip


@dataclass
class Result:
    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0


@dataclass
class FakeE2B:
    """What the fake saw: one per test."""

    created: list[dict[str, Any]] = field(default_factory=list)
    commands: list[dict[str, Any]] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    killed: list[str] = field(default_factory=list)
    live: dict[str, FakeSandbox] = field(default_factory=dict)
    fail_writes: bool = False

    def sandbox_class(self) -> type[FakeSandbox]:
        fake = self

        class Bound(FakeSandbox):
            registry = fake

        return Bound


class FakeSandbox:
    registry: FakeE2B

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.sandbox_id = f"fake{uuid.uuid4().hex[:12]}"
        self.root = Path(tempfile.mkdtemp(prefix="fake-e2b-"))
        (self.root / "workspace").mkdir()
        (self.root / "tmp").mkdir()
        (self.root / "home").mkdir()
        self.kwargs = kwargs
        self.processes: list[asyncio.subprocess.Process] = []
        self.files = _Files(self)
        self.commands = _Commands(self)
        self.pty = None

    @classmethod
    async def create(cls, **kwargs: Any) -> FakeSandbox:
        sandbox = cls(kwargs)
        cls.registry.created.append({"sandbox_id": sandbox.sandbox_id, **kwargs})
        cls.registry.live[sandbox.sandbox_id] = sandbox
        return sandbox

    async def kill(self, **opts: Any) -> bool:
        self.registry.killed.append(self.sandbox_id)
        self.registry.live.pop(self.sandbox_id, None)
        for process in self.processes:
            if process.returncode is None:
                process.kill()
        shutil.rmtree(self.root, ignore_errors=True)
        return True

    async def is_running(self, request_timeout: float | None = None) -> bool:
        return self.sandbox_id in self.registry.live

    async def pause(self) -> None:
        raise AssertionError("the harness never pauses E2B sandboxes")

    def host_path(self, path: str) -> Path:
        for prefix in ("/workspace", "/tmp", "/home"):
            if path == prefix or path.startswith(prefix + "/"):
                return self.root / path.lstrip("/")
        raise PermissionError(f"the fake sandbox only has /workspace, /tmp and /home, not {path}")

    def argv(self, command: str, cwd: str | None, envs: dict[str, str] | None) -> list[str]:
        argv = [*BWRAP_BASE]
        for prefix in ("workspace", "tmp", "home"):
            argv += ["--bind", str(self.root / prefix), f"/{prefix}"]
        argv += ["--chdir", cwd or "/", "--clearenv", "--setenv", "PATH", "/usr/bin:/bin"]
        for name, value in (envs or {}).items():
            argv += ["--setenv", name, value]
        return [*argv, "--", "sh", "-c", command]


class _Files:
    def __init__(self, sandbox: FakeSandbox) -> None:
        self.sandbox = sandbox

    async def write(self, path: str, data: bytes, request_timeout: float | None = None) -> None:
        if self.sandbox.registry.fail_writes:
            raise OSError("fake E2B: the files API is down")
        target = self.sandbox.host_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        self.sandbox.registry.written.append(path)

    async def read(self, path: str, format: str = "bytes") -> bytes:
        return self.sandbox.host_path(path).read_bytes()

    async def remove(self, path: str, request_timeout: float | None = None) -> None:
        target = self.sandbox.host_path(path)
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()

    async def make_dir(self, path: str, request_timeout: float | None = None) -> bool:
        self.sandbox.host_path(path).mkdir(parents=True, exist_ok=True)
        return True


class _Handle:
    def __init__(self, process: asyncio.subprocess.Process, pumps: list[asyncio.Task[None]]) -> None:
        self.process = process
        self.pid = process.pid
        self.pumps = pumps

    async def wait(self) -> Result:
        code = await self.process.wait()
        await asyncio.gather(*self.pumps, return_exceptions=True)
        return Result(exit_code=code)

    async def kill(self) -> bool:
        if self.process.returncode is None:
            self.process.kill()
        return True


class _Commands:
    def __init__(self, sandbox: FakeSandbox) -> None:
        self.sandbox = sandbox

    async def run(
        self,
        command: str,
        background: bool | None = None,
        envs: dict[str, str] | None = None,
        user: Any = None,
        cwd: str | None = None,
        on_stdout: Any = None,
        on_stderr: Any = None,
        stdin: bool | None = None,
        timeout: float | None = None,
        request_timeout: float | None = None,
    ) -> Any:
        self.sandbox.registry.commands.append({"command": command, "envs": dict(envs or {}), "cwd": cwd})
        process = await asyncio.create_subprocess_exec(
            *self.sandbox.argv(command, cwd, envs),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={},
        )
        self.sandbox.processes.append(process)
        if background:

            async def pump(stream: asyncio.StreamReader, callback: Any) -> None:
                while chunk := await stream.read(4096):
                    if callback is not None:
                        await callback(chunk.decode(errors="replace"))

            assert process.stdout is not None and process.stderr is not None
            pumps = [
                asyncio.create_task(pump(process.stdout, on_stdout)),
                asyncio.create_task(pump(process.stderr, on_stderr)),
            ]
            return _Handle(process, pumps)
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=timeout or 60)
        return Result(stdout.decode(errors="replace"), stderr.decode(errors="replace"), process.returncode or 0)


@dataclass
class Listed:
    sandbox_id: str
    metadata: dict[str, str]


class FakePaginator:
    def __init__(self, items: list[Listed]) -> None:
        self.items = items
        self.has_next = True

    def next_items(self) -> list[Listed]:
        self.has_next = False
        return self.items
