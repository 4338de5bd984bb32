"""The escape suite: from inside a local sandbox, through the real agent tool path, nothing gets out.

Each test runs the `coder` agent on the offline model, which calls the SDK's
exec_command / apply_patch / view_image tools with the script in the input, so the
attempt travels the same path a real model's tool call would: SDK tool ->
ConfinedSession -> bubblewrap. Each attempt must be contained, the harness must
go on working, and the sandbox row must end stopped and cleaned up with its
workspace gone.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import psutil
import pytest
from django.conf import settings
from django.test import override_settings

from artifacts.models import Artifact
from audit.models import AuditLog
from conftest import make_run
from execution.executor import run_execute
from runs.models import Run
from sandboxes.bwrap import SANDBOX_UID
from sandboxes.models import Sandbox

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("bwrap")]

CANARY = "canary-" + uuid.uuid4().hex


def sh(script: str) -> str:
    return f"Please run this.\n```sh\n{script}\n```\n"


def run_coder(owner, text: str) -> Run:
    run = make_run(owner, agent="coder", input=text)
    run_execute(run.pk)
    run.refresh_from_db()
    return run


def tool_outputs(run: Run) -> list[str]:
    return [e.data["output"] for e in run.events.filter(type="tool.output").order_by("seq")]


def all_text(run: Run) -> str:
    return "\n".join(str(e.data) for e in run.events.all()) + (run.output or "") + run.error


def assert_cleaned(run: Run) -> Sandbox:
    sandbox = Sandbox.objects.get(run=run)
    assert sandbox.status == Sandbox.Status.STOPPED, sandbox.exit_info
    assert sandbox.cleanup_state == Sandbox.Cleanup.DONE, sandbox.cleanup_error
    assert sandbox.cleaned_at is not None and sandbox.stopped_at is not None
    assert not Path(sandbox.provider_session_id).exists(), "the workspace outlived its sandbox"
    assert AuditLog.objects.filter(target_type="sandbox", target_id=sandbox.pk, action="sandbox.cleaned").exists()
    assert not sandbox_processes(), "a sandbox process outlived its run"
    return sandbox


def sandbox_processes() -> list[str]:
    """Host processes a sandbox could have left: anything running as the sandbox's host uid."""
    uid = settings.HARNESS_SANDBOX_UID if os.geteuid() == 0 else None
    found = []
    for process in psutil.process_iter(["uids", "cmdline", "status"]):
        try:
            if process.info["status"] == psutil.STATUS_ZOMBIE:
                continue  # exited; init reaps it
            if uid is not None and process.info["uids"].real == uid:
                found.append(" ".join(process.info["cmdline"] or []))
            elif "harness-sbx-test-" in " ".join(process.info["cmdline"] or []) and process.pid != os.getpid():
                found.append(" ".join(process.info["cmdline"] or []))
        except (psutil.Error, TypeError):
            continue
    return found


def harness_still_works(owner) -> None:
    run = run_coder(owner, sh("echo still-fine"))
    assert run.status == "succeeded" and "still-fine" in tool_outputs(run)[0]
    calc = make_run(owner, input="What is 6 * 7?")
    assert run_execute(calc.pk) == "succeeded"


def test_commands_run_confined_as_an_unprivileged_user_with_a_clean_environment(alice, monkeypatch):
    monkeypatch.setenv("HARNESS_CANARY_SECRET", CANARY)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-" + CANARY)
    with override_settings(OPENAI_API_KEY="sk-" + CANARY):
        run = run_coder(
            alice,
            sh(
                "id -u; id -g; hostname; echo HOME=$HOME; env | sort\n"
                "cat /proc/1/environ /proc/self/environ 2>/dev/null | tr '\\0' '\\n'\n"
                "echo PIDS=$(ls /proc | grep -c '^[0-9]')"
            ),
        )
    assert run.status == "succeeded", run.error
    output = tool_outputs(run)[0]
    assert f"\n{SANDBOX_UID}\n{SANDBOX_UID}\nsandbox\n" in output
    assert CANARY not in all_text(run) and "[REDACTED]" not in all_text(run)
    names = {line.split("=", 1)[0] for line in output.splitlines() if "=" in line and line.split("=", 1)[0].isupper()}
    assert names <= {
        "HOME",
        "PATH",
        "LANG",
        "LC_ALL",
        "TMPDIR",
        "PYTHONDONTWRITEBYTECODE",
        "PWD",
        "OLDPWD",
        "SHLVL",
        "PIDS",
        "_",
    }
    # Its own pid namespace: only the sandbox's few processes are visible, not the host's.
    pids = int(output.split("PIDS=")[1].split()[0])
    assert pids < 10
    assert_cleaned(run)


def test_host_files_are_out_of_reach(alice):
    base = Path(settings.BASE_DIR)
    database = settings.DATABASES["default"].get("TEST", {}).get("NAME") or settings.DATABASES["default"]["NAME"]
    targets = [
        base / ".env",
        base / "manage.py",
        base / "harness_site" / "settings.py",
        "/root",
        "/etc/shadow",
        "/etc/passwd",
        "/home",
        database,
    ]
    script = "\n".join(
        f'if cat "{t}" >/dev/null 2>&1 || ls "{t}" >/dev/null 2>&1; then echo "LEAK:{t}"; else echo "DENIED:{t}"; fi'
        for t in targets
    )
    run = run_coder(alice, sh(script))
    output = tool_outputs(run)[0]
    assert "LEAK:" not in output
    assert output.count("DENIED:") == len(targets)
    assert_cleaned(run)


def test_no_network_not_even_loopback_services(alice):
    # A harness-like listener on the host's loopback, beside Postgres (5432) and Redis (6379).
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        script = f"""
import socket
for host, port in [("127.0.0.1", 5432), ("127.0.0.1", 6379), ("127.0.0.1", {port}), ("1.1.1.1", 53),
                   ("93.184.216.34", 80), ("10.0.0.1", 80)]:
    s = socket.socket(); s.settimeout(2)
    try:
        s.connect((host, port)); print("OPEN", host, port)
    except OSError as exc:
        print("CLOSED", host, port, type(exc).__name__)
for name in ["example.com", "pypi.org", "localhost.localdomain"]:
    try:
        print("RESOLVED", name, socket.getaddrinfo(name, 80)[0][4])
    except OSError as exc:
        print("UNRESOLVED", name, type(exc).__name__)
"""
        run = run_coder(alice, f"```python\n{script}\n```")
    finally:
        listener.close()
    output = tool_outputs(run)[0]
    assert "OPEN" not in output and "RESOLVED" not in output.replace("UNRESOLVED", "")
    assert output.count("CLOSED") == 6 and output.count("UNRESOLVED") == 3
    assert_cleaned(run)


def test_writes_outside_the_workspace_fail_or_stay_inside(alice, bwrap):
    marker = "pwned-" + uuid.uuid4().hex[:8]
    run = run_coder(
        alice,
        sh(
            f"for p in /usr/{marker} /etc/{marker} /{marker} ../{marker} /tmp/{marker} /proc/{marker}; do "
            f'if touch "$p" 2>/dev/null; then echo "WROTE:$p"; else echo "REFUSED:$p"; fi; done; '
            f"echo inside > ok.txt && echo WORKSPACE-OK"
        ),
    )
    output = tool_outputs(run)[0]
    for path in (f"/usr/{marker}", f"/etc/{marker}", f"/{marker}", f"/proc/{marker}"):
        assert f"REFUSED:{path}" in output
    assert "WORKSPACE-OK" in output
    # /tmp and the workspace's parent are the sandbox's own tmpfs: nothing reaches the host.
    for host_path in (Path("/tmp") / marker, bwrap / marker, Path("/usr") / marker, Path("/") / marker):
        assert not host_path.exists()
    assert_cleaned(run)


def test_symlinks_cannot_lead_the_file_tools_out(alice, tmp_path):
    secret = tmp_path / "host-secret.txt"
    secret.write_text(CANARY + "\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    plant = sh(
        f"ln -s {secret} secretlink; ln -s {outside} outlink; ln -s /etc/hostname hostlink; "
        f"mkdir -p outputs; ln -s {secret} outputs/leak.txt; ln -s {outside} outputs/dir; echo planted"
    )
    patches = [
        # Update a host file through a symlink.
        f"*** Begin Patch\n*** Update File: secretlink\n@@\n-{CANARY}\n+overwritten\n*** End Patch",
        # Create a file through a symlinked directory.
        "*** Begin Patch\n*** Add File: outlink/created.txt\n+escaped\n*** End Patch",
        # Absolute and traversal paths.
        f"*** Begin Patch\n*** Add File: {outside}/abs.txt\n+escaped\n*** End Patch",
        "*** Begin Patch\n*** Add File: ../../escaped.txt\n+escaped\n*** End Patch",
        # Delete the host file through the link's target.
        "*** Begin Patch\n*** Delete File: outlink/../host-secret.txt\n*** End Patch",
    ]
    text = plant + "".join(f"```patch\n{patch}\n```\n" for patch in patches)
    text += f"```view_image\nsecretlink\n```\n```view_image\n{secret}\n```\n"
    run = run_coder(alice, text)
    outputs = tool_outputs(run)
    assert "planted" in outputs[0]
    assert len(outputs) == 1 + len(patches) + 2, outputs
    # Each attempt was refused by the workspace path checks, not by accident.
    assert all("must not escape root" in output for output in outputs[1:5]), outputs
    assert "missing file: host-secret.txt" in outputs[5]  # resolved inside the workspace
    assert "InvalidManifestPathError" in outputs[6] and "Invalid path" in outputs[7]
    assert CANARY not in all_text(run)
    assert secret.read_text() == CANARY + "\n"
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "escaped.txt").exists()
    # The declared outputs that are symlinks were not followed into artifacts.
    assert not Artifact.objects.filter(run=run).exists()
    stopped = run.events.get(type="sandbox.stopped").data
    assert {item["path"] for item in stopped["skipped"]} == {"outputs/leak.txt", "outputs/dir"}
    assert_cleaned(run)


def test_a_fork_bomb_is_contained(alice):
    started = time.monotonic()
    run = run_coder(alice, sh("bomb() { bomb | bomb & }; bomb; sleep 1; echo survived"))
    assert time.monotonic() - started < 60
    assert run.status == "succeeded", run.error
    assert_cleaned(run)
    harness_still_works(alice)


def test_a_memory_hog_hits_its_limit(alice):
    run = run_coder(
        alice,
        "```python\ntry:\n    hog = bytearray(2 * 1024**3)\n    print('ALLOCATED')\nexcept MemoryError:\n    print('MEMORY-LIMITED')\n```",
    )
    assert "MEMORY-LIMITED" in tool_outputs(run)[0]
    assert_cleaned(run)


def test_an_infinite_loop_is_killed_at_the_command_time_limit(alice):
    started = time.monotonic()
    run = run_coder(alice, sh("while :; do :; done"))
    elapsed = time.monotonic() - started
    output = tool_outputs(run)[0]
    assert "exited with code 137" in output or "timed out" in output, output
    assert elapsed < 20
    assert_cleaned(run)


def test_big_files_hit_the_file_size_limit(alice):
    run = run_coder(alice, sh("head -c 20M /dev/zero > big.bin; echo rc=$?; stat -c %s big.bin"))
    output = tool_outputs(run)[0]
    assert "rc=0" not in output
    assert str(8 * 2**20) in output  # HARNESS_SANDBOX_MAX_FILE_MB in the tests
    assert_cleaned(run)


def test_background_processes_do_not_outlive_their_command(alice):
    run = run_coder(
        alice,
        sh(
            "sleep 300 & setsid sleep 301 & nohup sleep 302 >/dev/null 2>&1 & (sleep 303 &); "
            "python3 -c 'import os,time\nif os.fork()==0:\n  os.setsid(); time.sleep(304)' & echo spawned"
        ),
    )
    assert "spawned" in tool_outputs(run)[0]
    # This run's processes are those working in its workspace (other harness instances on the
    # host may run the same commands in theirs).
    workspace = Sandbox.objects.get(run=run).provider_session_id

    def leftovers() -> list[dict[str, object]]:
        found = []
        for process in psutil.process_iter(["cmdline", "cwd", "uids", "ppid", "create_time"]):
            cmdline, cwd = process.info["cmdline"] or [], process.info["cwd"] or ""
            if not cmdline or not cwd.startswith(workspace):
                continue
            if any(arg in ("300", "301", "302", "303", "304") for arg in cmdline[-1:]) or "time.sleep(304)" in " ".join(
                cmdline
            ):
                found.append({**process.info, "pid": process.pid})
        return found

    # The sandbox is torn down when the run ends; under load the kernel may take a moment to
    # reap its processes. A leak would outlive this wait by minutes (they sleep 300 s and more).
    deadline = time.monotonic() + 10
    while leftovers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert leftovers() == [], "a background process of this run's sandbox outlived it"
    assert_cleaned(run)


def test_outputs_become_artifacts_and_inputs_arrive(alice, bwrap):
    source = run_coder(alice, sh("mkdir -p outputs && printf 'a,b\\n1,2\\n' > outputs/table.csv && echo ok"))
    artifact = Artifact.objects.get(run=source)
    assert (artifact.name, artifact.size, artifact.content_type) == ("table.csv", 8, "text/csv")
    run = make_run(
        alice, agent="coder", input=sh("cat inputs/table.csv; wc -c < inputs/table.csv"), files=[artifact.pk]
    )
    run_execute(run.pk)
    run.refresh_from_db()
    assert "a,b\n1,2" in tool_outputs(run)[0]
    manifest = Sandbox.objects.get(run=run).manifest
    assert manifest["inputs"] == [
        {"artifact_id": artifact.pk, "path": "inputs/table.csv", "size": 8, "sha256": artifact.sha256}
    ]
    assert "object_key" not in str(manifest) and artifact.object_key not in str(manifest)
    assert manifest["network"] == "deny" and manifest["limits"]["max_processes"] == 32
    assert_cleaned(run)


def test_the_run_timing_out_or_being_cancelled_still_cleans_up(alice):
    import threading

    from audit.services import Actor
    from runs import services

    with override_settings(HARNESS_RUN_TIMEOUT_SECONDS=1.5):
        timed_out = run_coder(alice, sh("sleep 4; echo late"))
    assert timed_out.status == "failed" and "timed out" in timed_out.error
    assert assert_cleaned(timed_out).exit_info["reason"] == "run timed out"

    run = make_run(alice, agent="coder", input=sh("sleep 4; echo late"))
    worker = threading.Thread(target=run_execute, args=(run.pk,))
    worker.start()
    deadline = time.monotonic() + 10
    while not Sandbox.objects.filter(run=run, status="live").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    services.run_cancel(run=Run.objects.get(pk=run.pk), actor=Actor.system("test"))
    worker.join(15)
    run.refresh_from_db()
    assert run.status == "cancelled"
    assert assert_cleaned(run).exit_info["reason"] == "run stopped (cancelled)"


def test_unavailable_provider_fails_the_run_clearly(alice, monkeypatch):
    monkeypatch.setattr("sandboxes.providers.bwrap_path", lambda: None)
    run = run_coder(alice, sh("echo hi"))
    assert run.status == "failed"
    assert "No confining sandbox provider" in run.error and "apt-get install bubblewrap" in run.error
    assert not Sandbox.objects.filter(run=run).exists()
    with override_settings(SANDBOX_PROVIDER="unconfined"):
        refused = run_coder(alice, sh("echo hi"))
    assert refused.status == "failed" and "HARNESS_SANDBOX_ALLOW_UNCONFINED=true" in refused.error


def test_unconfined_needs_the_opt_in_and_says_so_loudly(alice, caplog):
    with override_settings(SANDBOX_PROVIDER="unconfined", HARNESS_SANDBOX_ALLOW_UNCONFINED=True):
        run = run_coder(alice, sh("echo unconfined-ran"))
    assert run.status == "succeeded" and "unconfined-ran" in tool_outputs(run)[0]
    assert any("UNCONFINED SANDBOX" in record.getMessage() for record in caplog.records)
    assert Sandbox.objects.get(run=run).provider == "unconfined"
    assert_cleaned(run)


def test_a_sandbox_can_not_signal_or_see_host_processes(alice):
    victim = subprocess.Popen(["sleep", "60"])
    try:
        run = run_coder(alice, sh(f"kill -9 {victim.pid}; echo rc=$?; ls /proc/{victim.pid} 2>&1 | head -1"))
        assert victim.poll() is None
        assert "rc=0" not in tool_outputs(run)[0]
    finally:
        victim.kill()
        victim.wait()
    assert_cleaned(run)


def test_a_workspace_too_deep_for_rmtree_is_still_cleaned_up(alice):
    # 1,500 nested directories made Python's recursive rmtree raise RecursionError, so the
    # row ended cleanup_state=failed and the reaper failed the same way forever.
    # One process makes them (a shell loop spawned 1,500 mkdirs: seconds on a loaded machine).
    run = run_coder(
        alice,
        python_block(
            "import os\ndepth = 0\nfor _ in range(1500):\n    os.mkdir('d')\n    os.chdir('d')\n    depth += 1\n"
            "os.chmod('.', 0)\nprint(f'depth={depth}')"
        ),
    )
    assert "depth=1500" in tool_outputs(run)[0]
    assert_cleaned(run)


# --- the seccomp filter: no namespaces, mounts, ptrace, keyrings, bpf... inside ----------------


def python_block(source: str) -> str:
    return f"```python\n{source}\n```\n"


SYSCALL_PROBE = """
import ctypes, errno, os, platform
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NUMBERS = {
    "x86_64": {"unshare": 272, "setns": 308, "mount": 165, "umount2": 166, "pivot_root": 155, "move_mount": 429,
               "open_tree": 428, "fsopen": 430, "fsmount": 432, "fspick": 433, "mount_setattr": 442, "chroot": 161,
               "ptrace": 101, "process_vm_readv": 310, "keyctl": 250, "add_key": 248, "request_key": 249, "bpf": 321,
               "userfaultfd": 323, "perf_event_open": 298, "io_uring_setup": 425, "init_module": 175,
               "kexec_load": 246, "open_by_handle_at": 304, "clone3": 435, "clone": 56},
    "aarch64": {"unshare": 97, "setns": 268, "mount": 40, "umount2": 39, "pivot_root": 41, "move_mount": 429,
                "open_tree": 428, "fsopen": 430, "fsmount": 432, "fspick": 433, "mount_setattr": 442, "chroot": 51,
                "ptrace": 117, "process_vm_readv": 270, "keyctl": 219, "add_key": 217, "request_key": 218, "bpf": 280,
                "userfaultfd": 282, "perf_event_open": 241, "io_uring_setup": 425, "init_module": 105,
                "kexec_load": 104, "open_by_handle_at": 265, "clone3": 435, "clone": 220},
}[platform.machine()]
CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWNET = 0x10000000, 0x00020000, 0x40000000
for name, nr in sorted(NUMBERS.items()):
    args = [0] * 6
    if name in ("clone", "unshare"):
        args[0] = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET  # a new user namespace, the usual way out
    ctypes.set_errno(0)
    result = libc.syscall(nr, *args)
    print(f"CALL {name} {result} {errno.errorcode.get(ctypes.get_errno(), ctypes.get_errno())}")
"""


def probe_results(output: str) -> dict[str, tuple[int, str]]:
    results = {}
    for line in output.splitlines():
        if line.startswith("CALL "):
            _, name, value, code = line.split()
            results[name] = (int(value), code)
    return results


def test_seccomp_refuses_namespaces_mounts_ptrace_keyrings_bpf_and_friends(alice):
    run = run_coder(
        alice,
        sh(
            "unshare -Ur true; echo unshare-user-rc=$?\n"
            "unshare -m true; echo unshare-mount-rc=$?\n"
            "mkdir -p mnt && mount -t tmpfs none mnt; echo mount-rc=$?\n"
            "umount /proc; echo umount-rc=$?"
        )
        + python_block(SYSCALL_PROBE),
    )
    assert run.status == "succeeded", run.error
    shell, probe = tool_outputs(run)
    for name in ("unshare-user", "unshare-mount", "mount", "umount"):
        assert f"{name}-rc=0" not in shell, shell
    assert "unshare failed: Operation not permitted" in shell
    results = probe_results(probe)
    assert len(results) == 26, probe
    # Every denied call fails with EPERM (not ENOSYS or EINVAL: the filter said no, not the kernel);
    # clone3 says ENOSYS so libc falls back to clone, whose namespace flags are then refused.
    expected = {name: (-1, "EPERM") for name in results}
    expected["clone3"] = (-1, "ENOSYS")
    assert results == expected, probe
    assert_cleaned(run)


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="x32 and i386 system calls exist on x86_64 only")
def test_seccomp_refuses_other_abis(alice):
    # An x32 call (bit 30 set) fails with EPERM; an i386 call through int 0x80 kills the process.
    script = """
import ctypes, errno, mmap, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
ctypes.set_errno(0)
print("X32", libc.syscall(0x40000000 | 39), errno.errorcode.get(ctypes.get_errno()))
child = '''
import ctypes, mmap
code = bytes.fromhex("b814000000cd80c3")  # mov eax, 20 (i386 getpid); int 0x80; ret
page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(code)
function = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
print("I386 returned", function())
'''
done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True)
print("I386 exit", done.returncode, done.stdout.strip())
"""
    run = run_coder(alice, python_block(script))
    output = tool_outputs(run)[0]
    assert "X32 -1 EPERM" in output, output
    assert "I386 exit -31" in output and "returned" not in output, output  # SIGSYS
    assert_cleaned(run)


def test_ordinary_commands_still_work_under_seccomp(alice):
    run = run_coder(
        alice,
        sh(
            "set -e; printf 'b\\na\\nb\\n' | sort | uniq -c | wc -l\n"
            "(sleep 0.2; echo background-done > bg.txt) & wait; cat bg.txt\n"
            "sh -c 'echo nested-shell'; bash -c 'echo $((6*7))'\n"
            "mkdir -p outputs && echo result > outputs/r.txt && ls outputs"
        )
        + python_block(
            "import os, subprocess, threading, multiprocessing, concurrent.futures, tempfile\n"
            "t = threading.Thread(target=lambda: None); t.start(); t.join()\n"
            "with concurrent.futures.ThreadPoolExecutor(4) as pool: print('threads', sum(pool.map(abs, [-1, -2, 3])))\n"
            "with multiprocessing.Pool(2) as pool: print('processes', pool.map(abs, [-4, 5]))\n"
            "pid = os.fork()\n"
            "if pid == 0: os._exit(7)\n"
            "print('fork', os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n"
            "print('subprocess', subprocess.run(['echo', 'ok'], capture_output=True, text=True).stdout.strip())\n"
            "print('tmp', tempfile.mkstemp()[1].startswith('/tmp/'))"
        ),
    )
    assert run.status == "succeeded", run.error
    shell, python = tool_outputs(run)
    for expected in ("\n2\n", "background-done", "nested-shell", "42", "r.txt"):
        assert expected in "\n" + shell, shell
    for expected in ("threads 6", "processes [4, 5]", "fork 7", "subprocess ok", "tmp True"):
        assert expected in python, python
    assert Artifact.objects.get(run=run).name == "r.txt"
    assert_cleaned(run)


# --- /proc/self/mountinfo: the workspace's path, and nothing else of the host -------------------


def test_mountinfo_shows_the_workspace_path_and_no_other_host_path(alice, bwrap):
    run = run_coder(alice, sh("cat /proc/self/mountinfo; echo CWD=$(pwd -P)"))
    output = tool_outputs(run)[0]
    sandbox = Sandbox.objects.get(run=run)
    workspace = sandbox.provider_session_id
    lines = [line for line in output.splitlines() if " - " in line]
    points = {line.split(" ")[4]: line for line in lines}
    # The current truth: the workspace is bound at its host path (the SDK tells the model that path
    # and its file tools resolve paths against it on the host), so mountinfo names it, once.
    assert f"CWD={workspace}" in output
    assert sum(1 for line in lines if line.split(" ")[4] == workspace) == 1
    workspace_line = points[workspace]
    if sandbox.manifest["enforced"]["disk_quota"]["enforced"]:
        # A filesystem of its own: its root is "/", not a host directory.
        assert workspace_line.split(" ")[3] == "/" and " - ext4 /dev/loop" in workspace_line
    # Everything else is the system directories at their usual paths, /proc, /dev and the sandbox's tmpfs.
    allowed = {"/", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/dev", "/tmp", workspace}
    for point, line in points.items():
        assert point in allowed or point.startswith(("/etc/", "/dev/")), line
        if point != workspace:
            assert not point.startswith("/tmp/"), line
    others = "\n".join(line for point, line in points.items() if point != workspace)
    for host_path in (str(settings.BASE_DIR), str(bwrap), "/root", "/home", "/work", "harness-seccomp"):
        assert host_path not in others, others
    assert_cleaned(run)


# --- the disk quota: a workspace is a filesystem of HARNESS_SANDBOX_DISK_MB ------------------


def statvfs_bytes(path: str) -> tuple[int, int]:
    stats = os.statvfs(path)
    return stats.f_blocks * stats.f_frsize, stats.f_bavail * stats.f_frsize


@pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/dev/loop-control").exists(),
    reason="a filesystem per workspace needs root and loop devices",
)
def test_the_disk_quota_stops_a_command_filling_the_host_disk(alice, bwrap):
    quota_mb = 48
    host_free_before = os.statvfs(bwrap).f_bavail * os.statvfs(bwrap).f_frsize
    # The attack from the issue: 60 MB files in a loop (here 30 files of 8 MB, the per-file limit).
    script = (
        "mkdir -p outputs && echo early > outputs/early.txt\n"
        "df -B1 --output=size,avail . | tail -1 | sed 's/^ */DF /'\n"
        "avail=$(df -B1 --output=avail . | tail -1); under=$(( (avail - 2*1048576) / 1048576 ))\n"
        # Just under the quota: fits.
        "i=0; left=$under; while [ $left -gt 0 ]; do n=$(( left > 8 ? 8 : left )); "
        "head -c ${n}M /dev/zero > under$i || echo UNDER-FAILED; i=$((i+1)); left=$((left-n)); done\n"
        "echo UNDER-WROTE=$(cat under* | wc -c) MB=$under\n"
        # Past it: ENOSPC, and the whole workspace never holds more than the quota.
        "for i in $(seq 1 30); do head -c 8M /dev/zero > fill$i 2>err.txt || { cat err.txt; break; }; done\n"
        "echo TOTAL=$(du -sb --apparent-size . | cut -f1)\n"
        "rm -f under* fill*; echo late > outputs/late.txt; ls outputs"
    )
    with override_settings(HARNESS_SANDBOX_DISK_MB=quota_mb):
        run = run_coder(alice, sh(script))
    output = tool_outputs(run)[0]
    assert run.status == "succeeded", run.error
    size, _ = (int(v) for v in output.split("DF ")[1].split()[:2])
    assert size <= quota_mb * 2**20
    under = output.split("UNDER-WROTE=")[1].split()[0]
    assert "UNDER-FAILED" not in output and int(under) >= (quota_mb - 8) * 2**20, output
    assert "No space left on device" in output, output
    assert int(output.split("TOTAL=")[1].split()[0]) <= quota_mb * 2**20
    # The host's disk did not take the 240 MB the loop tried to write (allow for others' writes).
    host_free_after = os.statvfs(bwrap).f_bavail * os.statvfs(bwrap).f_frsize
    assert host_free_before - host_free_after < 150 * 2**20
    # The outputs written before and after hitting the quota are collected.
    assert sorted(Artifact.objects.filter(run=run).values_list("name", flat=True)) == ["early.txt", "late.txt"]
    sandbox = Sandbox.objects.get(run=run)
    assert sandbox.manifest["limits"]["disk_mb"] == quota_mb
    assert sandbox.manifest["enforced"]["disk_quota"]["enforced"] is True
    # The filesystem is unmounted and the workspace gone; no loop device is left.
    assert sandbox.provider_session_id not in Path("/proc/self/mountinfo").read_text()
    assert_cleaned(run)
    assert list(bwrap.iterdir()) == []
