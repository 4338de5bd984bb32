"""The admin in a real browser (Debian's chromium driven by Playwright) against the real harness."""

from __future__ import annotations

import shutil
import time

import pytest

from tests.integration.conftest import admin_login
from tests.integration.harness import Harness

pytestmark = pytest.mark.integration


def test_an_operator_works_through_the_admin(browser, tmp_path):
    harness = Harness(tmp_path, HARNESS_OFFLINE_DELAY_MS="20").start()
    try:
        key = harness.api_key("alice")
        run = (
            harness.client(key)
            .post("/api/runs", json={"input": "What is 9 * 9?", "agent": "calculator", "model": "offline"})
            .json()
        )
        assert harness.wait_for(harness.client(key), run["id"], ("succeeded",))["status"] == "succeeded"

        page = admin_login(browser, harness)

        # A run: filters, then its page with the event log and spans.
        page.goto(f"{harness.base_url}/admin/runs/run/?status__exact=succeeded")
        page.click(f"text={run['id']}")
        page.wait_for_selector("text=tool.called")
        content = page.content()
        assert "9 * 9 = 81" in content and "calculate" in content and "run.succeeded" in content
        page.screenshot(path=str(tmp_path / "run.png"), full_page=True)

        # The live page replays the finished run's stream over the WebSocket.
        page.click("text=watch this run's events live")
        page.wait_for_selector("#status.succeeded")
        page.wait_for_function("document.getElementById('output').textContent === '9 * 9 = 81'")
        assert page.inner_text("#connection") == "finished"

        # And follows a run as it happens.
        slow = (
            harness.client(key)
            .post("/api/runs", json={"input": " ".join(["word"] * 80), "agent": "assistant", "model": "offline"})
            .json()
        )
        page.goto(f"{harness.base_url}/runs/{slow['id']}/")
        page.wait_for_selector("#status.succeeded", timeout=30_000)
        final = harness.client(key).get(f"/api/runs/{slow['id']}").json()
        assert page.inner_text("#output") == final["output"]
        page.screenshot(path=str(tmp_path / "live.png"), full_page=True)

        # A new API key is shown once, and works.
        page.goto(f"{harness.base_url}/admin/accounts/apikey/add/")
        page.select_option("#id_user", label="alice")
        page.fill("#id_name", "from the browser")
        page.click("input[name=_save]")
        new_key = page.inner_text("#raw-api-key").strip()
        assert new_key.startswith("hk_")
        assert harness.client(new_key).get("/api/runs").status_code == 200

        # Revoke it with the action; the API then refuses it.
        page.goto(f"{harness.base_url}/admin/accounts/apikey/?q=from+the+browser")
        page.check("input[name=_selected_action]")
        page.select_option("select[name=action]", "revoke_keys")
        page.click("button[name=index]")
        page.wait_for_selector("text=Revoked 1 key(s).")
        assert harness.client(new_key).get("/api/runs").status_code == 401

        # The audit log shows it all and offers no way to change it.
        page.goto(f"{harness.base_url}/admin/audit/auditlog/")
        content = page.content()
        assert "api_key.revoked" in content and "run.succeeded" in content
        assert "Add audit log entry" not in content
        page.close()
    finally:
        harness.close()


def test_an_operator_cleans_up_a_live_sandbox_in_the_browser(browser, tmp_path):
    import tempfile
    from pathlib import Path

    root = Path(tempfile.mkdtemp(prefix="harness-sbx-browser-"))
    harness = Harness(tmp_path, HARNESS_SANDBOX_ROOT=str(root), HARNESS_SANDBOX_COMMAND_TIMEOUT_SECONDS="60").start()
    try:
        client = harness.client(harness.api_key("alice"))
        run = client.post(
            "/api/runs", json={"input": "```sh\nsleep 45; echo late\n```", "agent": "coder", "model": "offline"}
        ).json()
        for _ in range(300):
            rows = client.get(f"/api/runs/{run['id']}/sandboxes").json()
            if rows and rows[0]["status"] == "live" and any(root.iterdir()):
                break
            time.sleep(0.1)
        sandbox_id = rows[0]["id"]

        page = admin_login(browser, harness)

        page.goto(f"{harness.base_url}/admin/sandboxes/sandbox/")
        row = page.locator("tr", has_text=sandbox_id)
        assert run["id"] in row.inner_text() and "Live" in row.inner_text()
        row.locator("input.action-select").check()
        page.select_option("select[name=action]", "clean_up_sandboxes")
        page.click("button[name=index]")
        # What the admin says, whatever it is: a failed cleanup names its error.
        said = page.locator("ul.messagelist").inner_text()
        assert "Cleaned up 1 sandbox(es)." in said, said
        page.screenshot(path=str(tmp_path / "sandboxes.png"), full_page=True)
        assert list(root.iterdir()) == []  # workspace gone, its sleep killed

        page.click(f"text={sandbox_id}")
        page.wait_for_selector("text=cleaned up by operator admin")
        assert "Done" in page.content()
        page.goto(f"{harness.base_url}/admin/audit/auditlog/?q={sandbox_id}")
        page.wait_for_selector("text=sandbox.cleaned")
        final = harness.wait_for(client, run["id"], ("succeeded", "failed"), timeout=60)
        assert final["status"] in ("succeeded", "failed")
        (sandbox,) = client.get(f"/api/runs/{run['id']}/sandboxes").json()
        assert sandbox["exit_info"]["reason"] == "cleaned up by operator admin"
    finally:
        harness.close()
        shutil.rmtree(root, ignore_errors=True)


def test_a_failed_run_becomes_a_regression_test_in_two_clicks(browser, tmp_path):
    harness = Harness(tmp_path).start()
    try:
        client = harness.client(harness.api_key("alice"))
        run = client.post("/api/runs", json={"input": "What is 2 ** 100?", "agent": "calculator", "model": "offline"})
        answer = harness.wait_for(client, run.json()["id"], ("succeeded",))
        assert "exponent too large" in answer["output"]

        page = admin_login(browser, harness)
        page.goto(f"{harness.base_url}/admin/runs/run/")
        page.click(f"text={answer['id']}")

        page.click("text=Promote to golden")  # click 1
        assert page.input_value("#id_actual_output") == answer["output"]
        assert "2 model response(s) recorded" in page.content()
        page.fill("#id_dataset", "regressions")
        page.fill("#id_expected_output", "2 ** 100 = 1267650600228229401496703205376")
        page.select_option("#id_output_match", "exact")
        page.screenshot(path=str(tmp_path / "promote.png"), full_page=True)
        page.click("input[name=_save]")  # click 2
        page.wait_for_selector("text=to golden case")
        assert "regressions" in page.content() and "gold_" in page.url

        gate = harness.manage("eval", "--dataset", "regressions", check=False)
        assert gate.returncode == 1
        assert "output is not exactly '2 ** 100 = 1267650600228229401496703205376'" in gate.stdout

        # The failing result is readable at a glance in the admin, with a link to the run it produced.
        page.goto(f"{harness.base_url}/admin/evals/evalresult/?passed__exact=0")
        page.wait_for_selector("text=output is not exactly")
        page.click("td.field-produced_run a")
        page.wait_for_selector("text=run.succeeded")
        assert "Eval" in page.content() or "eval" in page.content()
    finally:
        harness.close()
