"""The local provider: the SDK's UnixLocal sandbox, with every command confined by bubblewrap.

The SDK's UnixLocal backend runs commands on the host as they are (on Linux it adds
no confinement) and can pass the harness's environment through. Here each command
is wrapped by `sandboxes.bwrap.bwrap_command`, the environment is only the allow-list,
and the workspace is a directory the harness made for this sandbox under
HARNESS_SANDBOX_ROOT (owned by the sandbox's uid when the harness runs as root).

The SDK's file tools (apply_patch, view_image, reads and writes) run in the harness
process under the SDK's workspace path checks, which resolve symlinks and refuse
paths that leave the workspace; the escape tests hold them to that.
"""

from __future__ import annotations

import asyncio
import io
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agents.sandbox import Manifest
from agents.sandbox.errors import WorkspaceRootNotFoundError
from agents.sandbox.sandboxes.unix_local import (
    UnixLocalSandboxClient,
    UnixLocalSandboxClientOptions,
    UnixLocalSandboxSession,
    UnixLocalSandboxSessionState,
)
from agents.sandbox.session import SandboxSession
from agents.sandbox.snapshot import resolve_snapshot
from agents.sandbox.types import User
from django.conf import settings

from sandboxes.bwrap import bwrap_command, host_uid_for_sandbox
from sandboxes.policy import BASE_ENVIRONMENT, SandboxPolicy
from sandboxes.providers import remove_tree


class ConfinedSession(UnixLocalSandboxSession):
    policy: SandboxPolicy
    confine: bool
    host_uid: int | None

    def configure(self, *, policy: SandboxPolicy, confine: bool) -> None:
        self.policy = policy
        self.confine = confine
        self.host_uid = host_uid_for_sandbox(settings.HARNESS_SANDBOX_UID) if confine else None
        self._host_environment_allowlist = frozenset()

    def _confined_exec_command(
        self, *, command_parts: list[str], workspace_root: Path, env: Mapping[str, str]
    ) -> list[str]:
        if not self.confine:
            return command_parts
        return bwrap_command(
            command=command_parts, workspace=workspace_root, env=env, policy=self.policy, drop_to_uid=self.host_uid
        )

    async def _resolved_exec_context(self) -> tuple[dict[str, str], str]:
        workspace = Path(self.state.manifest.root)
        if not await asyncio.to_thread(workspace.exists):
            raise WorkspaceRootNotFoundError(path=workspace)
        env = dict(BASE_ENVIRONMENT)
        env.update(await self.state.manifest.environment.resolve())
        env["HOME"] = str(workspace)
        return env, str(workspace)

    async def _prepare_backend_workspace(self) -> None:
        await super()._prepare_backend_workspace()
        self._give_to_sandbox(Path(self.state.manifest.root))

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
        await asyncio.to_thread(remove_tree, Path(inner.state.manifest.root))
        return session
