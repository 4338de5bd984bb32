"""Cost and budgets in the admin, in a real browser against the real harness: a budget
edited on the user's page, runs with their cost (sortable) and the budget-exceeded
filter, the run page's cost, limits and trace line, and the spend page."""

from __future__ import annotations

from decimal import Decimal

import pytest

from runs.tests.fake_openai import BIG_USAGE, FakeOpenAI
from tests.integration.conftest import admin_login
from tests.integration.harness import Harness

pytestmark = pytest.mark.integration

OPENAI_KEY = "sk-live-ADMIN-BUDGET-0123456789"


def test_an_operator_sets_a_budget_and_reads_the_spend(browser, tmp_path):
    with FakeOpenAI(OPENAI_KEY, usage=BIG_USAGE, keep_calling=True) as fake:
        harness = Harness(
            tmp_path, OPENAI_API_KEY=OPENAI_KEY, OPENAI_BASE_URL=fake.base_url, HARNESS_RUN_MAX_TURNS="50"
        ).start()
        try:
            key = harness.api_key("alice")
            client = harness.client(key)
            cheap = client.post(
                "/api/runs", json={"input": "What is 9 * 9?", "agent": "calculator", "model": "offline"}
            )
            harness.wait_for(client, cheap.json()["id"], ("succeeded",))

            page = admin_login(browser, harness, wait_for="text=Cost and budgets")

            # A daily limit of $0.20, set on alice's own page.
            page.goto(f"{harness.base_url}/admin/auth/user/?q=alice")
            page.click("#result_list a:text-is('alice')")
            page.fill("#id_budget-0-daily_limit_usd", "0.20")
            page.click("input[name=_save]")
            page.wait_for_selector("text=was changed successfully")

            # Her runaway run stops at the limit; the next one is refused.
            runaway = client.post("/api/runs", json={"input": "spend", "agent": "calculator", "model": "gpt-5.4-mini"})
            stopped = harness.wait_for(client, runaway.json()["id"], ("succeeded", "failed"), timeout=60)
            assert stopped["error"].startswith("budget_exceeded: daily limit of $0.200000 reached")
            assert client.post("/api/runs", json={"input": "again", "model": "offline"}).status_code == 402

            # The runs list: cost and tokens columns, sortable by cost, and the budget filter.
            page.goto(f"{harness.base_url}/admin/runs/run/")
            page.click("th.column-cost a")
            page.wait_for_url("**o=*")
            rows = page.inner_text("#result_list tbody")
            assert "0.258750" in rows and "0.000000" in rows and "330000" in rows
            page.click("text=Budget exceeded")
            page.wait_for_url("**budget=exceeded*")
            assert page.locator("#result_list tbody tr").count() == 1
            assert stopped["id"] in page.inner_text("#result_list")

            # The run's page: its cost, its limits, the event, and where its trace would be.
            page.click(f"text={stopped['id']}")
            page.wait_for_selector("text=run.budget_exceeded")
            content = page.inner_text("#content")
            assert "0.258750" in content and "max_cost_usd" in content
            assert "telemetry was off" in content

            # The spend page: by day, agent, model and principal, and the budgets.
            page.goto(f"{harness.base_url}/admin/")
            page.click("text=Spend")
            page.wait_for_selector("#spend-by-agent")
            assert "0.258750" in page.inner_text("#spend-total")
            assert "calculator" in page.inner_text("#spend-by-agent")
            assert "gpt-5.4-mini" in page.inner_text("#spend-by-model")
            assert "alice" in page.inner_text("#spend-by-principal")
            assert "0.20" in page.inner_text("#budgets")
            page.click("text=30 days")
            page.wait_for_selector("text=Spend over the last 30 days")
            page.screenshot(path=str(tmp_path / "spend.png"), full_page=True)

            # The change was audited with who made it.
            audit = harness.sql(
                "from audit.models import AuditLog\n"
                "row = AuditLog.objects.filter(action__startswith='budget.').values('action', 'actor_label', 'data').get()\n"
                "print(json.dumps(row))"
            )
            assert audit["action"] == "budget.created" and Decimal(audit["data"]["daily_limit_usd"]) == Decimal("0.2")
            assert audit["actor_label"] == "admin"
        finally:
            harness.close()
