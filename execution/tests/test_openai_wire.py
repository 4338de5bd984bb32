"""The real OpenAI path end to end, against a wire-level fake server on loopback."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import override_settings

from conftest import make_run
from execution.executor import run_execute
from runs.models import Span
from runs.tests.fake_openai import FakeOpenAI

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "sk-test-wire-0123456789abcdef"


def test_a_gpt_run_round_trips_a_tool_call_over_the_wire(alice):
    with FakeOpenAI(KEY) as fake, override_settings(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=fake.base_url):
        run = make_run(alice, model="gpt-5.4-mini", input="What is 6 * 7?")
        assert run_execute(run.pk) == "succeeded"
    run.refresh_from_db()
    assert run.output == "The tool said 42."
    assert run.usage == {
        "requests": 2,
        "input_tokens": 22,
        "cached_input_tokens": 0,
        "output_tokens": 14,
        "reasoning_tokens": 0,
        "total_tokens": 36,
    }
    # gpt-5.4-mini: 11 input tokens at $0.75 and 7 output tokens at $4.50 per million, twice.
    assert run.cost_usd == Decimal("0.000080") and run.total_tokens == 36 and not run.unpriced
    assert fake.auth_headers == [f"Bearer {KEY}"] * 2
    first, second = fake.requests
    assert first["model"] == "gpt-5.4-mini" and first["stream"] is True
    assert [tool["name"] for tool in first["tools"]] == ["calculate"]
    assert second["input"][-1] == {"call_id": "call_fake_1", "output": "42", "type": "function_call_output"}
    kinds = [kind for kind in run.events.order_by("seq").values_list("type", flat=True) if kind != "text.delta"]
    assert kinds[-4:] == ["tool.called", "tool.output", "message.created", "run.succeeded"]
    assert Span.objects.filter(run=run, kind="function", name="calculate").exists()
    deltas = run.events.filter(type="text.delta").order_by("seq").values_list("data", flat=True)
    assert "".join(delta["text"] for delta in deltas) == "The tool said 42."
    assert Span.objects.filter(run=run, kind="response").count() == 2


def test_a_gpt_run_drives_a_sandbox_tool_over_the_wire(alice, bwrap):
    with FakeOpenAI(KEY) as fake, override_settings(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=fake.base_url):
        run = make_run(alice, agent="coder", model="gpt-5.4-mini", input="Compute six times seven in the shell.")
        assert run_execute(run.pk) == "succeeded"
    run.refresh_from_db()
    first, second = fake.requests
    offered = {tool.get("name"): tool.get("type") for tool in first["tools"]}
    assert offered["exec_command"] == "function" and offered["apply_patch"] == "custom"
    assert "wire-42\n1000" in second["input"][-1]["output"]  # ran confined, as the sandbox's uid
    assert "wire-42" in run.output and KEY not in str(second)
    sandbox = run.sandboxes.get()
    assert sandbox.provider == "local" and sandbox.cleanup_state == "done"


def test_a_rejected_key_fails_the_run_without_leaking_the_key(alice):
    with (
        FakeOpenAI("sk-the-right-one-000000") as fake,
        override_settings(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=fake.base_url),
    ):
        run = make_run(alice, model="gpt-5.4-mini")
        assert run_execute(run.pk) == "failed"
    run.refresh_from_db()
    assert "AuthenticationError" in run.error and "Incorrect API key" in run.error
    assert KEY not in run.error and "[REDACTED]" in run.error


def test_a_gpt_run_records_a_cassette_that_replays_with_no_key(alice, operator):
    from evals.services import eval_run, golden_promote

    with FakeOpenAI(KEY) as fake, override_settings(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=fake.base_url):
        run = make_run(alice, model="gpt-5.4-mini", input="What is 6 * 7?")
        assert run_execute(run.pk) == "succeeded"
    run.refresh_from_db()
    assert [call["shape"]["tools"] for call in run.model_calls] == [["calculate"], ["calculate"]]
    assert run.model_calls[0]["output"][0]["type"] == "function_call"
    assert run.model_calls[1]["usage"] == {"input_tokens": 11, "output_tokens": 7}
    golden_promote(run=run, dataset_name="wire", user=operator)
    with override_settings(OPENAI_API_KEY="", OPENAI_BASE_URL=""):
        evaluation = eval_run(datasets=["wire"])
    (result,) = evaluation.results.all()
    assert result.passed, result.reasons
    assert result.output == "The tool said 42." and result.run.model == "replay:gpt-5.4-mini"
    assert len(fake.requests) == 2  # the replay never called the server
