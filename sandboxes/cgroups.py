"""Memory and processes per sandbox, in total: a cgroup v2 per sandbox where the kernel allows it.

With one, every command of a sandbox runs in `<base>/<sandbox id>`, whose memory.max is
HARNESS_SANDBOX_TOTAL_MEMORY_MB (swap 0) and pids.max HARNESS_SANDBOX_MAX_PROCESSES: all
its processes together, however many commands it runs at once. The base is
HARNESS_SANDBOX_CGROUP_ROOT (a directory delegated to the harness's user), or, when the
harness runs as root on a cgroup v2 host, /sys/fs/cgroup/harness-sandboxes. Commands enter
their cgroup before they leave root or enter bubblewrap (`join_argv`), so nothing a sandbox
runs can start outside it; destroying the sandbox kills the whole cgroup (cgroup.kill) and
removes it.

Without one (cgroup v1 or hybrid hosts like this one's, a container with no delegation, a
harness that is not root and was given no delegated cgroup), `cgroup_support()` says why,
/api/sandbox/status reports it, and the limits fall back to per-process ones chosen so the
total stays bounded: each process's address space is at most
HARNESS_SANDBOX_TOTAL_MEMORY_MB / HARNESS_SANDBOX_MAX_PROCESSES (`process_memory_mb`), and
the kernel's per-uid process limit caps their number.
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from sandboxes.policy import SandboxPolicy

CGROUP_MOUNT = Path("/sys/fs/cgroup")
DEFAULT_BASE_NAME = "harness-sandboxes"
NEEDED_CONTROLLERS = ("memory", "pids")


@dataclass(frozen=True)
class CgroupSupport:
    available: bool
    reason: str
    base: Path | None = None

    def as_dict(self) -> dict[str, object]:
        return {"available": self.available, "reason": self.reason, "base": str(self.base) if self.base else None}


def _read(path: Path) -> str:
    return path.read_text().strip()


def _cgroup2_mounts() -> list[str]:
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        left, _, right = line.partition(" - ")
        if right.split(" ")[:1] == ["cgroup2"]:
            found.append(left.split(" ")[4])
    return found


def _probe() -> CgroupSupport:
    controllers_file = CGROUP_MOUNT / "cgroup.controllers"
    if not controllers_file.exists():
        hybrid = _cgroup2_mounts()
        if hybrid:
            try:
                controllers = _read(Path(hybrid[0]) / "cgroup.controllers").split()
            except OSError:
                controllers = []
            return CgroupSupport(
                False,
                f"hybrid cgroup hierarchy: cgroup v2 is mounted at {hybrid[0]} with controllers "
                f"{controllers or 'none'}; memory and pids are bound to cgroup v1, which the harness does not manage",
            )
        return CgroupSupport(False, "cgroup v1 only: /sys/fs/cgroup is not a cgroup v2 hierarchy")
    configured = settings.HARNESS_SANDBOX_CGROUP_ROOT
    if configured:
        base = Path(configured)
    elif os.geteuid() == 0:
        base = CGROUP_MOUNT / DEFAULT_BASE_NAME
    else:
        return CgroupSupport(
            False,
            "the harness is not root and HARNESS_SANDBOX_CGROUP_ROOT names no cgroup delegated to it",
        )
    try:
        parent_controllers = _read(base.parent / "cgroup.controllers").split()
        missing = [name for name in NEEDED_CONTROLLERS if name not in parent_controllers]
        if missing:
            return CgroupSupport(False, f"controllers {missing} are not available under {base.parent}", base)
        enabled = _read(base.parent / "cgroup.subtree_control").split()
        if any(name not in enabled for name in NEEDED_CONTROLLERS):
            (base.parent / "cgroup.subtree_control").write_text(" ".join(f"+{n}" for n in NEEDED_CONTROLLERS))
        base.mkdir(exist_ok=True)
        wanted = [*NEEDED_CONTROLLERS, *(["cpu"] if "cpu" in parent_controllers else [])]
        enabled = _read(base / "cgroup.subtree_control").split()
        if any(name not in enabled for name in NEEDED_CONTROLLERS):
            (base / "cgroup.subtree_control").write_text(" ".join(f"+{n}" for n in wanted))
        if not os.access(base / "cgroup.procs", os.W_OK):
            return CgroupSupport(False, f"{base}/cgroup.procs is not writable by uid {os.geteuid()}", base)
    except OSError as exc:
        return CgroupSupport(
            False, f"cgroup v2 delegation unavailable at {base}: {exc.strerror or exc} ({type(exc).__name__})", base
        )
    return CgroupSupport(True, "ok", base)


@functools.lru_cache(maxsize=1)
def cgroup_support() -> CgroupSupport:
    """Whether per-sandbox cgroups work here (probed once per process), and if not, why."""
    return _probe()


def process_memory_mb(policy: SandboxPolicy, *, cgroup: bool) -> int:
    """The address-space limit of each sandboxed process.

    With a cgroup the total is the cgroup's business and each process keeps
    HARNESS_SANDBOX_MEMORY_MB; without one, each gets at most total / max_processes.
    """
    if cgroup:
        return min(policy.memory_mb, policy.total_memory_mb)
    return min(policy.memory_mb, policy.total_memory_mb // policy.max_processes)


def sandbox_cgroup_path(name: str) -> Path | None:
    support = cgroup_support()
    if not support.available or support.base is None:
        return None
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"not a sandbox cgroup name: {name!r}")
    return support.base / name


def sandbox_cgroup_create(name: str, policy: SandboxPolicy) -> Path | None:
    """Make the sandbox's cgroup with its limits; None where cgroups are unavailable."""
    path = sandbox_cgroup_path(name)
    if path is None:
        return None
    path.mkdir(exist_ok=True)
    (path / "memory.max").write_text(str(policy.total_memory_mb * 2**20))
    if (path / "memory.swap.max").exists():
        (path / "memory.swap.max").write_text("0")
    (path / "pids.max").write_text(str(policy.max_processes))
    return path


def sandbox_cgroup_destroy(name: str) -> int:
    """Kill everything in the sandbox's cgroup and remove it; how many processes were killed."""
    path = sandbox_cgroup_path(name)
    if path is None or not path.is_dir():
        return 0
    killed = 0
    for _ in range(50):
        try:
            pids = [int(pid) for pid in _read(path / "cgroup.procs").split()]
        except FileNotFoundError:
            return killed
        if pids:
            killed += len(pids)
            if (path / "cgroup.kill").exists():
                (path / "cgroup.kill").write_text("1")
            else:
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        try:
            path.rmdir()
            return killed
        except FileNotFoundError:
            return killed
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
        time.sleep(0.02)
    raise OSError(errno.EBUSY, f"cgroup {path} still has processes")


JOIN_SCRIPT = 'printf "0\\n" >"$1" || exit 125; shift; exec "$@"'


def join_argv(cgroup: Path, argv: list[str]) -> list[str]:
    """argv run from inside `cgroup`: a shell moves itself there, then execs argv."""
    return ["/bin/sh", "-c", JOIN_SCRIPT, "sh", str(cgroup / "cgroup.procs"), *argv]
