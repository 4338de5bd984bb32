"""Budgets: limits a run may ask for, refused runs that write nothing, and runs stopped
by the limit they reach (through the SDK against the wire-level fake OpenAI server)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.test import override_settings

from audit.models import AuditLog
from billing.models import Budget, SpendDay
from billing.services import spend_charge, spend_of
from conftest import make_run
from execution.executor import run_execute
from runs.models import Run, RunEvent, Session, Span
from runs.tests.fake_openai import BIG_CALL_COST, BIG_USAGE, FakeOpenAI

KEY = "sk-test-budget-0123456789abcdef"


def runaway(**settings_overrides):
    """A fake model that calls a tool on every turn, forever, costing BIG_CALL_COST a call."""
    fake = FakeOpenAI(KEY, usage=BIG_USAGE, keep_calling=True)
    return fake, override_settings(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=fake.base_url, **settings_overrides)


@pytest.mark.django_db(transaction=True)
def test_a_run_stops_after_the_call_that_crosses_its_max_cost(alice):
    fake, config = runaway(HARNESS_RUN_MAX_TURNS=50)
    with fake, config:
        run = make_run(alice, model="gpt-5.4-mini", limits={"max_cost_usd": Decimal("0.2")})
        assert run_execute(run.pk) == "failed"
    run.refresh_from_db()
    # Calls 1 and 2 cost $0.1725; call 3 crosses $0.20 and completes; call 4 is never made.
    assert len(fake.requests) == 3
    assert run.error.startswith("budget_exceeded: max_cost_usd of $0.2 reached: the run has spent $0.258750")
    assert run.cost_usd == 3 * BIG_CALL_COST and not run.unpriced
    assert run.total_tokens == 3 * 110_000
    assert run.usage["cached_input_tokens"] == 150_000 and run.usage["reasoning_tokens"] == 6_000
    event = RunEvent.objects.get(run=run, type="run.budget_exceeded")
    assert event.data["limit"] == "max_cost_usd" and event.data["spent_usd"] == "0.258750"
    final = RunEvent.objects.filter(run=run).order_by("-seq").first()
    assert final is not None and final.type == "run.failed" and final.seq == event.seq + 1
    audit = AuditLog.objects.get(run_id=run.pk, action="run.budget_exceeded")
    assert audit.data["limit"] == "max_cost_usd"
    # Each model call's span is priced; they add up to the run's cost.
    priced = Span.objects.filter(run=run, cost_usd__isnull=False)
    assert priced.count() == 3 and sum(span.cost_usd for span in priced) == run.cost_usd
    # The principal is charged what the run cost.
    assert spend_of(alice.user.pk).today == run.cost_usd


@pytest.mark.django_db(transaction=True)
def test_max_tokens_and_max_turns_stop_a_run_the_same_way(alice):
    fake, config = runaway()
    with fake, config:
        by_tokens = make_run(alice, model="gpt-5.4-mini", limits={"max_tokens": 200_000})
        assert run_execute(by_tokens.pk) == "failed"
        by_turns = make_run(alice, model="gpt-5.4-mini", limits={"max_turns": 2})
        assert run_execute(by_turns.pk) == "failed"
    by_tokens.refresh_from_db()
    by_turns.refresh_from_db()
    assert by_tokens.error.startswith("budget_exceeded: max_tokens of 200000 reached: the run has used 220000 tokens")
    assert by_turns.error.startswith("budget_exceeded: max_turns of 2 reached")
    assert RunEvent.objects.filter(run=by_turns, type="run.budget_exceeded", data__limit="max_turns").exists()
    assert by_turns.cost_usd == 2 * BIG_CALL_COST


@pytest.mark.django_db(transaction=True)
def test_a_principal_daily_limit_stops_a_running_run(alice):
    Budget.objects.create(user=alice.user, daily_limit_usd=Decimal("0.3"))
    spend_charge(owner_id=alice.user.pk, cost=Decimal("0.1"))  # spent earlier today
    fake, config = runaway(HARNESS_RUN_MAX_TURNS=50)
    with fake, config:
        run = make_run(alice, model="gpt-5.4-mini")
        assert run_execute(run.pk) == "failed"
    run.refresh_from_db()
    # $0.10 + 3 calls = $0.35875 crosses $0.30 on the third call; the fourth is refused.
    assert len(fake.requests) == 3
    assert run.error.startswith("budget_exceeded: daily limit of $0.300000 reached: $0.358750 spent")
    assert spend_of(alice.user.pk).today == Decimal("0.1") + 3 * BIG_CALL_COST  # charged call by call, once


@pytest.mark.django_db(transaction=True)
def test_the_offline_model_costs_exactly_zero_and_an_unpriced_model_is_null(alice):
    run = make_run(alice)
    assert run_execute(run.pk) == "succeeded"
    run.refresh_from_db()
    assert run.cost_usd == 0 and not run.unpriced and run.limits["max_cost_usd"] == "1.00"
    fake, config = runaway(HARNESS_ALLOWED_MODELS=["house-model"], HARNESS_RUN_MAX_TURNS=2)
    with fake, config:
        unpriced = make_run(alice, model="house-model")
        run_execute(unpriced.pk)
    unpriced.refresh_from_db()
    assert unpriced.cost_usd is None and unpriced.unpriced and unpriced.total_tokens == 2 * 110_000
    # The server's default cost cap cannot hold a model without a price: tokens and turns do.
    assert unpriced.limits["max_cost_usd"] is None and unpriced.limits["max_tokens"] == 1_000_000


# --- Before a run is accepted -------------------------------------------------------


def _nothing_written(owner, before: tuple[int, int, int]) -> bool:
    return before == _counts(owner)


def _counts(owner) -> tuple[int, int, int]:
    return (
        Run.objects.filter(owner=owner).count(),
        Session.objects.filter(owner=owner).count(),
        AuditLog.objects.filter(action="run.created").count(),
    )


@pytest.mark.django_db(transaction=True)
def test_a_used_up_daily_limit_is_402_naming_the_limit_the_spend_and_the_reset(api, alice):
    Budget.objects.create(user=alice.user, daily_limit_usd=Decimal("1.5"), monthly_limit_usd=Decimal("100"))
    spend_charge(owner_id=alice.user.pk, cost=Decimal("1.5"))
    before = _counts(alice.user)
    response = api.post("/api/runs", {"input": "hi", "model": "offline"}, who=alice)
    assert response.status_code == 402
    body = response.json()
    today = datetime.now(UTC).date()
    assert body["limit"] == "daily_limit_usd" and body["limit_usd"] == "1.500000" and body["spent_usd"] == "1.500000"
    assert body["resets_at"].startswith(f"{today.fromordinal(today.toordinal() + 1)}T00:00:00")
    assert "daily limit of $1.500000 reached" in body["detail"]
    assert _nothing_written(alice.user, before)


@pytest.mark.django_db(transaction=True)
def test_a_used_up_monthly_limit_is_402(api, alice):
    Budget.objects.create(user=alice.user, monthly_limit_usd=Decimal("2"))
    today = datetime.now(UTC).date()
    SpendDay.objects.create(owner=alice.user, day=today.replace(day=1), cost_usd=Decimal("1"))
    spend_charge(owner_id=alice.user.pk, cost=Decimal("1"))
    response = api.post("/api/runs", {"input": "hi", "model": "offline"}, who=alice)
    assert response.status_code == 402
    assert response.json()["limit"] == "monthly_limit_usd" and response.json()["resets_at"].endswith("-01T00:00:00Z")


@pytest.mark.django_db(transaction=True)
def test_the_concurrent_runs_limit_is_429_with_retry_after(api, alice):
    Budget.objects.create(user=alice.user, max_concurrent_runs=1)
    assert api.post("/api/runs", {"input": "hi", "model": "offline"}, who=alice).status_code == 202
    before = _counts(alice.user)
    response = api.post("/api/runs", {"input": "hi", "model": "offline"}, who=alice)
    assert response.status_code == 429 and int(response["Retry-After"]) >= 1
    assert response.json()["limit"] == "max_concurrent_runs" and response.json()["active_runs"] == 1
    assert _nothing_written(alice.user, before)


@pytest.mark.django_db(transaction=True)
def test_requested_limits_are_clamped_by_the_server_agent_and_principal_maxima(api, alice):
    Budget.objects.create(user=alice.user, max_run_cost_usd=Decimal("0.5"), max_run_tokens=5000)
    body = api.post(
        "/api/runs",
        {"input": "hi", "model": "offline", "max_cost_usd": "3", "max_tokens": 9000, "max_turns": 99},
        who=alice,
    ).json()
    assert body["limits"] == {
        "max_cost_usd": "0.500000",
        "max_tokens": 5000,
        "max_turns": 10,
        "max_sandbox_seconds": 600.0,
    }
    smaller = api.post("/api/runs", {"input": "hi", "model": "offline", "max_cost_usd": "0.01"}, who=alice).json()
    assert smaller["limits"]["max_cost_usd"] == "0.01"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_cost_usd", "-1"),
        ("max_cost_usd", "lots"),
        ("max_tokens", 0),
        ("max_turns", -3),
        ("max_sandbox_seconds", 0),
    ],
)
def test_bad_limits_are_422_and_write_nothing(api, alice, field, value):
    before = _counts(alice.user)
    response = api.post("/api/runs", {"input": "hi", "model": "offline", field: value}, who=alice)
    assert response.status_code == 422, response.content
    assert field in str(response.json()["detail"])
    assert _nothing_written(alice.user, before)


@pytest.mark.django_db(transaction=True)
def test_a_cost_limit_on_a_model_without_a_price_is_refused_with_the_fix(api, alice):
    body = {"input": "hi", "model": "house-model", "max_cost_usd": "0.5"}
    with override_settings(HARNESS_ALLOWED_MODELS=["offline", "house-model"], OPENAI_API_KEY="sk-test-key"):
        before = _counts(alice.user)
        response = api.post("/api/runs", body, who=alice)
        assert response.status_code == 422
        assert "HARNESS_MODEL_PRICES" in response.json()["detail"]
        assert _nothing_written(alice.user, before)
        Budget.objects.create(user=alice.user, daily_limit_usd=Decimal("5"))
        assert api.post("/api/runs", {**body, "max_cost_usd": None}, who=alice).status_code == 422
        with override_settings(HARNESS_MODEL_PRICES='{"house-model": {"input": 1, "output": 2}}'):
            assert api.post("/api/runs", body, who=alice).status_code == 202


# --- Usage reports ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_usage_reports_the_callers_own_spend_by_agent_model_day_and_session(api, alice, outsider):
    mine = [make_run(alice, agent=agent) for agent in ("calculator", "calculator", "assistant")]
    Run.objects.filter(pk=mine[0].pk).update(cost_usd=Decimal("0.25"), total_tokens=100)
    Run.objects.filter(pk=mine[1].pk).update(cost_usd=Decimal("0.50"), total_tokens=200)
    Run.objects.filter(pk=mine[2].pk).update(cost_usd=None, unpriced=True, total_tokens=50)
    theirs = make_run(outsider)
    Run.objects.filter(pk=theirs.pk).update(cost_usd=Decimal("9"))
    by_agent = api.get("/api/usage", who=alice, group_by="agent").json()
    assert by_agent["items"] == [
        {"key": "assistant", "runs": 1, "cost_usd": "0.000000", "unpriced_runs": 1, "total_tokens": 50},
        {"key": "calculator", "runs": 2, "cost_usd": "0.750000", "unpriced_runs": 0, "total_tokens": 300},
    ]
    assert by_agent["total_cost_usd"] == "0.750000"
    assert by_agent["spend_today_usd"] == by_agent["spend_month_usd"] == "0.000000"
    by_day = api.get("/api/usage", who=alice).json()
    assert [row["key"] for row in by_day["items"]] == [str(datetime.now(UTC).date())]
    assert len(api.get("/api/usage", who=alice, group_by="session").json()["items"]) == 3
    assert api.get("/api/usage", who=alice, group_by="model").json()["items"][0]["key"] == "offline"
    assert api.get("/api/usage", who=alice, group_by="colour").status_code == 422
    empty = api.get("/api/usage", who=alice, **{"from": "2020-01-01T00:00:00Z", "to": "2020-01-02T00:00:00Z"})
    assert empty.json()["items"] == []
    backwards = api.get("/api/usage", who=alice, **{"from": "2020-01-02T00:00:00Z", "to": "2020-01-01T00:00:00Z"})
    assert backwards.status_code == 422


@pytest.mark.django_db(transaction=True)
def test_sandbox_seconds_count_against_the_runs_time_budget(alice, bwrap):
    run = make_run(alice, agent="coder", input="```sh\nsleep 1.5; echo slept\n```", limits={"max_sandbox_seconds": 1})
    assert run_execute(run.pk) == "failed"
    run.refresh_from_db()
    # The command ran (the first call was within budget); the answer after it was not allowed.
    outputs = RunEvent.objects.filter(run=run, type="tool.output").values_list("data", flat=True)
    assert any("slept" in data["output"] for data in outputs)
    assert run.error.startswith("budget_exceeded: max_sandbox_seconds of 1 reached: the run's sandbox has been up 1.")
    assert RunEvent.objects.get(run=run, type="run.budget_exceeded").data["limit"] == "max_sandbox_seconds"
    assert RunEvent.objects.filter(run=run, type="sandbox.stopped").exists()  # and was cleaned up


def test_a_call_without_usage_makes_the_run_unpriced_not_free():
    import asyncio

    from billing.services import RunLimits
    from execution.budget import RunMeter

    async def no_db(*args, **kwargs):
        raise AssertionError("an unpriced call charges nothing")

    limits = RunLimits(max_cost_usd=None, max_tokens=None, max_turns=10, max_sandbox_seconds=None, spend_limited=True)
    meter = RunMeter(model="gpt-5.4-mini", owner_id=1, limits=limits, db=no_db)
    asyncio.run(meter.after_call(None))
    assert (
        meter.unpriced
        and meter.run_cost is None
        and meter.calls
        == [
            {
                "input_tokens": 0,
                "cached_input_tokens": 0,
                "output_tokens": 0,
                "reasoning_tokens": 0,
                "cost_usd": None,
            }
        ]
    )


def test_a_charge_interrupted_by_a_cancel_is_not_charged_again_at_the_end():
    import asyncio

    from billing.services import RunLimits
    from execution.budget import RunMeter

    async def cancelled_during_the_write(*args, **kwargs):
        raise asyncio.CancelledError  # the write itself goes on, and commits, on its thread

    limits = RunLimits(max_cost_usd=None, max_tokens=None, max_turns=10, max_sandbox_seconds=None, spend_limited=True)
    meter = RunMeter(model="gpt-5.4-mini", owner_id=1, limits=limits, db=cancelled_during_the_write)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(meter.after_call(BIG_USAGE))
    assert meter.charged == meter.cost == BIG_CALL_COST  # the end charges cost - charged = 0
