"""Budgets against the real harness (web + worker processes) and a runaway model over the
wire-level fake OpenAI server: twenty runs of one principal racing for the last dollar,
refusals that write nothing, and the operator's view of it in a real browser."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from runs.tests.fake_openai import BIG_CALL_COST, BIG_USAGE, FakeOpenAI
from tests.integration.harness import Harness

pytestmark = pytest.mark.integration

OPENAI_KEY = "sk-live-BUDGET-SECRET-0123456789"
DAILY_LIMIT = Decimal("0.5")
RACERS = 20


@pytest.fixture(scope="module")
def fake_openai():
    with FakeOpenAI(OPENAI_KEY, usage=BIG_USAGE, keep_calling=True) as fake:
        yield fake


@pytest.fixture(scope="module")
def harness(tmp_path_factory, fake_openai):
    h = Harness(
        tmp_path_factory.mktemp("harness"),
        OPENAI_API_KEY=OPENAI_KEY,
        OPENAI_BASE_URL=fake_openai.base_url,
        HARNESS_RUN_MAX_TURNS="200",
    )
    h.start()
    yield h
    h.close()


def set_budget(harness: Harness, username: str, **limits: object) -> None:
    fields = ", ".join(f"{name}={value!r}" for name, value in limits.items())
    harness.sql(
        "from decimal import Decimal\nfrom django.contrib.auth.models import User\nfrom billing.models import Budget\n"
        f"Budget.objects.update_or_create(user=User.objects.get(username={username!r}), defaults=dict({fields}))\n"
        "print(json.dumps(1))"
    )


def test_twenty_racing_runs_overspend_a_daily_limit_by_at_most_one_call_each(harness, fake_openai):
    key = harness.api_key("racer")
    set_budget(harness, "racer", daily_limit_usd=DAILY_LIMIT)
    client = harness.client(key)
    body = {"input": "spend", "agent": "calculator", "model": "gpt-5.4-mini"}
    # The model answers once all twenty are accepted: a run that spent the limit before a slow
    # POST arrived would make that POST a fair 402, and the race would not be twenty wide.
    fake_openai.open.clear()
    try:
        with ThreadPoolExecutor(RACERS) as pool:
            created = list(pool.map(lambda _: client.post("/api/runs", json=body), range(RACERS)))
    finally:
        fake_openai.open.set()
    assert [response.status_code for response in created] == [202] * RACERS
    done = [
        harness.wait_for(client, response.json()["id"], ("succeeded", "failed"), timeout=120) for response in created
    ]

    assert all(run["status"] == "failed" for run in done)
    assert all(run["error"].startswith("budget_exceeded: daily limit of $0.500000 reached") for run in done), [
        run["error"] for run in done
    ]
    costs = [Decimal(run["cost_usd"]) for run in done]
    spent = sum(costs, Decimal(0))
    # Check-then-charge: every run may finish the one call it had started when the limit was reached.
    assert DAILY_LIMIT <= spent <= DAILY_LIMIT + RACERS * BIG_CALL_COST
    assert len(fake_openai.requests) * BIG_CALL_COST == spent  # every call made was priced and charged, once
    usage = client.get("/api/usage", params={"group_by": "agent"}).json()
    assert Decimal(usage["spend_today_usd"]) == spent == Decimal(usage["total_cost_usd"])

    # Used up: the next run is refused before anything is written.
    runs_before = client.get("/api/runs", params={"limit": 200}).json()["items"]
    refused = client.post("/api/runs", json=body)
    assert refused.status_code == 402
    reason = refused.json()
    assert reason["limit"] == "daily_limit_usd" and Decimal(reason["spent_usd"]) == spent
    assert reason["resets_at"].endswith("T00:00:00Z")
    assert client.get("/api/runs", params={"limit": 200}).json()["items"] == runs_before
    assert OPENAI_KEY not in json.dumps(done) + refused.text


def test_the_concurrent_runs_limit_refuses_with_429_until_a_run_ends(harness):
    key = harness.api_key("busy")
    set_budget(harness, "busy", max_concurrent_runs=2)
    client = harness.client(key)
    # Runaway real-model runs, each stopped by its own max_cost_usd.
    body = {"input": "spend", "agent": "calculator", "model": "gpt-5.4-mini", "max_cost_usd": "0.5"}
    first, second = (client.post("/api/runs", json=body) for _ in range(2))
    assert first.status_code == second.status_code == 202
    third = client.post("/api/runs", json=body)
    assert third.status_code == 429 and int(third.headers["Retry-After"]) >= 1
    assert third.json()["limit"] == "max_concurrent_runs" and third.json()["active_runs"] == 2
    ended = harness.wait_for(client, first.json()["id"], ("succeeded", "failed"), timeout=60)
    assert ended["error"].startswith("budget_exceeded: max_cost_usd of $0.5 reached")
    harness.wait_for(client, second.json()["id"], ("succeeded", "failed"), timeout=60)
    assert client.post("/api/runs", json={**body, "model": "offline"}).status_code == 202
