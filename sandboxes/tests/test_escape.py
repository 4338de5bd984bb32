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
    time.sleep(0.3)
    leftovers = [
        p.info["cmdline"]
        for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"]
        and any(arg in ("300", "301", "302", "303") for arg in p.info["cmdline"][-1:])
        and "sleep" in p.info["cmdline"][0]
    ]
    assert leftovers == []
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
    run = run_coder(
        alice,
        sh("i=0; while [ $i -lt 1500 ]; do mkdir d && cd d || break; i=$((i+1)); done; chmod 000 .; echo depth=$i"),
    )
    assert "depth=1500" in tool_outputs(run)[0]
    assert_cleaned(run)
