"""Which sandbox provider runs commands here, and the provider-specific pieces that need no SDK.

`local` confines with bubblewrap, `e2b` uses hosted E2B sandboxes; `unconfined`
runs on the host with no isolation and exists only for development, behind an
explicit opt-in that is logged loudly every time it is used.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

from django.conf import settings

from sandboxes.bwrap import bwrap_path

logger = logging.getLogger(__name__)

LOCAL = "local"
E2B = "e2b"
UNCONFINED = "unconfined"
HOST_PROVIDERS = (LOCAL, UNCONFINED)
# Every E2B sandbox the harness creates carries these metadata keys, so the reaper can
# find its own sandboxes (and only its own) at the provider.
E2B_METADATA_MARK = "harness"
E2B_METADATA_SANDBOX = "harness_sandbox"
E2B_METADATA_RUN = "harness_run"


class SandboxUnavailable(Exception):
    """No provider that may run this sandbox is available; the message says what to do."""


def provider_choose() -> str:
    configured = settings.SANDBOX_PROVIDER
    if configured == E2B or (not configured and settings.E2B_API_KEY):
        if not settings.E2B_API_KEY:
            raise SandboxUnavailable("SANDBOX_PROVIDER is 'e2b' but E2B_API_KEY is not set.")
        return E2B
    if configured == UNCONFINED:
        if not settings.HARNESS_SANDBOX_ALLOW_UNCONFINED:
            raise SandboxUnavailable(
                "SANDBOX_PROVIDER is 'unconfined', which runs agent commands on this host with no "
                "isolation; it also needs HARNESS_SANDBOX_ALLOW_UNCONFINED=true (development only)."
            )
        return UNCONFINED
    if bwrap_path() is not None:
        return LOCAL
    if configured == LOCAL:
        raise SandboxUnavailable(
            "SANDBOX_PROVIDER is 'local' but bubblewrap is not installed (apt-get install bubblewrap)."
        )
    raise SandboxUnavailable(
        "No confining sandbox provider is available: install bubblewrap (apt-get install bubblewrap) "
        "for the local provider, or set E2B_API_KEY for E2B. For development only, "
        "SANDBOX_PROVIDER=unconfined with HARNESS_SANDBOX_ALLOW_UNCONFINED=true runs commands unconfined."
    )


def warn_unconfined(sandbox_id: str) -> None:
    logger.warning(
        "UNCONFINED SANDBOX: agent commands run on this host with the harness's privileges and no "
        "isolation (SANDBOX_PROVIDER=unconfined, HARNESS_SANDBOX_ALLOW_UNCONFINED=true). "
        "Never use this with untrusted input or in production.",
        extra={"sandbox_id": sandbox_id},
    )


# --- the local workspace, on the host ---------------------------------------------


def sandbox_root() -> Path:
    root = Path(settings.HARNESS_SANDBOX_ROOT)
    root.mkdir(parents=True, exist_ok=True)
    # Traversable by the unprivileged sandbox uid, not listable by it.
    os.chmod(root, 0o711)
    return root.resolve()


def workspace_path_checked(path: str) -> Path:
    """A workspace path from a row, refused unless it is a direct child of the sandbox root."""
    candidate = Path(path)
    root = sandbox_root()
    if not candidate.is_absolute() or candidate.parent.resolve() != root or candidate.name in ("", ".", ".."):
        raise ValueError(f"not a sandbox workspace under {root}: {path!r}")
    return candidate


def workspace_processes(workspace: Path) -> list[int]:
    """Host pids of processes working inside a workspace (what a sandbox left running)."""
    prefix = str(workspace)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd == prefix or cwd.startswith(prefix + "/"):
            found.append(int(entry.name))
    return found


def workspace_destroy(workspace: Path) -> dict[str, int]:
    """Kill what still runs in a local workspace and remove it, whatever its permissions.

    Its cgroup (when it has one) is killed and removed, then its filesystem (when it has
    one of its own) is detached, lazily so that no open file can hold it, and the empty
    mount point is removed; otherwise its tree is removed file by file.
    """
    from sandboxes.cgroups import sandbox_cgroup_destroy
    from sandboxes.quota import workspace_unmount

    killed = sandbox_cgroup_destroy(workspace.name)
    for _ in range(3):
        pids = workspace_processes(workspace)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    unmounted = workspace_unmount(workspace)
    remove_tree(workspace)
    return {"killed_processes": killed, **({"unmounted": unmounted} if unmounted else {})}


def remove_tree(path: Path) -> None:
    """rmtree that also removes what the sandbox made unwritable (chmod 000 directories),
    and trees too deep for Python's recursive rmtree or for a path (GNU chmod and rm walk
    them without recursing or building whole paths)."""
    try:
        _rmtree(path)
    except (RecursionError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno != errno.ENAMETOOLONG:
            raise
        logger.warning("a workspace too deep for rmtree: removing it with rm", extra={"path": str(path)})
        # Fixed argv, no shell; the path is the harness's own workspace.
        subprocess.run(["chmod", "-R", "u+rwX", "--", str(path)], capture_output=True, check=False)  # noqa: S603, S607
        subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], capture_output=True, check=True)  # noqa: S603, S607


def _rmtree(path: Path) -> None:
    import shutil

    def retry(function: object, failed: str, exc: BaseException) -> None:
        parent = os.path.dirname(failed)
        try:
            os.chmod(parent, stat.S_IRWXU)
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, stat.S_IRWXU)
                shutil.rmtree(failed, onexc=retry)
            else:
                os.unlink(failed)
        except FileNotFoundError:
            pass

    if path.is_symlink():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, onexc=retry)
