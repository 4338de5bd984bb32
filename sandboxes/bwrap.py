"""The bubblewrap command line that confines one sandboxed command.

Inside: new user, pid, network, ipc, uts and cgroup namespaces; uid/gid 1000; the
system directories read-only; a private /tmp; only the workspace writable, at the
same path as on the host; a clean environment; rlimits on CPU seconds, address
space, processes, file size and open files; a wall-clock limit. When the command
(or its time) ends, bubblewrap's init exits and the kernel kills everything left
in the pid namespace, so no background process outlives its command; when the
worker dies, --die-with-parent takes the sandbox with it.

When the harness runs as root, the sandbox is entered as HARNESS_SANDBOX_UID
(setpriv) so the kernel enforces the process limit (root is exempt from it).

Every command runs under the seccomp filter of `sandboxes.seccomp` (no namespaces, mounts,
ptrace, keyrings, bpf, userfaultfd, perf events, io_uring...): a `sh` opens the filter on
fd 3 and execs the rest, which hands it to `bwrap --seccomp 3`; where the sandbox has a
cgroup v2 (`sandboxes.cgroups`), the same `sh` first moves itself into it, so nothing the
command starts is outside it.

The workspace is bound at its host path: the SDK gives that path to the model in its
instructions and its file tools (which run in the harness process, on the host) resolve
every path against it, so a path a command prints (`realpath`, `os.getcwd()`) must mean
the same file to them. Inside, /proc/self/mountinfo therefore shows the workspace's path,
and nothing else of the host's: the other mounts are the system directories at their
usual paths, /proc, /dev and the sandbox's own tmpfs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from sandboxes.cgroups import process_memory_mb
from sandboxes.policy import SandboxPolicy
from sandboxes.seccomp import filter_path

SANDBOX_UID = 1000
SANDBOX_HOSTNAME = "sandbox"
# The descriptor bubblewrap reads the seccomp program from.
SECCOMP_FD = 3
# Runs first, as the harness's user: joins the sandbox's cgroup ($1, when there is one), opens the
# seccomp filter ($2) on fd 3, and execs the rest (setpriv, bwrap).
LAUNCH_SCRIPT = f'[ -z "$1" ] || printf "0\\n" >"$1" || exit 125; f=$2; shift 2; exec "$@" {SECCOMP_FD}<"$f"'
# Top-level system paths bound read-only (or re-created as symlinks, on merged-/usr systems).
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# The few files from /etc that programs need; /etc itself (shadow, the harness's config) stays out.
ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/localtime",
    "/etc/mime.types",
)


class BwrapUnavailable(Exception):
    pass


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def host_uid_for_sandbox(sandbox_uid: int) -> int | None:
    """The host uid sandboxes run as: HARNESS_SANDBOX_UID under root, else the harness's own."""
    return sandbox_uid if os.geteuid() == 0 else None


def _system_binds() -> list[str]:
    args: list[str] = []
    for path in SYSTEM_PATHS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in ETC_FILES:
        args += ["--ro-bind-try", path, path]
    return args


def bwrap_command(
    *,
    command: Sequence[str],
    workspace: Path,
    env: Mapping[str, str],
    policy: SandboxPolicy,
    drop_to_uid: int | None,
    cgroup: Path | None = None,
) -> list[str]:
    """The argv that runs `command` confined; `cgroup` is the sandbox's cgroup v2, if it has one."""
    bwrap = bwrap_path()
    if bwrap is None:
        raise BwrapUnavailable("bwrap (bubblewrap) is not installed: apt-get install bubblewrap")
    argv: list[str] = [
        "/bin/sh",
        "-c",
        LAUNCH_SCRIPT,
        "sh",
        str(cgroup / "cgroup.procs") if cgroup is not None else "",
        str(filter_path()),
    ]
    if drop_to_uid is not None:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise BwrapUnavailable("setpriv (util-linux) is needed to leave root before entering a sandbox")
        argv += [
            setpriv,
            f"--reuid={drop_to_uid}",
            f"--regid={drop_to_uid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
        ]
    argv += [
        bwrap,
        "--unshare-user",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--uid",
        str(SANDBOX_UID),
        "--gid",
        str(SANDBOX_UID),
        "--hostname",
        SANDBOX_HOSTNAME,
        "--die-with-parent",
        "--new-session",
        "--seccomp",
        str(SECCOMP_FD),
        *_system_binds(),
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--size",
        str(policy.tmp_mb * 2**20),
        "--tmpfs",
        "/tmp",
        "--bind",
        str(workspace),
        str(workspace),
        "--remount-ro",
        "/",
        "--chdir",
        str(workspace),
        "--clearenv",
    ]
    for name, value in env.items():
        argv += ["--setenv", name, value]
    argv += [
        "--",
        "/usr/bin/timeout",
        "--signal=KILL",
        str(policy.command_timeout_seconds),
        "/usr/bin/prlimit",
        f"--cpu={policy.cpu_seconds}",
        f"--as={process_memory_mb(policy, cgroup=cgroup is not None) * 2**20}",
        f"--nproc={policy.max_processes}",
        f"--fsize={policy.max_file_mb * 2**20}",
        "--nofile=256",
        "--core=0",
        "--",
        *command,
    ]
    return argv


def bwrap_self_test(policy: SandboxPolicy, *, drop_to_uid: int | None, root: Path) -> tuple[bool, str]:
    """Run `id -u` confined in a scratch workspace: does confinement work on this host now?

    Where util-linux's unshare is installed, it also tries `unshare -U` inside: the seccomp
    filter must refuse it.
    """
    if bwrap_path() is None:
        return False, "bwrap is not installed"
    root.mkdir(parents=True, exist_ok=True)
    import tempfile

    check_seccomp = os.path.exists("/usr/bin/unshare")
    script = "id -u"
    if check_seccomp:
        script += "; if /usr/bin/unshare -U true 2>/dev/null; then echo seccomp:off; else echo seccomp:on; fi"
    expected = str(SANDBOX_UID) + ("\nseccomp:on" if check_seccomp else "")
    workspace = Path(tempfile.mkdtemp(prefix="selftest-", dir=root))
    try:
        if drop_to_uid is not None:
            os.chown(workspace, drop_to_uid, drop_to_uid)
        argv = bwrap_command(
            command=["/bin/sh", "-c", script],
            workspace=workspace,
            env={"PATH": "/usr/bin:/bin"},
            policy=policy,
            drop_to_uid=drop_to_uid,
        )
        done = subprocess.run(argv, capture_output=True, timeout=10, check=False, cwd="/", env={})
        output = (done.stdout + done.stderr).decode(errors="replace").strip()
        if done.returncode == 0 and output == expected:
            return True, "ok" if check_seccomp else "ok (seccomp not checked: /usr/bin/unshare is missing)"
        if output.endswith("seccomp:off"):
            return False, "the seccomp filter did not stop unshare -U"
        return False, f"exit {done.returncode}: {output[:300]}"
    except (OSError, subprocess.TimeoutExpired, BwrapUnavailable) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
