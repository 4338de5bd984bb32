"""A disk quota per local workspace, enforced by the kernel: each workspace is a filesystem of its own.

When the harness may mount (it runs as root with CAP_SYS_ADMIN, and the host has loop
devices), a workspace is an ext4 filesystem of HARNESS_SANDBOX_DISK_MB made in a sparse
image file and mounted on the host at the workspace directory, before anything is
written there:

- a command that writes past it gets ENOSPC (ext4 made with no reserved blocks, so the
  harness's own writes, as root, are held to it too), and the host's disk grows by at
  most the image's size;
- the image file is unlinked as soon as it is mounted: the loop device holds the only
  reference, so nothing of it is left on disk once the filesystem is unmounted, and a
  crash leaves no image file behind (the kernel frees it with the last reference);
- the harness reads outputs from the mounted workspace as before, then unmounts it
  (a lazy unmount, which always succeeds even if something still holds a file open)
  and removes the now empty directory. The sandbox cannot stop this: its mounts live in
  its own mount namespace, and its files live in a filesystem that goes as a whole.

Where the harness cannot mount, the workspace is a plain directory on the host's disk
and only the per-file limit (HARNESS_SANDBOX_MAX_FILE_MB) applies: `workspace_mount`
says so and why, the sandbox row's manifest records it and /api/sandbox/status
reports it. Nothing claims a quota that is not there.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8
# Where mkfs.ext4 and mount live on Debian, whatever the worker's PATH.
_SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOW = "ext4 filesystem image on a loop device, mounted at the workspace"


def _tool(name: str) -> str | None:
    return shutil.which(name, path=_SBIN_PATH)


def _unescape(field: str) -> str:
    """A path from /proc/self/mountinfo, where space, tab, newline and backslash are octal escapes."""
    out, index = [], 0
    while index < len(field):
        code = field[index + 1 : index + 4]
        if field[index] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(field[index + 1 : index + 4], 8)))
            index += 4
        else:
            out.append(field[index])
            index += 1
    return "".join(out)


def mounts_at(path: Path) -> int:
    """How many mounts sit exactly at `path` in this process's mount namespace."""
    target = str(path)
    count = 0
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        fields = line.split(" ")
        if len(fields) > 4 and _unescape(fields[4]) == target:
            count += 1
    return count


def mounts_under(root: Path) -> list[Path]:
    """Mount points strictly under `root` (what a crashed worker may have left mounted)."""
    prefix = str(root).rstrip("/") + "/"
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split(" ")
        if len(fields) > 4:
            point = _unescape(fields[4])
            if point.startswith(prefix):
                found.append(Path(point))
    return found


def cannot_mount_reason() -> str | None:
    """Why this process cannot give workspaces a filesystem of their own, or None if it can try."""
    if os.geteuid() != 0:
        return "the harness does not run as root, so it cannot mount a filesystem per workspace"
    for name in ("mkfs.ext4", "mount"):
        if _tool(name) is None:
            return f"{name} is not installed (apt-get install e2fsprogs mount)"
    if not os.path.exists("/dev/loop-control"):
        return "no loop devices on this host (/dev/loop-control is missing)"
    return None


def workspace_mount(workspace: Path, *, size_mb: int, owner_uid: int | None) -> dict[str, Any]:
    """Mount a fresh ext4 filesystem of `size_mb` at `workspace` (an empty directory).

    Returns what the manifest records: {"enforced": True, "size_mb", "how"} or
    {"enforced": False, "reason"}. Never leaves a half-made mount or an image file behind.
    """
    if size_mb <= 0:
        return {"enforced": False, "reason": "HARNESS_SANDBOX_DISK_MB=0: no disk quota"}
    reason = cannot_mount_reason()
    if reason is not None:
        return {"enforced": False, "reason": reason}
    if any(workspace.iterdir()):
        raise RuntimeError(f"the workspace must be empty before its filesystem is mounted: {workspace}")
    image = workspace.parent / f".{workspace.name}.img"
    mounted = False
    try:
        fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.ftruncate(fd, size_mb * 2**20)
        finally:
            os.close(fd)
        uid = owner_uid if owner_uid is not None else os.geteuid()
        gid = owner_uid if owner_uid is not None else os.getegid()
        # No journal (the workspace is thrown away), no reserved blocks (root is held to it too).
        _run(
            [
                str(_tool("mkfs.ext4")),
                "-q",
                "-F",
                "-m",
                "0",
                "-O",
                "^has_journal",
                "-E",
                f"root_owner={uid}:{gid},nodiscard",
                "-L",
                "harness-ws",
                str(image),
            ]
        )
        _run(
            [
                str(_tool("mount")),
                "-t",
                "ext4",
                "-o",
                "loop,nosuid,nodev,noatime",
                str(image),
                str(workspace),
            ]
        )
        mounted = True
        (workspace / "lost+found").rmdir()
        os.chmod(workspace, 0o700)
        return {"enforced": True, "size_mb": size_mb, "how": HOW}
    except (OSError, subprocess.SubprocessError) as exc:
        if mounted:
            workspace_unmount(workspace)
        detail = exc.stderr.decode(errors="replace").strip() if isinstance(exc, subprocess.CalledProcessError) else ""
        reason = f"mounting a filesystem for the workspace failed: {type(exc).__name__}: {detail or exc}"[:500]
        logger.warning("no disk quota for a sandbox workspace: %s", reason, extra={"workspace": str(workspace)})
        return {"enforced": False, "reason": reason}
    finally:
        # Mounted, the loop device holds the image; either way no file stays on the host's disk.
        try:
            os.unlink(image)
        except FileNotFoundError:
            pass


def _run(argv: list[str]) -> None:
    # Fixed argv built above; no shell.
    subprocess.run(argv, capture_output=True, check=True, timeout=60, env={"PATH": _SBIN_PATH}, cwd="/")  # noqa: S603


def _umount2(path: Path) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.umount2(os.fsencode(str(path)), MNT_DETACH | UMOUNT_NOFOLLOW) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"umount2 {path}: {os.strerror(error)}")


def workspace_unmount(workspace: Path) -> int:
    """Detach every mount at `workspace` (lazily: open files cannot hold it); how many there were.

    Symlinks are not followed (UMOUNT_NOFOLLOW); raises OSError if a mount stays.
    """
    removed = 0
    for _ in range(16):
        if not mounts_at(workspace):
            return removed
        try:
            _umount2(workspace)
        except OSError as exc:
            # Another cleanup of the same workspace (the worker closing its sandbox while an
            # operator or the reaper destroys it) detached it, or removed the directory, first.
            if exc.errno in (errno.EINVAL, errno.ENOENT) and not mounts_at(workspace):
                return removed
            raise
        removed += 1
    if mounts_at(workspace):
        raise OSError(f"{workspace} is still mounted after {removed} unmounts")
    return removed


def quota_self_test(root: Path, *, size_mb: int) -> dict[str, Any]:
    """Can workspaces here get a filesystem of `size_mb` now? Mounts and removes a small one to find out."""
    import tempfile

    if size_mb <= 0:
        return {"enforced": False, "size_mb": 0, "reason": "HARNESS_SANDBOX_DISK_MB=0: no disk quota"}
    reason = cannot_mount_reason()
    if reason is not None:
        return {"enforced": False, "size_mb": size_mb, "reason": reason}
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="quotatest-", dir=root))
    try:
        result = workspace_mount(scratch, size_mb=16, owner_uid=None)
        if result["enforced"]:
            (scratch / "probe").write_bytes(b"ok")
            result = {"enforced": True, "size_mb": size_mb, "how": HOW}
        else:
            result = {**result, "size_mb": size_mb}
        return result
    except OSError as exc:
        return {"enforced": False, "size_mb": size_mb, "reason": f"{type(exc).__name__}: {exc}"}
    finally:
        try:
            workspace_unmount(scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
