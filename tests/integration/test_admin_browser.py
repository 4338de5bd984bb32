"""The admin in a real browser (Debian's chromium driven by Playwright) against the real harness."""

from __future__ import annotations

import shutil

import pytest

from tests.integration.harness import Harness

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: run `make system-deps` (Debian package chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


def test_an_operator_works_through_the_admin(browser, tmp_path):
    harness = Harness(tmp_path, HARNESS_OFFLINE_DELAY_MS="20").start()
    try:
        login = harness.manage("ensureadmin").stdout
        password = login.split("password '")[1].split("'")[0]
        key = harness.api_key("alice")
        run = (
            harness.client(key)
            .post("/api/runs", json={"input": "What is 9 * 9?", "agent": "calculator", "model": "offline"})
            .json()
        )
        assert harness.wait_for(harness.client(key), run["id"], ("succeeded",))["status"] == "succeeded"

        page = browser.new_page()
        page.goto(f"{harness.base_url}/admin/")
        page.fill("#id_username", "admin")
        page.fill("#id_password", password)
        page.click("input[type=submit]")
        page.wait_for_selector("text=Operations")

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
