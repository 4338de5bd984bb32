"""Human approval of tool calls through the real harness (offline model, the refunds agent, whose
refund tool waits for a person above $100): a run pauses and frees its worker slot, survives a
restart of web and worker, is approved in the admin (Chromium) or rejected through the API, and
resumes exactly once; two decisions at once, an expiry, a cancel while waiting, the roles, and a
sandbox agent whose commands each wait (bubblewrap). The screenshot (`make screenshots`) goes to docs/console/approval.png.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import log_in as admin_log_in
from tests.integration.conftest import member, screenshot
from tests.integration.harness import Harness

pytestmark = pytest.mark.integration

BIG = "Please refund $250 on order A-1001, the parcel never came."


def start_run(client: httpx.Client, text: str = BIG, agent: str = "refunds") -> str:
    response = client.post("/api/runs", json={"input": text, "agent": agent, "model": "offline"})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def waiting(harness: Harness, client: httpx.Client, run_id: str) -> dict[str, Any]:
    body = harness.wait_for(client, run_id, ("awaiting_approval", "succeeded", "failed", "cancelled"), timeout=60)
    assert body["status"] == "awaiting_approval", body
    return body


def finished(harness: Harness, client: httpx.Client, run_id: str) -> dict[str, Any]:
    body = harness.wait_for(client, run_id, ("succeeded", "failed", "cancelled"), timeout=60)
    assert body["status"] in ("succeeded", "failed", "cancelled"), body
    return body


def event_types(harness: Harness, run_id: str) -> list[str]:
    return harness.sql(
        "from runs.models import RunEvent\n"
        f"print(json.dumps(list(RunEvent.objects.filter(run_id={run_id!r}).exclude(type='text.delta')"
        ".order_by('seq').values_list('type', flat=True))))"
    )


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    h = Harness(tmp_path_factory.mktemp("approvals"), HARNESS_WORKER_CONCURRENCY="1").start()
    yield h
    h.close()


def test_a_run_pauses_frees_its_slot_survives_a_restart_and_is_approved_in_the_admin(harness, browser):
    alice = harness.client(harness.api_key("alice"))
    run_id = start_run(alice)
    body = waiting(harness, alice, run_id)
    [pending] = body["pending_approvals"]
    assert pending["tool"] == "refund" and pending["arguments"]["amount"] == 250

    # The one worker slot is free while the run waits: another run completes meanwhile.
    other = start_run(alice, "What is 6 * 7?", agent="calculator")
    assert finished(harness, alice, other)["output"] == "6 * 7 = 42"

    # Web and worker restart while it waits: nothing is lost.
    harness.stop()
    harness.start()
    assert alice.get(f"/api/runs/{run_id}").json()["status"] == "awaiting_approval"

    # A viewer sees the queue but has no buttons; an operator approves.
    vera = member(harness, "vera", "viewer")
    page = log_in(browser, harness, "vera", vera)
    assert run_id in page.inner_text("#changelist")
    assert page.locator("button.approve-call").count() == 0
    page.close()
    otto = member(harness, "otto", "operator")
    page = log_in(browser, harness, "otto", otto)
    assert "Pending approvals" in page.inner_text("#content")
    row = page.locator("#result_list tbody tr", has_text=run_id)
    assert "A-1001" in row.inner_text() and "refund" in row.inner_text()
    page.set_viewport_size({"width": 1500, "height": 700})
    if page.locator("#nav-sidebar").is_visible():
        page.click("#toggle-nav-sidebar")  # the queue's columns, not the app list
    screenshot(page, "approval.png", full_page=True)
    row.locator("input.approval-message").fill("parcel lost in transit: approved")
    row.locator("button.approve-call").click()
    page.wait_for_selector(".messagelist .success")
    assert "queued and will resume" in page.inner_text(".messagelist")

    done = finished(harness, alice, run_id)
    assert done["status"] == "succeeded", done
    assert done["output"].startswith("Refunded $250.00 on order A-1001 (refund rf_")
    types = event_types(harness, run_id)
    assert types.count("run.started") == 1 and types.count("run.resumed") == 1
    assert types[types.index("approval.requested") :] == [
        "approval.requested",
        "approval.decided",
        "run.resumed",
        "agent.updated",
        "tool.output",
        "message.created",
        "run.succeeded",
    ]
    assert done["attempts"] == 1
    decided = alice.get(f"/api/runs/{run_id}/approvals").json()
    assert decided[0]["status"] == "approved" and decided[0]["decided_by"] == "otto"
    assert decided[0]["message"] == "parcel lost in transit: approved"
    page.close()


def test_the_live_page_shows_the_call_and_decides_it(harness, browser):
    alice = harness.client(harness.api_key("alice"))
    run_id = start_run(alice)
    waiting(harness, alice, run_id)
    page = log_in(browser, harness, "otto", member(harness, "otto", "operator"))
    page.goto(f"{harness.base_url}/runs/{run_id}/")
    page.wait_for_selector("#approvals .approval form")
    assert "A-1001" in page.inner_text("#approvals")
    page.fill("#approvals input[name=message]", "Ask for a photo of the damage first.")
    page.click("#approvals button.reject-call")
    page.wait_for_selector("text=Rejected refund")
    done = finished(harness, alice, run_id)
    assert done["output"] == "The refund was not made: Ask for a photo of the damage first."
    page.wait_for_selector("#status.succeeded")
    assert "rejected by otto" in page.inner_text("#approvals")
    page.close()


def test_a_rejection_through_the_api_reaches_the_model(harness):
    alice = harness.client(harness.api_key("alice"))
    run_id = start_run(alice)
    [pending] = waiting(harness, alice, run_id)["pending_approvals"]
    message = "Refunds over $100 need a manager's sign-off."
    response = alice.post(
        f"/api/runs/{run_id}/approvals", json={"call_id": pending["call_id"], "decision": "reject", "message": message}
    )
    assert response.status_code == 200, response.text
    assert response.json()["run_status"] == "queued"
    done = finished(harness, alice, run_id)
    assert done["status"] == "succeeded" and done["output"] == f"The refund was not made: {message}"


def test_two_decisions_at_once_one_wins_and_the_run_resumes_once(harness):
    key = harness.api_key("alice")
    alice = harness.client(key)
    run_id = start_run(alice)
    [pending] = waiting(harness, alice, run_id)["pending_approvals"]
    barrier = threading.Barrier(2)
    codes: list[int] = []

    def decide(decision: str) -> None:
        with harness.client(key) as client:
            barrier.wait()
            response = client.post(
                f"/api/runs/{run_id}/approvals", json={"call_id": pending["call_id"], "decision": decision}
            )
            codes.append(response.status_code)
            if response.status_code == 409:
                assert "already decided" in response.json()["detail"]

    threads = [threading.Thread(target=decide, args=(d,)) for d in ("approve", "reject")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(codes) == [200, 409]
    done = finished(harness, alice, run_id)
    assert done["status"] == "succeeded" and done["attempts"] == 1
    types = event_types(harness, run_id)
    assert types.count("approval.decided") == 1 and types.count("run.resumed") == 1
    claims = harness.sql(
        "from audit.models import AuditLog\n"
        f"print(json.dumps(AuditLog.objects.filter(run_id={run_id!r}, action__in=['run.started', 'run.resumed'])"
        ".count()))"
    )
    assert claims == 2  # its first start and one resume


def test_operators_decide_viewers_and_outsiders_cannot_and_cancel_works_while_waiting(harness):
    alice = harness.client(harness.api_key("alice"))
    run_id = start_run(alice)
    [pending] = waiting(harness, alice, run_id)["pending_approvals"]
    decision = {"call_id": pending["call_id"], "decision": "approve"}
    viewer_key = harness.api_key("vic")
    harness.manage("setrole", "vic", "viewer")
    outsider_key = harness.api_key("mallory")
    for key in (viewer_key, outsider_key):
        assert harness.client(key).post(f"/api/runs/{run_id}/approvals", json=decision).status_code == 404
    cancelled = alice.post(f"/api/runs/{run_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    operator_key = harness.api_key("oscar")
    harness.manage("setrole", "oscar", "operator")
    late = harness.client(operator_key).post(f"/api/runs/{run_id}/approvals", json=decision)
    assert late.status_code == 409 and "cancelled" in late.json()["detail"]
    assert event_types(harness, run_id)[-2:] == ["approval.decided", "run.cancelled"]

    # An operator decides another principal's run.
    run_id = start_run(alice)
    [pending] = waiting(harness, alice, run_id)["pending_approvals"]
    response = harness.client(operator_key).post(
        f"/api/runs/{run_id}/approvals", json={"call_id": pending["call_id"], "decision": "approve"}
    )
    assert response.status_code == 200 and response.json()["approval"]["decided_by"].startswith("oscar (")
    assert finished(harness, alice, run_id)["status"] == "succeeded"


def test_an_undecided_call_expires_and_fails_its_run(tmp_path):
    harness = Harness(tmp_path, HARNESS_APPROVAL_TIMEOUT_SECONDS="1").start()
    try:
        alice = harness.client(harness.api_key("alice"))
        run_id = start_run(alice)
        [pending] = waiting(harness, alice, run_id)["pending_approvals"]
        time.sleep(1.5)
        late = alice.post(f"/api/runs/{run_id}/approvals", json={"call_id": pending["call_id"], "decision": "approve"})
        assert late.status_code == 409 and "expired" in late.json()["detail"]
        out = harness.manage("expire_approvals").stdout
        assert f"failed: {run_id}" in out
        body = alice.get(f"/api/runs/{run_id}").json()
        assert body["status"] == "failed"
        assert body["error"] == (
            f"Run failed: approval expired: no decision on refund (call {pending['call_id']}) within 1 s "
            "(HARNESS_APPROVAL_TIMEOUT_SECONDS)."
        )
        assert alice.get(f"/api/runs/{run_id}/approvals").json()[0]["status"] == "expired"
    finally:
        harness.close()


def test_sandbox_commands_each_wait_and_the_workspace_outlives_the_sandboxes(tmp_path):
    root = Path(tempfile.mkdtemp(prefix="harness-sbx-approval-"))
    harness = Harness(
        tmp_path,
        HARNESS_SANDBOX_APPROVAL="always",
        HARNESS_SANDBOX_ROOT=str(root),
        HARNESS_SANDBOX_COMMAND_TIMEOUT_SECONDS="5",
        HARNESS_SANDBOX_CLOSE_GRACE_SECONDS="0",
    ).start()
    try:
        alice = harness.client(harness.api_key("alice"))
        text = "```sh\necho 42 > state.txt && echo kept > outputs/kept.txt\n```\n```sh\ncat state.txt\n```"
        run_id = start_run(alice, text, agent="coder")
        for expected in ("echo 42 > state.txt", "cat state.txt"):
            [pending] = waiting(harness, alice, run_id)["pending_approvals"]
            assert pending["tool"] == "exec_command" and expected in pending["arguments"]["cmd"]
            # While it waits the run holds no sandbox: none live, no workspace on disk.
            live = harness.sql(
                "from sandboxes.models import Sandbox\n"
                f"print(json.dumps(Sandbox.objects.filter(run_id={run_id!r}).exclude(cleanup_state='done').count()))"
            )
            assert live == 0 and not any(root.iterdir())
            if expected == "cat state.txt":
                harness.stop()  # the resume lands on a new worker process
                harness.start()
            response = alice.post(
                f"/api/runs/{run_id}/approvals", json={"call_id": pending["call_id"], "decision": "approve"}
            )
            assert response.status_code == 200, response.text
        done = finished(harness, alice, run_id)
        assert done["status"] == "succeeded", done
        assert "42" in done["output"] and "exited with code 0" in done["output"]
        names = [item["name"] for item in alice.get(f"/api/runs/{run_id}/artifacts").json()]
        assert names == ["kept.txt"]
        sandboxes = harness.sql(
            "from sandboxes.models import Sandbox\n"
            f"print(json.dumps(list(Sandbox.objects.filter(run_id={run_id!r}).order_by('id')"
            ".values_list('cleanup_state', flat=True))))"
        )
        assert sandboxes == ["done", "done", "done"]
        assert not any(root.iterdir())
        assert json.dumps(event_types(harness, run_id)).count("run.resumed") == 2
    finally:
        harness.close()
        shutil.rmtree(root, ignore_errors=True)


def log_in(browser: Any, harness: Harness, username: str, password: str) -> Any:
    return admin_log_in(
        browser, harness, username, password, next_url="/admin/approvals/approval/", wait_for="#changelist"
    )
