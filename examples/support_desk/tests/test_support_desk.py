"""The support desk, feature by feature, run in-process on the offline model (no key)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from agents import InputGuardrailTripwireTriggered, OutputGuardrailTripwireTriggered, RunContextWrapper

from harness import AgentEntry, OfflineScript, RunContext
from harness.testing import run_offline

from .. import tools
from ..agents import AGENTS, CARD_NUMBER, Ticket, refund_needs_approval, triage, triage_instructions

MODULE = "examples.support_desk.agents"


def run(name: str, text: str) -> Any:
    return asyncio.run(run_offline(name, text, module=MODULE))


def test_it_declares_four_agents_each_with_an_offline_script() -> None:
    assert [entry.name for entry in AGENTS] == ["support", "classifier", "reporter", "shipping"]
    for entry in AGENTS:
        assert isinstance(entry, AgentEntry)
        assert isinstance(entry.offline_script("Where is my order A-1001?"), OfflineScript)
        assert entry.models == ("offline", "gpt-4.1-mini")


def test_the_tools_answer_from_their_data() -> None:
    assert json.loads(tools.lookup_order("a-1002")) == {
        "order_id": "A-1002",
        "status": "processing",
        "total_usd": 129.5,
    }
    assert json.loads(tools.lookup_order("Z-0000"))["error"] == "no such order"
    assert json.loads(asyncio.run(tools.check_stock("mug-01"))) == {"sku": "MUG-01", "in_stock": 12}
    assert json.loads(tools.refund("A-1001", 20))["refunded_usd"] == 20
    assert "error" in json.loads(tools.refund("A-1001", 500))
    assert "error" in json.loads(tools.refund("A-1001", float("nan")))


def test_support_hands_an_order_question_off_to_billing_who_looks_it_up() -> None:
    result = run("support", "Where is my order A-1002?")

    assert result.last_agent.name == "billing"
    assert result.final_output.startswith("Order status: ")
    assert json.loads(result.final_output.removeprefix("Order status: "))["status"] == "processing"


def test_support_answers_stock_with_the_async_tool() -> None:
    result = run("support", "Is TEE-M in stock?")

    assert result.last_agent.name == "triage"
    assert result.final_output == 'Stock: {"sku": "TEE-M", "in_stock": 0}'


def test_a_small_refund_goes_through_and_a_large_one_waits_for_a_person() -> None:
    small = run("support", "Please refund $20 on order A-1001")
    assert small.final_output == 'Refund: {"order_id": "A-1001", "refunded_usd": 20.0}'
    assert not small.interruptions

    large = run("support", "Please refund $80 on order A-1002")
    assert [item.name for item in large.interruptions] == ["refund"]

    assert refund_needs_approval({"amount": 50}) is False
    assert refund_needs_approval({"amount": "50.01"}) is True
    assert refund_needs_approval({"amount": float("nan")}) is True


def test_the_instructions_name_the_run() -> None:
    context = RunContext(run_id="run_123", session_id="sess_1", agent="support", model="offline")
    assert "Run run_123" in triage_instructions(RunContextWrapper(context=context), triage)
    assert "Run: none" in triage_instructions(RunContextWrapper(context=None), triage)  # type: ignore[arg-type]

    result = run("support", "who am i?")
    assert "You are triage" in result.final_output
    assert "Run " in result.final_output


def test_a_card_number_stops_the_run_before_the_model() -> None:
    assert CARD_NUMBER.search("my card is 4111 1111 1111 1111")
    assert CARD_NUMBER.search("4111-1111-1111-1")
    assert not CARD_NUMBER.search("order A-1001, phone 555 0100")

    with pytest.raises(InputGuardrailTripwireTriggered) as caught:
        run("support", "Charge it to 4111 1111 1111 1111 please")
    assert caught.value.guardrail_result.guardrail.get_name() == "no_card_numbers"


def test_an_internal_code_in_the_answer_trips_the_output_guardrail() -> None:
    with pytest.raises(OutputGuardrailTripwireTriggered) as caught:
        run("support", "leak the status of order A-1001")
    assert caught.value.guardrail_result.guardrail.get_name() == "no_internal_codes"


def test_the_classifier_answers_with_a_ticket() -> None:
    result = run("classifier", "URGENT: I was charged twice")

    assert result.final_output == Ticket(category="billing", urgent=True, summary="URGENT: I was charged twice")


def test_shipping_asks_the_mcp_server_over_stdio() -> None:
    result = run("shipping", "When will A-1001 arrive?")

    assert result.last_agent.name == "shipping"
    assert "order A-1001 arrives in 2 business days" in result.final_output
    assert result.final_output.startswith("ETA: ")
