"""The local provider: the SDK's UnixLocal sandbox, with every command confined by bubblewrap.

The SDK's UnixLocal backend runs commands on the host as they are (on Linux it adds
no confinement) and can pass the harness's environment through. Here each command
is wrapped by `sandboxes.bwrap.bwrap_command`, the environment is only the allow-list,
and the workspace is a directory the harness made for this sandbox under
HARNESS_SANDBOX_ROOT (owned by the sandbox's uid when the harness runs as root), with a
filesystem of HARNESS_SANDBOX_DISK_MB of its own mounted on it where the harness may mount
(`sandboxes.quota`), and a cgroup v2 of its own where the kernel delegates one
(`sandboxes.cgroups`). `ConfinedSession.limits_info()` says which of these it got.

The SDK's file tools (apply_patch, view_image, reads and writes) run in the harness
process under the SDK's workspace path checks, which resolve symlinks and refuse
paths that leave the workspace; the escape tests hold them to that.

A command's output costs the worker a bounded amount of memory whatever it prints: the
SDK's exec (`proc.communicate()`) and its PTY sessions (every chunk queued, then joined)
would hold all of it. Here both read 64 KiB at a time into windows of
HARNESS_SANDBOX_OUTPUT_MAX_BYTES that keep the head and the tail and drop the middle
(`sandboxes.output`), and what exec_command / write_stdin give back to the model is cut to
HARNESS_TOOL_OUTPUT_MAX_CHARS.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import os
import signal
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agents.sandbox import Manifest
from agents.sandbox.errors import ExecTimeoutError, ExecTransportError, WorkspaceRootNotFoundError
from agents.sandbox.sandboxes.unix_local import (
    UnixLocalSandboxClient,
    UnixLocalSandboxClientOptions,
    UnixLocalSandboxSession,
    UnixLocalSandboxSessionState,
    _UnixPtyProcessEntry,
)
from agents.sandbox.session import SandboxSession
from agents.sandbox.snapshot import resolve_snapshot
from agents.sandbox.types import ExecResult, User
from django.conf import settings

from sandboxes import quota
from sandboxes.bwrap import bwrap_command, host_uid_for_sandbox
from sandboxes.cgroups import cgroup_support, process_memory_mb, sandbox_cgroup_create
from sandboxes.output import (
    READ_CHUNK_BYTES,
    OutputWindow,
    StreamDecoder,
    approx_tokens,
    fit_for_model,
    model_budget_chars,
    output_max_bytes,
    read_into,
)
from sandboxes.policy import BASE_ENVIRONMENT, SandboxPolicy
from sandboxes.providers import workspace_destroy

# How long a command killed on timeout gets to let go of its pipes.
KILLED_GRACE_SECONDS = 5


class _PtyOutput:
    """A PTY session's output since it was last collected, and its decoder."""

    def __init__(self) -> None:
        self.window = OutputWindow(output_max_bytes())
        self.decoder = StreamDecoder()


def _pty_output(entry: _UnixPtyProcessEntry) -> _PtyOutput:
    """The bounded output of a PTY session, kept on the SDK's entry (which has no field for it)."""
    state = entry.__dict__.get("harness_output")
    if not isinstance(state, _PtyOutput):
        state = entry.__dict__["harness_output"] = _PtyOutput()
    return state


def _kill_group(process: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class ConfinedSession(UnixLocalSandboxSession):
    policy: SandboxPolicy
    confine: bool
    host_uid: int | None
    disk_quota: dict[str, Any]
    cgroup: Path | None

    def configure(self, *, policy: SandboxPolicy, confine: bool) -> None:
        self.policy = policy
        self.confine = confine
        self.host_uid = host_uid_for_sandbox(settings.HARNESS_SANDBOX_UID) if confine else None
        self._host_environment_allowlist = frozenset()
        self.disk_quota = {"enforced": False, "reason": "the workspace is not prepared yet"}
        self.cgroup = None

    def limits_info(self) -> dict[str, Any]:
        """Which kernel-enforced limits this sandbox really has (recorded on its row)."""
        if not self.confine:
            return {"confined": False, "disk_quota": self.disk_quota}
        support = cgroup_support()
        return {
            "disk_quota": self.disk_quota,
            "cgroup": {"path": str(self.cgroup)} if self.cgroup else {"available": False, "reason": support.reason},
            "process_memory_mb": process_memory_mb(self.policy, cgroup=self.cgroup is not None),
            "seccomp": True,
        }

    def _confined_exec_command(
        self, *, command_parts: list[str], workspace_root: Path, env: Mapping[str, str]
    ) -> list[str]:
        if not self.confine:
            return command_parts
        return bwrap_command(
            command=command_parts,
            workspace=workspace_root,
            env=env,
            policy=self.policy,
            drop_to_uid=self.host_uid,
            cgroup=self.cgroup,
        )

    async def _resolved_exec_context(self) -> tuple[dict[str, str], str]:
        workspace = Path(self.state.manifest.root)
        if not await asyncio.to_thread(workspace.exists):
            raise WorkspaceRootNotFoundError(path=workspace)
        env = dict(BASE_ENVIRONMENT)
        env.update(await self.state.manifest.environment.resolve())
        env["HOME"] = str(workspace)
        return env, str(workspace)

    async def _exec_internal(self, *command: str | Path, timeout: float | None = None) -> ExecResult:
        """The SDK's UnixLocal exec, with each of stdout and stderr kept within HARNESS_SANDBOX_OUTPUT_MAX_BYTES.

        Both streams are read 64 KiB at a time into an `OutputWindow` (the first and the last
        half of the limit; the middle is read and dropped, and a marker with the real size
        stands where it was). As in the SDK, the command runs in its own session; on timeout
        its process group is killed and ExecTimeoutError raised, and a failure to start or read
        raises ExecTransportError. The group is also killed if the caller is cancelled.
        """
        env, cwd = await self._resolved_exec_context()
        workspace_root = await asyncio.to_thread(Path(cwd).resolve)
        command_parts = self._workspace_relative_command_parts(command, workspace_root)
        process_cwd, command_parts = self._shell_workspace_process_context(
            command_parts=command_parts, workspace_root=workspace_root, cwd=cwd
        )
        exec_command = self._confined_exec_command(command_parts=command_parts, workspace_root=workspace_root, env=env)
        limit = output_max_bytes()
        stdout, stderr = OutputWindow(limit), OutputWindow(limit)
        proc: asyncio.subprocess.Process | None = None
        try:
            proc = await asyncio.create_subprocess_exec(
                *exec_command,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=process_cwd,
                env=env,
                start_new_session=True,
            )

            async def communicate(process: asyncio.subprocess.Process) -> None:
                await asyncio.gather(read_into(process.stdout, stdout), read_into(process.stderr, stderr))
                await process.wait()

            try:
                await asyncio.wait_for(communicate(proc), timeout=timeout)
            except TimeoutError as e:
                _kill_group(proc)
                # Let the killed command's pipes reach their end, so its transport closes now.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(communicate(proc), timeout=KILLED_GRACE_SECONDS)
                raise ExecTimeoutError(command=command, timeout_s=timeout, cause=e) from e
        except ExecTimeoutError:
            raise
        except Exception as e:
            raise ExecTransportError(command=command, cause=e) from e
        finally:
            if proc is not None and proc.returncode is None:
                _kill_group(proc)
        return ExecResult(stdout=stdout.take().render(), stderr=stderr.take().render(), exit_code=proc.returncode or 0)

    # --- PTY sessions (what exec_command and write_stdin use) ----------------------------
    # The SDK's pumps queue every chunk and its collector joins them all; here the pumps feed
    # one bounded window per session (stdout and stderr merged in arrival order, as the SDK
    # does), and each collection takes the window: the output since the last collection.

    async def _pump_process_stream(self, entry: _UnixPtyProcessEntry, stream: asyncio.StreamReader | None) -> None:
        window = _pty_output(entry).window
        if stream is None:
            return
        while True:
            chunk = await stream.read(READ_CHUNK_BYTES)
            if not chunk:
                break
            window.feed(chunk)
            entry.output_notify.set()

    async def _pump_pty_primary_fd(self, entry: _UnixPtyProcessEntry) -> None:
        window = _pty_output(entry).window
        primary_fd = entry.primary_fd
        if primary_fd is None:
            return
        loop = asyncio.get_running_loop()
        while True:
            try:
                chunk = await loop.run_in_executor(None, os.read, primary_fd, READ_CHUNK_BYTES)
            except OSError as e:
                if e.errno in {errno.EIO, errno.EBADF}:
                    break
                raise
            if not chunk:
                break
            window.feed(chunk)
            entry.output_notify.set()

    async def _collect_pty_output(
        self, *, entry: _UnixPtyProcessEntry, yield_time_ms: int, max_output_tokens: int | None
    ) -> tuple[bytes, int | None, bool]:
        """Wait until the process ends or the yield time passes, then take what its window holds.

        The text is cut to what a tool result may give the model (HARNESS_TOOL_OUTPUT_MAX_CHARS
        less the SDK's header lines, or the model's own max_output_tokens if smaller); when it
        is cut, the original token count is estimated from the bytes the command really printed.
        """
        state = _pty_output(entry)
        closed = entry.output_closed.is_set()
        if not closed:
            try:
                await asyncio.wait_for(entry.output_closed.wait(), timeout=yield_time_ms / 1000)
            except TimeoutError:
                pass
            closed = entry.output_closed.is_set()
        taken = state.window.take()
        first, last = state.decoder.decode(taken, final=closed)
        text, cut = fit_for_model(first, last, total_bytes=taken.total, budget=model_budget_chars(max_output_tokens))
        return text.encode(), (approx_tokens(taken.total) if cut else None), closed

    async def _prepare_backend_workspace(self) -> None:
        await super()._prepare_backend_workspace()
        workspace = Path(self.state.manifest.root)
        if quota.mounts_at(workspace):
            self.disk_quota = {"enforced": True, "size_mb": self.policy.disk_mb, "how": quota.HOW}
        else:
            self.disk_quota = await asyncio.to_thread(
                quota.workspace_mount, workspace, size_mb=self.policy.disk_mb, owner_uid=self.host_uid
            )
        if self.confine:
            self.cgroup = await asyncio.to_thread(sandbox_cgroup_create, workspace.name, self.policy)
        self._give_to_sandbox(workspace)

    def _give_to_sandbox(self, path: Path) -> None:
        """Files the harness writes belong to the sandbox's uid, so its commands may change them."""
        if self.host_uid is None:
            return
        root = Path(self.state.manifest.root)
        current = path
        while True:
            try:
                os.chown(current, self.host_uid, self.host_uid, follow_symlinks=False)
            except FileNotFoundError:
                pass
            if current == root or root not in current.parents:
                return
            current = current.parent

    async def write(self, path: Path, data: io.IOBase, *, user: str | User | None = None) -> None:
        await super().write(path, data, user=user)
        self._give_to_sandbox(self.normalize_path(path, for_write=True))

    async def mkdir(self, path: Path | str, *, parents: bool = False, user: str | User | None = None) -> None:
        await super().mkdir(path, parents=parents, user=user)
        self._give_to_sandbox(self.normalize_path(path, for_write=True))

    async def _write_new_file(self, path: Path, data: io.IOBase, *, user: str | User | None = None) -> None:
        await super()._write_new_file(path, data, user=user)
        requested = Path(path)
        self._give_to_sandbox(self.normalize_path(requested.parent, for_write=True) / requested.name)


class ConfinedClient(UnixLocalSandboxClient):
    """Creates ConfinedSessions in a workspace directory the harness chose."""

    def __init__(self, *, policy: SandboxPolicy, confine: bool = True) -> None:
        super().__init__(inherit_host_environment=False, host_environment_allowlist=())
        self.policy = policy
        self.confine = confine

    async def create(
        self,
        *,
        snapshot: Any = None,
        manifest: Manifest | None = None,
        options: UnixLocalSandboxClientOptions | None = None,
    ) -> SandboxSession:
        if manifest is None or not Path(manifest.root).is_absolute():
            raise ValueError("ConfinedClient.create needs a manifest rooted at the sandbox's workspace")
        self._validate_manifest_for_create(manifest)
        session_id = uuid.uuid4()
        state = UnixLocalSandboxSessionState(
            session_id=session_id,
            manifest=manifest,
            snapshot=resolve_snapshot(snapshot, str(session_id)),
            workspace_root_owned=True,
            exposed_ports=(),
        )
        return self._wrap(ConfinedSession.from_state(state))

    async def resume(self, state: Any) -> SandboxSession:
        if not isinstance(state, UnixLocalSandboxSessionState):
            raise TypeError("ConfinedClient.resume expects a UnixLocalSandboxSessionState")
        return self._wrap(ConfinedSession.from_state(state))

    def _wrap(self, inner: UnixLocalSandboxSession) -> SandboxSession:
        if not isinstance(inner, ConfinedSession):
            raise TypeError("ConfinedClient only wraps ConfinedSessions")
        inner.configure(policy=self.policy, confine=self.confine)
        return self._wrap_session(inner, instrumentation=self._instrumentation)

    async def delete(self, session: SandboxSession) -> SandboxSession:
        inner = session._inner
        if not isinstance(inner, ConfinedSession):
            raise TypeError("ConfinedClient.delete expects a ConfinedSession")
        # Kills what is left (its cgroup, when it has one), unmounts its filesystem, removes it.
        await asyncio.to_thread(workspace_destroy, Path(inner.state.manifest.root))
        return session
