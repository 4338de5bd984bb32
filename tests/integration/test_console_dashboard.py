"""The fleet dashboard on the admin index and GET /api/stats, against the real harness, in Chromium:
the tiles and the chart, the window switch, a failure promoted from its link, and what a viewer and
an operator (users of the role groups) each see. The screenshot (`make screenshots`) goes to docs/console/dashboard.png."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import admin_login, member, screenshot
from tests.integration.conftest import log_in as admin_log_in
from tests.integration.harness import Harness

pytestmark = pytest.mark.integration


def test_the_fleet_dashboard_and_its_api(browser, tmp_path):
    harness = Harness(tmp_path, HARNESS_OFFLINE_DELAY_MS="20").start()
    try:
        alice = harness.client(harness.api_key("alice"))
        started = [
            alice.post("/api/runs", json={"input": f"What is {n} * 7?", "agent": "calculator", "model": "offline"})
            for n in (2, 3, 4)
        ]
        # One turn is not enough for a tool call and its answer: the run fails.
        started.append(
            alice.post(
                "/api/runs",
                json={"input": "What is 5 * 7?", "agent": "calculator", "model": "offline", "max_turns": 1},
            )
        )
        done = [harness.wait_for(alice, r.json()["id"], ("succeeded", "failed"), timeout=60) for r in started]
        assert [run["status"] for run in done] == ["succeeded"] * 3 + ["failed"], done
        failure = done[-1]

        # The figures over the API: staff keys only.
        staff_key = harness.api_key("opsbot")
        member(harness, "opsbot", "viewer")  # a role makes the key's user staff
        stats = harness.client(staff_key).get("/api/stats", params={"window": "1h"})
        assert stats.status_code == 200, stats.text
        body = stats.json()
        assert body["runs"] == 4 and body["by_status"]["failed"] == 1 and body["error_rate"] == 0.25
        assert body["duration"]["runs"] == 4 and body["duration"]["p95_seconds"] >= body["duration"]["p50_seconds"] > 0
        assert [row["name"] for row in body["by_agent"]] == ["calculator"] and body["by_agent"][0]["runs"] == 4
        assert body["latest_failures"][0]["id"] == failure["id"]
        assert [w["live"] for w in body["workers"]] == [True]
        refused = alice.get("/api/stats")
        assert refused.status_code == 403 and "staff user" in refused.json()["detail"]
        assert harness.client().get("/api/stats").status_code == 401
        assert harness.client(staff_key).get("/api/stats", params={"window": "2d"}).status_code == 422

        # A superuser: tiles, the chart, the tables and the latest failure with its promote link.
        page = admin_login(browser, harness)
        page.set_viewport_size({"width": 1280, "height": 900})
        page.goto(f"{harness.base_url}/admin/?window=1h")
        assert page.inner_text("#tile-runs .value") == "4"
        assert page.inner_text("#tile-error-rate .value") == "25.0%"
        assert page.inner_text("#tile-queue .value") == "0"
        # The current interval's bar: succeeded and failed segments, each with its tooltip.
        tooltips = page.locator("#fleet-dashboard svg.chart rect title").all_text_contents()
        assert any(t.endswith("Succeeded: 3") for t in tooltips) and any(t.endswith("Failed: 1") for t in tooltips)
        assert "calculator" in page.inner_text("#by-agent") and "offline" in page.inner_text("#by-model")
        assert failure["id"] in page.inner_text("#latest-failures")
        screenshot(page, "dashboard.png", full_page=True)

        # The window switch.
        page.click("#fleet-dashboard .windows a:text-is('7d')")
        page.wait_for_selector("#fleet-dashboard .windows strong:text-is('7d')")
        assert page.url.endswith("?window=7d") and page.inner_text("#tile-runs .value") == "4"
        page.click("#fleet-dashboard .windows a:text-is('24h')")
        page.wait_for_selector("#fleet-dashboard .windows strong:text-is('24h')")

        # Promote the failure from the dashboard: the promote page of that run.
        page.click(f"#latest-failures tr:has-text('{failure['id']}') a.promote-link")
        page.wait_for_selector("text=Promote")
        assert "/admin/evals/goldencase/promote/" in page.url and failure["id"] in page.content()
        page.close()

        # An operator sees the dashboard with promote links, and may cancel runs.
        operator = log_in(browser, harness, "ops", member(harness, "ops", "operator"))
        assert operator.locator("#latest-failures a.promote-link").count() == 1
        operator.goto(f"{harness.base_url}/admin/runs/run/")
        assert operator.locator("select[name=action] option[value=cancel_runs]").count() == 1
        operator.close()

        # A viewer sees the figures, but no promote link and no cancel.
        viewer = log_in(browser, harness, "watcher", member(harness, "watcher", "viewer"))
        assert viewer.inner_text("#tile-runs .value") == "4" and failure["id"] in viewer.inner_text("#latest-failures")
        assert viewer.locator("a.promote-link").count() == 0
        viewer.goto(f"{harness.base_url}/admin/runs/run/")
        viewer.wait_for_selector("#result_list")
        assert viewer.locator("select[name=action] option[value=cancel_runs]").count() == 0
        response = viewer.goto(f"{harness.base_url}{body['latest_failures'][0]['promote_url']}")
        assert response is not None and response.status == 403
        viewer.close()
    finally:
        harness.close()


def log_in(browser: Any, harness: Harness, username: str, password: str) -> Any:
    return admin_log_in(
        browser, harness, username, password, wait_for="#fleet-dashboard", viewport={"width": 1280, "height": 900}
    )
