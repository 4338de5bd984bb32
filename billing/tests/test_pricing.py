"""Prices as numbers, for known usage."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from billing.pricing import TokenUsage, call_cost, is_priced, parse_overrides


def test_gpt_5_4_mini_is_priced_from_the_maintained_table_cached_input_included():
    # $0.75 input, $0.075 cached input, $4.50 output per million tokens.
    usage = TokenUsage(input_tokens=1_000_000, cached_input_tokens=200_000, output_tokens=100_000)
    assert call_cost("gpt-5.4-mini", usage) == Decimal("0.600") + Decimal("0.015") + Decimal("0.450")
    # A call's cost is rounded once, to a millionth of a dollar ($0.0000795 here).
    small = TokenUsage(input_tokens=22, output_tokens=14)
    assert call_cost("gpt-5.4-mini", small) == Decimal("0.000080")


def test_a_long_context_call_is_priced_at_its_tier():
    # gpt-5.4: $2.50 input, $0.25 cached, $15 output per million; above 272k input tokens the
    # whole call is priced at the long-context tier (2x input, 1.5x output).
    short = TokenUsage(input_tokens=100_000, cached_input_tokens=20_000, output_tokens=1_000)
    assert call_cost("gpt-5.4", short) == Decimal("0.2") + Decimal("0.005") + Decimal("0.015")
    long = TokenUsage(input_tokens=300_000, output_tokens=100)
    assert call_cost("gpt-5.4", long) == Decimal("1.5") + Decimal("0.00225")


def test_reasoning_tokens_are_output_tokens_and_not_charged_twice():
    plain = TokenUsage(input_tokens=0, output_tokens=1000)
    reasoning = TokenUsage(input_tokens=0, output_tokens=1000, reasoning_tokens=800)
    assert call_cost("gpt-5.4-mini", plain) == call_cost("gpt-5.4-mini", reasoning) == Decimal("0.0045")


def test_an_unknown_model_is_unpriced_not_free():
    assert not is_priced("no-such-model-7") and is_priced("gpt-5.4-mini") and is_priced("offline")
    assert call_cost("no-such-model-7", TokenUsage(input_tokens=10)) is None


def test_the_offline_and_replayed_models_are_explicitly_free():
    usage = TokenUsage(input_tokens=10_000, output_tokens=10_000)
    assert call_cost("offline", usage) == Decimal(0)
    assert call_cost("replay", usage) == Decimal(0)
    assert call_cost("replay:gpt-5.4-mini", usage) == Decimal(0)


def test_usage_is_read_from_sdk_openai_and_stored_shapes():
    from agents import Usage
    from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

    sdk = Usage(
        requests=1,
        input_tokens=100,
        output_tokens=50,
        total_tokens=150,
        input_tokens_details=InputTokensDetails(cached_tokens=40, cache_write_tokens=0),
        output_tokens_details=OutputTokensDetails(reasoning_tokens=30),
    )
    stored = {"input_tokens": 100, "output_tokens": 50, "input_tokens_details": {"cached_tokens": 40}}
    assert TokenUsage.of(sdk) == TokenUsage(100, 40, 50, 30)
    assert TokenUsage.of(stored) == TokenUsage(100, 40, 50, 0)
    assert TokenUsage.of(None) == TokenUsage()


def test_operator_overrides_price_unknown_models_inline_or_from_a_file(tmp_path):
    inline = '{"house-model": {"input": 2, "output": 8, "cached_input": 0.5}}'
    with override_settings(HARNESS_MODEL_PRICES=inline):
        usage = TokenUsage(input_tokens=1_000_000, cached_input_tokens=500_000, output_tokens=1_000_000)
        assert call_cost("house-model", usage) == Decimal("1.0") + Decimal("0.25") + Decimal("8")
    prices = tmp_path / "prices.json"
    prices.write_text('{"gpt-5.4-mini": {"input": 1, "output": 1}}')
    with override_settings(HARNESS_MODEL_PRICES=str(prices)):
        # An override wins over the table; without cached_input, cached input costs the input price.
        assert call_cost("gpt-5.4-mini", TokenUsage(input_tokens=1_000_000, cached_input_tokens=1_000_000)) == 1


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"m": {"input": 1}}', 'needs "input" and "output"'),
        ('{"m": {"input": "x", "output": 1}}', "not a number"),
        ('{"m": {"input": -1, "output": 1}}', "negative price"),
        ("/no/such/prices.json", "cannot read price file"),
        ('{"m": {"input": "NaN", "output": 1}}', "not a number"),
    ],
)
def test_a_bad_price_override_is_a_clear_configuration_error(raw, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        parse_overrides(raw)
