"""Sandbox rows, the reaper, the admin action and the status endpoint."""

from __future__ import annotations

import os
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditLog
from audit.services import Actor
from conftest import make_run
from execution.executor import run_execute
from runs.models import Run
from sandboxes.models import Sandbox
from sandboxes.services import ORPHAN_DIR_MIN_AGE_SECONDS, sandbox_destroy, sandboxes_reap

pytestmark = pytest.mark.django_db(transaction=True)


def live_sandbox(run: Run, root: Path, *, deadline_in: float = 600, with_process: bool = False) -> Sandbox:
    """A row and workspace as a worker that died mid-command would leave them."""
    sandbox = Sandbox.objects.create(
        run=run,
        provider="local",
        status=Sandbox.Status.LIVE,
        worker_id=run.worker_id or "gone:1:x",
        deadline=timezone.now() + timedelta(seconds=deadline_in),
    )
    workspace = root / sandbox.pk
    workspace.mkdir()
    (workspace / "file.txt").write_text("x")
    locked = workspace / "locked"
    locked.mkdir()
    (locked / "inner").write_text("x")
    locked.chmod(0)
    Sandbox.objects.filter(pk=sandbox.pk).update(provider_session_id=str(workspace))
    sandbox.refresh_from_db()
    if with_process:
        sandbox.process = subprocess.Popen(["sleep", "300"], cwd=workspace, start_new_session=True)  # type: ignore[attr-defined]
    return sandbox


def test_the_reaper_destroys_sandboxes_past_budget_or_whose_run_is_over(alice, sandbox_root):
    running = make_run(alice)
    Run.objects.filter(pk=running.pk).update(status="running", worker_id="w:1:a", started_at=timezone.now())
    running.refresh_from_db()
    over_budget = live_sandbox(running, sandbox_root, deadline_in=-1, with_process=True)
    still_working = live_sandbox(running, sandbox_root)
    finished = make_run(alice)
    Run.objects.filter(pk=finished.pk).update(status="failed", finished_at=timezone.now() - timedelta(minutes=5))
    of_finished_run = live_sandbox(Run.objects.get(pk=finished.pk), sandbox_root)
    just_finished = make_run(alice)
    Run.objects.filter(pk=just_finished.pk).update(status="succeeded", finished_at=timezone.now())
    closing = live_sandbox(Run.objects.get(pk=just_finished.pk), sandbox_root)

    report = sandboxes_reap()

    assert sorted(report.cleaned) == sorted([over_budget.pk, of_finished_run.pk])
    assert over_budget.process.wait(timeout=5) == -9  # type: ignore[attr-defined]
    for sandbox, reason in ((over_budget, "past its time budget"), (of_finished_run, "run is failed")):
        sandbox.refresh_from_db()
        assert sandbox.status == "stopped" and sandbox.cleanup_state == "done"
        assert sandbox.exit_info["reason"] == f"reaped: {reason}"
        assert not Path(sandbox.provider_session_id).exists()
        audit = AuditLog.objects.get(target_id=sandbox.pk, action="sandbox.cleaned")
        assert audit.actor_label == "sandbox reaper"
    # A sandbox its worker still holds, and one whose worker is closing it right now, are left alone.
    for sandbox in (still_working, closing):
        sandbox.refresh_from_db()
        assert sandbox.cleanup_state == "pending" and Path(sandbox.provider_session_id).exists()
    assert sandboxes_reap().cleaned == []


def test_the_reaper_removes_workspaces_no_row_accounts_for(sandbox_root):
    orphan = sandbox_root / "sbx_ORPHAN"
    orphan.mkdir()
    (orphan / "left.txt").write_text("x")
    old = time.time() - ORPHAN_DIR_MIN_AGE_SECONDS - 5
    os.utime(orphan, (old, old))
    fresh = sandbox_root / "sbx_FRESH"
    fresh.mkdir()

    report = sandboxes_reap()

    assert report.orphan_workspaces == ["sbx_ORPHAN"]
    assert not orphan.exists() and fresh.exists()
    assert AuditLog.objects.filter(action="sandbox.orphan_destroyed", target_id="sbx_ORPHAN").exists()


def test_reap_sandboxes_command(alice, sandbox_root):
    from django.core.management import call_command

    run = make_run(alice)
    Run.objects.filter(pk=run.pk).update(status="cancelled", finished_at=timezone.now() - timedelta(minutes=5))
    sandbox = live_sandbox(Run.objects.get(pk=run.pk), sandbox_root)
    from io import StringIO

    out = StringIO()
    call_command("reap_sandboxes", stdout=out)
    assert "cleaned 1" in out.getvalue() and f"cleaned: {sandbox.pk}" in out.getvalue()


def test_cleanup_refuses_a_path_outside_the_sandbox_root(alice, sandbox_root, tmp_path):
    victim = tmp_path / "precious"
    victim.mkdir()
    run = make_run(alice)
    Run.objects.filter(pk=run.pk).update(status="failed", finished_at=timezone.now() - timedelta(minutes=5))
    sandbox = Sandbox.objects.create(
        run=run, provider="local", provider_session_id=str(victim), status="live", deadline=timezone.now()
    )
    # The reaper leaves a host workspace outside its own root to the instance that owns it...
    report = sandboxes_reap()
    assert sandbox.pk not in report.cleaned + report.failed
    sandbox.refresh_from_db()
    assert sandbox.cleanup_state == "pending" and victim.exists()
    # ...and a cleanup asked for by hand refuses to touch the path.
    done = sandbox_destroy(sandbox=sandbox, actor=Actor.system("tests"), reason="by hand")
    assert done.cleanup_state == "failed" and "not a sandbox workspace" in done.cleanup_error
    assert victim.exists()


def test_admin_lists_sandboxes_with_their_run_and_cleans_them_up(client, operator, viewer, alice, sandbox_root):
    run = make_run(alice)
    Run.objects.filter(pk=run.pk).update(status="running", worker_id="w:1:a")
    sandbox = live_sandbox(Run.objects.get(pk=run.pk), sandbox_root, with_process=True)
    done = live_sandbox(Run.objects.get(pk=run.pk), sandbox_root)
    Sandbox.objects.filter(pk=done.pk).update(cleanup_state="done", status="stopped")
    changelist = reverse("admin:sandboxes_sandbox_changelist")

    # A viewer sees them but has no cleanup action.
    client.force_login(viewer)
    page = client.get(changelist)
    assert page.status_code == 200 and sandbox.pk in page.content.decode() and run.pk in page.content.decode()
    assert "clean_up_sandboxes" not in page.content.decode()
    refused = client.post(changelist, {"action": "clean_up_sandboxes", "_selected_action": [sandbox.pk]})
    assert Sandbox.objects.get(pk=sandbox.pk).cleanup_state == "pending" and refused.status_code in (200, 302, 403)

    # An operator with the permission destroys it.
    client.force_login(operator)
    assert "clean_up_sandboxes" in client.get(changelist).content.decode()
    response = client.post(
        changelist, {"action": "clean_up_sandboxes", "_selected_action": [sandbox.pk, done.pk]}, follow=True
    )
    text = response.content.decode()
    assert "Cleaned up 1 sandbox(es)." in text and "1 sandbox(es) were already cleaned up." in text
    sandbox.refresh_from_db()
    assert sandbox.cleanup_state == "done" and sandbox.exit_info["reason"] == "cleaned up by operator operator"
    assert sandbox.process.wait(timeout=5) == -9  # type: ignore[attr-defined]
    assert not Path(sandbox.provider_session_id).exists()
    audit = AuditLog.objects.get(target_id=sandbox.pk, action="sandbox.cleaned")
    assert audit.actor_type == "user" and audit.actor_label == "operator"

    # The run's page shows its sandboxes; a sandbox's page links its run.
    assert sandbox.pk in client.get(reverse("admin:runs_run_change", args=[run.pk])).content.decode()
    detail = client.get(reverse("admin:sandboxes_sandbox_change", args=[sandbox.pk])).content.decode()
    assert reverse("admin:runs_run_change", args=[quote(run.pk)]) in detail


def test_a_staff_user_needs_the_cleanup_permission(client, alice, sandbox_root):
    staff = User.objects.create_user("sbxop", password="pw-123456789", is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(codename__in=["view_sandbox"]))
    live_sandbox(make_run(alice), sandbox_root)  # actions only show over a non-empty list
    client.force_login(staff)
    changelist = reverse("admin:sandboxes_sandbox_changelist")
    assert "clean_up_sandboxes" not in client.get(changelist).content.decode()
    staff.user_permissions.add(Permission.objects.get(codename="cleanup_sandbox"))
    staff = User.objects.get(pk=staff.pk)
    client.force_login(staff)
    assert "clean_up_sandboxes" in client.get(changelist).content.decode()


def test_status_endpoint_reports_the_local_provider_behind_an_api_key(api, alice, outsider, bwrap):
    assert api.client.get("/api/sandbox/status").status_code == 401
    body = api.get("/api/sandbox/status", who=alice).json()
    assert body["provider"] == "local" and body["available"] is True and body["confined"] is True
    assert body["local"]["self_test"] == {"ok": True, "detail": "ok"}
    assert body["local"]["version"].startswith("bubblewrap")
    assert body["e2b"] == {"configured": False, "live": False}
    assert body["policy"]["network"] == "deny"
    # /health keeps its contract: the local provider does not make `sandbox` true.
    assert api.client.get("/health").json()["backends"]["sandbox"] is False


def test_status_endpoint_says_why_nothing_can_run(api, alice, sandbox_root, monkeypatch):
    monkeypatch.setattr("sandboxes.providers.bwrap_path", lambda: None)
    monkeypatch.setattr("sandboxes.api.bwrap_path", lambda: None)
    body = api.get("/api/sandbox/status", who=alice).json()
    assert body["provider"] is None and body["available"] is False
    assert "apt-get install bubblewrap" in body["error"]


def test_run_sandboxes_endpoint_is_per_principal(api, alice, outsider, bwrap):
    run = make_run(alice, agent="coder", input="$ echo hi")
    run_execute(run.pk)
    rows = api.get(f"/api/runs/{run.pk}/sandboxes", who=alice).json()
    assert len(rows) == 1 and rows[0]["provider"] == "local" and rows[0]["cleanup_state"] == "done"
    assert rows[0]["exit_info"]["reason"] == "run succeeded"
    assert api.get(f"/api/runs/{run.pk}/sandboxes", who=outsider).status_code == 404


def test_files_are_checked_when_the_run_is_created(api, alice, outsider, bwrap):
    source = make_run(alice, agent="scribe", input="hello")
    run_execute(source.pk)
    artifact_id = source.artifacts.get().pk
    ok = api.post(
        "/api/runs",
        who=alice,
        body={"input": "$ ls inputs", "agent": "coder", "model": "offline", "files": [artifact_id]},
    )
    assert ok.status_code == 202 and ok.json()["files"] == [artifact_id]
    wrong_agent = api.post(
        "/api/runs", who=alice, body={"input": "x", "agent": "assistant", "model": "offline", "files": [artifact_id]}
    )
    assert wrong_agent.status_code == 422 and "has no sandbox" in wrong_agent.json()["detail"]
    theirs = api.post(
        "/api/runs", who=outsider, body={"input": "x", "agent": "coder", "model": "offline", "files": [artifact_id]}
    )
    assert theirs.status_code == 422 and "not found" in theirs.json()["detail"]
    bad = api.post(
        "/api/runs", who=alice, body={"input": "x", "agent": "coder", "model": "offline", "files": ["notes.md"]}
    )
    assert bad.status_code == 422
    count = Run.objects.count()
    assert count == 2  # the source run and the one valid request


def test_remove_tree_removes_a_tree_deeper_than_the_recursion_limit(tmp_path):
    import sys

    from sandboxes.providers import remove_tree

    deep = tmp_path / "workspace"
    deep.mkdir()
    fd = os.open(deep, os.O_RDONLY)
    for _ in range(sys.getrecursionlimit() + 500):  # (os.makedirs itself recurses)
        os.mkdir("d", dir_fd=fd)
        inner = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.chmod(fd, 0)  # a directory the sandbox made unreadable, deep down
    os.close(fd)
    try:
        remove_tree(deep)
        assert not deep.exists()
    finally:  # never leave pytest's own (recursive) cleanup a tree it cannot remove
        subprocess.run(["chmod", "-R", "u+rwX", str(tmp_path)], check=False)
        subprocess.run(["rm", "-rf", str(deep)], check=False)
