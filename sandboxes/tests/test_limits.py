"""The kernel-enforced limits of local sandboxes: the seccomp program, the per-workspace disk
quota, per-sandbox cgroups (or, where there are none, the per-process fallback), and what
/api/sandbox/status says about each. The escape suite drives the same limits through the
agent's tools; these tests look at each mechanism at its edge."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import override_settings

from conftest import make_run, settings_import
from execution.executor import run_execute
from sandboxes import quota, seccomp
from sandboxes.cgroups import cgroup_support, process_memory_mb
from sandboxes.models import Sandbox
from sandboxes.policy import SandboxPolicy
from sandboxes.providers import workspace_destroy


def can_mount() -> bool:
    """Root with CAP_SYS_ADMIN and loop devices: what a filesystem per workspace needs."""
    status = Path("/proc/self/status").read_text()
    effective = int(re.search(r"CapEff:\s*([0-9a-f]+)", status).group(1), 16)  # type: ignore[union-attr]
    return os.geteuid() == 0 and bool(effective & (1 << 21)) and Path("/dev/loop-control").exists()


ROOT_ONLY = pytest.mark.skipif(
    not can_mount(), reason="a filesystem per workspace needs root with CAP_SYS_ADMIN and loop devices"
)


# --- seccomp: the program itself ---------------------------------------------------------


def header_numbers(path: str, pattern: str) -> dict[str, int]:
    text = Path(path).read_text()
    return {name: int(number) for name, number in re.findall(pattern, text)}


@pytest.mark.skipif(
    not Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h").exists(), reason="x86_64 kernel headers not installed"
)
def test_x86_64_numbers_match_the_kernel_headers():
    numbers = header_numbers("/usr/include/x86_64-linux-gnu/asm/unistd_64.h", r"#define __NR_(\w+)\s+(\d+)")
    for name, number in seccomp.X86_64.items():
        assert numbers[name] == number, name
    assert set(seccomp.DENIED) <= set(seccomp.X86_64)


@pytest.mark.skipif(not Path("/usr/include/asm-generic/unistd.h").exists(), reason="kernel headers not installed")
def test_aarch64_numbers_match_the_generic_kernel_headers():
    numbers = header_numbers("/usr/include/asm-generic/unistd.h", r"#define __NR(?:3264)?_(\w+)\s+(\d+)")
    for name, number in seccomp.AARCH64.items():
        assert numbers[name] == number, name
    # The calls aarch64 does not have are the x86-only ones.
    assert set(seccomp.DENIED) - set(seccomp.AARCH64) == {"iopl", "ioperm"}


def test_the_program_is_well_formed_classic_bpf():
    program = seccomp.build_filter()
    assert len(program) % 8 == 0 and 0 < len(program) // 8 < 4096
    insns = [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    # It checks the architecture first and ends in returns only.
    assert insns[0] == (seccomp.BPF_LD_W_ABS, 0, 0, seccomp.OFFSET_ARCH)
    assert insns[-1][0] == seccomp.BPF_RET_K and insns[-1][3] == seccomp.SECCOMP_RET_ERRNO | 38  # ENOSYS
    assert insns[-2][3] == seccomp.SECCOMP_RET_ERRNO | 1  # EPERM
    for index, (code, jt, jf, _) in enumerate(insns):
        if code & 0x07 == 0x05:  # jumps stay inside the program
            assert index + 1 + max(jt, jf) < len(insns)


def test_the_filter_file_is_private_and_stable():
    path = seccomp.filter_path()
    assert path.read_bytes() == seccomp.build_filter()
    info = path.parent.lstat()
    assert info.st_uid == os.geteuid() and info.st_mode & 0o077 == 0
    assert seccomp.filter_path() == path


# --- the disk quota at the mount level ------------------------------------------------------


@pytest.fixture
def scratch_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="harness-quota-test-"))
    yield root
    for point in quota.mounts_under(root):
        quota.workspace_unmount(point)
    subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=False)


def loop_devices() -> set[str]:
    return {entry.name for entry in Path("/sys/block").iterdir() if (entry / "loop" / "backing_file").exists()}


@ROOT_ONLY
def test_a_workspace_filesystem_holds_just_under_its_size_and_no_more(scratch_root):
    workspace = scratch_root / "ws"
    workspace.mkdir()
    loops_before = loop_devices()
    result = quota.workspace_mount(workspace, size_mb=32, owner_uid=None)
    assert result == {"enforced": True, "size_mb": 32, "how": quota.HOW}
    assert quota.mounts_at(workspace) == 1 and list(workspace.iterdir()) == []
    # Nothing of the image is left as a file on the host's disk: the loop device holds it.
    assert [p.name for p in scratch_root.iterdir()] == ["ws"]
    size = os.statvfs(workspace).f_blocks * os.statvfs(workspace).f_frsize
    assert 28 * 2**20 < size <= 32 * 2**20
    # Just under: fits. Past it: ENOSPC, even for root (no reserved blocks).
    free = os.statvfs(workspace).f_bavail * os.statvfs(workspace).f_frsize
    (workspace / "under").write_bytes(b"\0" * (free - 64 * 1024))
    with pytest.raises(OSError) as full, open(workspace / "over", "wb") as handle:
        for _ in range(64):
            handle.write(b"\0" * 2**20)
            handle.flush()
    assert full.value.errno == 28  # ENOSPC
    workspace_destroy(workspace)
    assert not workspace.exists() and quota.mounts_at(workspace) == 0
    assert loop_devices() == loops_before


@ROOT_ONLY
def test_cleanup_cannot_be_held_up_by_open_files_or_processes(scratch_root):
    workspace = scratch_root / "ws"
    workspace.mkdir()
    assert quota.workspace_mount(workspace, size_mb=16, owner_uid=None)["enforced"]
    (workspace / "deep").mkdir()
    holder = subprocess.Popen(["sleep", "60"], cwd=workspace / "deep")  # a process working inside
    handle = open(workspace / "held.txt", "w")  # and a file this process keeps open
    try:
        (workspace / "deep").chmod(0)
        info = workspace_destroy(workspace)
        assert info["killed_processes"] >= 1 and info["unmounted"] == 1
        assert holder.wait(5) == -9
        assert not workspace.exists() and quota.mounts_at(workspace) == 0
    finally:
        handle.close()
        holder.kill()


def destroy_twice_at_once(workspace: Path) -> list[object]:
    """workspace_destroy from two threads released together: what each returned or raised."""
    import threading

    start = threading.Barrier(2)
    outcomes: list[object] = []

    def destroy() -> None:
        start.wait()
        try:
            outcomes.append(workspace_destroy(workspace))
        except Exception as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=destroy) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return outcomes


@ROOT_ONLY
def test_two_cleanups_of_one_workspace_at_once_both_succeed(scratch_root):
    """The worker closing its sandbox while an operator (or the reaper) destroys it: whichever
    detaches the filesystem first, the other finds it gone and succeeds too."""
    for attempt in range(10):
        workspace = scratch_root / f"ws{attempt}"
        workspace.mkdir()
        assert quota.workspace_mount(workspace, size_mb=16, owner_uid=None)["enforced"]
        (workspace / "file").write_text("x")
        outcomes = destroy_twice_at_once(workspace)
        assert len(outcomes) == 2 and all(isinstance(outcome, dict) for outcome in outcomes), outcomes
        assert sum(outcome.get("unmounted", 0) for outcome in outcomes) >= 1  # type: ignore[attr-defined]
        assert not workspace.exists() and quota.mounts_at(workspace) == 0


def test_a_failed_unmount_still_raises_when_the_mount_stays(monkeypatch, tmp_path):
    """Only an unmount someone else did is forgiven: a mount that stays is an error."""
    import errno

    monkeypatch.setattr(quota, "mounts_at", lambda path: 1)

    def refuse(path: Path) -> None:
        raise OSError(errno.EINVAL, "umount2: Invalid argument")

    monkeypatch.setattr(quota, "_umount2", refuse)
    with pytest.raises(OSError, match="Invalid argument"):
        quota.workspace_unmount(tmp_path)


def run_as(argv_prefix: list[str], code: str, module_dir: Path) -> str:
    """Run `code` with the system's python3 (readable by any uid) and a copy of sandboxes/quota.py."""
    done = subprocess.run(
        [*argv_prefix, "/usr/bin/python3", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env={"PYTHONPATH": str(module_dir), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


FALLBACK_PROBE = """
from pathlib import Path
import quota
print(quota.workspace_mount(Path({ws!r}), size_mb=32, owner_uid=None))
print("MOUNTS", quota.mounts_at(Path({ws!r})))
"""


@ROOT_ONLY
def test_without_the_privilege_to_mount_the_quota_is_reported_missing_not_claimed(scratch_root):
    workspace = scratch_root / "ws"
    workspace.mkdir()
    os.chmod(scratch_root, 0o777)
    os.chmod(workspace, 0o777)
    code = FALLBACK_PROBE.format(ws=str(workspace))
    module_dir = Path(tempfile.mkdtemp(prefix="harness-quota-module-"))
    (module_dir / "quota.py").write_text(Path(quota.__file__).read_text())
    os.chmod(module_dir, 0o755)
    os.chmod(module_dir / "quota.py", 0o644)
    # Root without CAP_SYS_ADMIN, as in most containers: the mount fails, and says so.
    capless = run_as(["setpriv", "--inh-caps=-all", "--bounding-set=-all"], code, module_dir)
    assert "'enforced': False" in capless and "mounting a filesystem for the workspace failed" in capless, capless
    assert "MOUNTS 0" in capless
    # Not root at all: it does not try.
    unprivileged = run_as(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"], code, module_dir)
    assert "'enforced': False" in unprivileged and "does not run as root" in unprivileged, unprivileged
    subprocess.run(["rm", "-rf", str(module_dir)], check=False)
    assert [p.name for p in scratch_root.iterdir()] == ["ws"] and list(workspace.iterdir()) == []


def test_no_quota_when_it_is_turned_off(scratch_root):
    workspace = scratch_root / "ws"
    workspace.mkdir()
    assert quota.workspace_mount(workspace, size_mb=0, owner_uid=None) == {
        "enforced": False,
        "reason": "HARNESS_SANDBOX_DISK_MB=0: no disk quota",
    }
    assert quota.mounts_at(workspace) == 0


@pytest.mark.django_db(transaction=True)
def test_a_sandbox_without_a_quota_records_it_and_still_works(alice, bwrap):
    with override_settings(HARNESS_SANDBOX_DISK_MB=0):
        run = make_run(alice, agent="coder", input="```sh\nhead -c 1M /dev/zero > one.bin && echo wrote\n```")
        run_execute(run.pk)
    sandbox = Sandbox.objects.get(run=run)
    assert sandbox.manifest["enforced"]["disk_quota"] == {
        "enforced": False,
        "reason": "HARNESS_SANDBOX_DISK_MB=0: no disk quota",
    }
    assert sandbox.cleanup_state == "done" and not Path(sandbox.provider_session_id).exists()


@pytest.mark.django_db(transaction=True)
def test_a_reaped_workspace_is_unmounted_and_stray_images_go(alice, bwrap):
    """A worker that died leaves a mounted workspace and maybe an image it was making: the reaper takes both."""
    from sandboxes.services import ORPHAN_DIR_MIN_AGE_SECONDS, sandboxes_reap

    if not can_mount():
        pytest.skip("a filesystem per workspace needs root with CAP_SYS_ADMIN and loop devices")
    orphan = bwrap / "sbx_orphan"
    orphan.mkdir()
    assert quota.workspace_mount(orphan, size_mb=16, owner_uid=None)["enforced"]
    (orphan / "file").write_text("x")
    image = bwrap / ".sbx_dead.img"
    image.write_bytes(b"\0" * 4096)
    old = os.stat(bwrap).st_mtime - ORPHAN_DIR_MIN_AGE_SECONDS - 10
    os.utime(orphan, (old, old))
    os.utime(image, (old, old))
    report = sandboxes_reap()
    assert report.orphan_workspaces == ["sbx_orphan"]
    assert quota.mounts_at(orphan) == 0 and list(bwrap.iterdir()) == []


# --- memory and processes: a cgroup v2 per sandbox, or the per-process fallback -------------


def test_cgroup_support_is_detected_and_explained():
    support = cgroup_support()
    v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
    if not v2:
        assert support.available is False
        assert "cgroup v1" in support.reason or "hybrid cgroup hierarchy" in support.reason, support.reason
    if support.available:
        assert support.base is not None and (support.base / "cgroup.procs").exists()
    else:
        assert support.reason and support.reason != "ok"


def test_the_fallback_keeps_processes_times_memory_within_the_total():
    policy = SandboxPolicy.from_settings()
    per_process = process_memory_mb(policy, cgroup=False)
    assert per_process * policy.max_processes <= policy.total_memory_mb
    assert per_process == min(policy.memory_mb, policy.total_memory_mb // policy.max_processes)
    assert process_memory_mb(policy, cgroup=True) == min(policy.memory_mb, policy.total_memory_mb)


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(cgroup_support().available, reason="this host has per-sandbox cgroups; the fallback is unused")
def test_without_a_cgroup_each_process_gets_total_over_max_processes(alice, bwrap):
    # The test limits: 32 processes, 512 MB each at most, 2048 MB in total -> 64 MB per process.
    script = (
        "```sh\ngrep -E 'Max (address space|processes)' /proc/self/limits\n```\n"
        "```python\n"
        "small = bytearray(32 * 2**20); print('SMALL-OK')\n"
        "try:\n    big = bytearray(96 * 2**20); print('BIG-ALLOCATED')\nexcept MemoryError:\n    print('BIG-REFUSED')\n"
        "```\n"
    )
    with override_settings(HARNESS_SANDBOX_TOTAL_MEMORY_MB=2048):
        run = make_run(alice, agent="coder", input=script)
        run_execute(run.pk)
    outputs = [e.data["output"] for e in run.events.filter(type="tool.output").order_by("seq")]
    assert re.search(r"Max processes +32 +32", outputs[0]), outputs[0]
    assert re.search(rf"Max address space +{64 * 2**20} +{64 * 2**20}", outputs[0]), outputs[0]
    assert "SMALL-OK" in outputs[1] and "BIG-REFUSED" in outputs[1], outputs[1]
    enforced = Sandbox.objects.get(run=run).manifest["enforced"]
    assert enforced["cgroup"] == {"available": False, "reason": cgroup_support().reason}
    assert enforced["process_memory_mb"] == 64 and enforced["seccomp"] is True


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    not cgroup_support().available, reason=f"no per-sandbox cgroup v2 on this host: {cgroup_support().reason}"
)
def test_with_a_cgroup_the_sandbox_is_held_to_its_total(alice, bwrap):
    # Four processes of 96 MB each (written, so really resident) pass the per-process limit
    # (256 MB) but not the sandbox's 256 MB together: the cgroup's OOM killer stops some.
    hog = "import time; hog = b'x' * (96 * 2**20); time.sleep(3)"
    script = f'```sh\nfor i in 1 2 3 4; do (python3 -c "{hog}" && echo survived-$i) & done; wait; echo waited\n```\n'
    with override_settings(HARNESS_SANDBOX_TOTAL_MEMORY_MB=256, HARNESS_SANDBOX_COMMAND_TIMEOUT_SECONDS=30):
        run = make_run(alice, agent="coder", input=script)
        run_execute(run.pk)
    sandbox = Sandbox.objects.get(run=run)
    cgroup = Path(sandbox.manifest["enforced"]["cgroup"]["path"])
    assert cgroup.name == sandbox.pk and not cgroup.exists()  # removed at cleanup
    output = run.events.filter(type="tool.output").first().data["output"]
    assert "waited" in output and output.count("survived-") < 4, output
    assert sandbox.cleanup_state == "done"


# --- what /api/sandbox/status says -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_status_reports_what_the_kernel_enforces_here(api, alice, bwrap):
    body = api.get("/api/sandbox/status", who=alice).json()
    limits = body["local"]["limits"]
    assert body["local"]["self_test"]["ok"] is True and limits["seccomp"] == {"enabled": True, "checked": True}
    support = cgroup_support()
    assert limits["cgroup"] == support.as_dict()
    assert limits["memory"]["process_memory_mb"] == process_memory_mb(
        SandboxPolicy.from_settings(), cgroup=support.available
    )
    if not support.available:
        assert limits["memory"]["enforced_by"].startswith("per-process limits only")
    disk = limits["disk_quota"]
    if can_mount():
        assert disk == {"enforced": True, "size_mb": 1024, "how": quota.HOW}
    else:
        assert disk["enforced"] is False and disk["reason"] and disk["size_mb"] == 1024
    assert quota.mounts_under(bwrap) == [] and list(bwrap.iterdir()) == []
    with override_settings(HARNESS_SANDBOX_DISK_MB=0):
        off = api.get("/api/sandbox/status", who=alice).json()["local"]["limits"]["disk_quota"]
    assert off == {"enforced": False, "size_mb": 0, "reason": "HARNESS_SANDBOX_DISK_MB=0: no disk quota"}


def writable_cgroup2_hierarchy() -> Path | None:
    """A cgroup v2 hierarchy this process may make child cgroups in (even one without controllers)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.startswith("cgroup2 "):
            point = Path(left.split(" ")[4])
            if os.access(point, os.W_OK):
                return point
    return None


@pytest.mark.skipif(
    os.geteuid() != 0 or writable_cgroup2_hierarchy() is None, reason="needs root and a cgroup v2 hierarchy"
)
def test_commands_join_their_cgroup_and_destroying_it_kills_them(bwrap, monkeypatch):
    """The cgroup plumbing on any cgroup v2 hierarchy, with or without the memory and pids
    controllers: the launcher puts bubblewrap and everything under it in the sandbox's cgroup,
    and destroying the cgroup kills them all and removes it."""
    from sandboxes import cgroups
    from sandboxes.bwrap import bwrap_command, host_uid_for_sandbox

    hierarchy = writable_cgroup2_hierarchy()
    assert hierarchy is not None
    base = hierarchy / f"harness-test-{uuid.uuid4().hex[:8]}"
    base.mkdir()
    monkeypatch.setattr(cgroups, "cgroup_support", lambda: cgroups.CgroupSupport(True, "ok", base))
    name = "sbx_cgroup_test"
    cgroup = base / name
    process = None
    try:
        cgroup.mkdir()
        from sandboxes.providers import sandbox_root

        workspace = sandbox_root() / name  # the root made traversable for the sandbox's uid
        workspace.mkdir()
        uid = host_uid_for_sandbox(65534)
        if uid is not None:
            os.chown(workspace, uid, uid)
        policy = SandboxPolicy.from_settings()
        argv = bwrap_command(
            command=["/bin/sh", "-c", "sleep 60 & sleep 61 & wait"],
            workspace=workspace,
            env={"PATH": "/usr/bin:/bin"},
            policy=policy,
            drop_to_uid=uid,
            cgroup=cgroup,
        )
        assert any(f"--as={policy.memory_mb * 2**20}" == arg for arg in argv)  # the cgroup holds the total
        process = subprocess.Popen(
            argv, cwd="/", env={}, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        pids: list[int] = []
        for _ in range(100):
            pids = [int(pid) for pid in (cgroup / "cgroup.procs").read_text().split()]
            if len(pids) >= 4:  # bwrap, its init, sh, two sleeps (bwrap's parent may have exited)
                break
            time.sleep(0.05)
        assert process.poll() is None, process.communicate()
        assert process.pid in pids and len(pids) >= 4, pids
        killed = cgroups.sandbox_cgroup_destroy(name)
        assert killed >= 4
        assert process.wait(5) != 0
        assert not cgroup.exists()
        workspace_destroy(workspace)
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        for path in (cgroup, base):
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)


# --- the settings: bad values stop the harness at boot ----------------------------------------


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"HARNESS_SANDBOX_DISK_MB": "8"}, "HARNESS_SANDBOX_DISK_MB: 0 (no quota) or at least 16, got 8"),
        ({"HARNESS_SANDBOX_DISK_MB": "-1"}, "HARNESS_SANDBOX_DISK_MB: must be at least 0, got -1"),
        ({"HARNESS_SANDBOX_DISK_MB": "lots"}, "HARNESS_SANDBOX_DISK_MB: expected an integer, got 'lots'"),
        (
            {"HARNESS_SANDBOX_TOTAL_MEMORY_MB": "1024", "HARNESS_SANDBOX_MAX_PROCESSES": "64"},
            "without a cgroup each process gets 16 MB, and a process needs at least 32",
        ),
        ({"HARNESS_SANDBOX_TOTAL_MEMORY_MB": "10"}, "HARNESS_SANDBOX_TOTAL_MEMORY_MB: must be at least 64, got 10"),
        ({"HARNESS_SANDBOX_CGROUP_ROOT": "/tmp/cg"}, "HARNESS_SANDBOX_CGROUP_ROOT: expected a directory under"),
    ],
)
def test_bad_limit_settings_fail_at_boot(variables, message):
    done = settings_import(**variables)
    assert done.returncode != 0 and "ImproperlyConfigured" in done.stderr and message in done.stderr, done.stderr
