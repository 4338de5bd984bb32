"""What a model call cost, from its token usage.

Prices come from the `genai-prices` table (maintained, shipped with the package, no
network), with operator overrides in HARNESS_MODEL_PRICES for models it does not
know or prices negotiated otherwise. The offline and replayed models cost exactly $0.
A model nobody has a price for is *unpriced*: its cost is None, never a silent $0.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)

MILLION = Decimal(1_000_000)
FREE_MODELS = frozenset({"offline", "replay"})
USD = Decimal("0.000001")  # a call's cost, rounded once to a millionth of a dollar, is what is stored and summed


@dataclass(frozen=True)
class TokenUsage:
    """One model call's tokens, as OpenAI counts them: input includes the cached input,
    output includes the reasoning tokens."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "output_tokens": self.output_tokens,
            "reasoning_tokens": self.reasoning_tokens,
        }

    @classmethod
    def of(cls, usage: Any) -> TokenUsage:
        """From the SDK's Usage, OpenAI's ResponseUsage or a stored dict."""
        if usage is None:
            return cls()
        get = usage.get if isinstance(usage, dict) else lambda name, default=None: getattr(usage, name, default)
        input_details = get("input_tokens_details") or {}
        output_details = get("output_tokens_details") or {}

        def detail(details: Any, name: str) -> int:
            value = details.get(name) if isinstance(details, dict) else getattr(details, name, 0)
            return int(value or 0)

        return cls(
            input_tokens=int(get("input_tokens", 0) or 0),
            cached_input_tokens=int(get("cached_input_tokens", 0) or 0) or detail(input_details, "cached_tokens"),
            output_tokens=int(get("output_tokens", 0) or 0),
            reasoning_tokens=int(get("reasoning_tokens", 0) or 0) or detail(output_details, "reasoning_tokens"),
        )


@dataclass(frozen=True)
class ModelPrice:
    """US dollars per million tokens."""

    input: Decimal
    output: Decimal
    cached_input: Decimal
    source: str

    def cost(self, usage: TokenUsage) -> Decimal:
        cached = min(usage.cached_input_tokens, usage.input_tokens)
        total = (
            (usage.input_tokens - cached) * self.input + cached * self.cached_input + usage.output_tokens * self.output
        ) / MILLION
        return total.quantize(USD)


FREE = ModelPrice(Decimal(0), Decimal(0), Decimal(0), source="free")


def is_priced(model: str) -> bool:
    """Whether a call of this model can be priced (free, overridden, or in the table)."""
    return _is_free(model) or model in overrides() or _in_table(model)


def call_cost(model: str, usage: TokenUsage) -> Decimal | None:
    """The cost of one call in USD (rounded to a millionth), or None for an unpriced model.
    The table prices the call as a whole, so a long-context tier applies when the call is in it."""
    if _is_free(model):
        return FREE.cost(usage)
    override = overrides().get(model)
    if override is not None:
        return override.cost(usage)
    if not _in_table(model):
        return None
    from genai_prices import Usage, calc_price

    price = calc_price(
        Usage(
            input_tokens=usage.input_tokens,
            cache_read_tokens=min(usage.cached_input_tokens, usage.input_tokens),
            output_tokens=usage.output_tokens,
        ),
        model_ref=_table_name(model),
        provider_id="openai",
    )
    return Decimal(price.total_price).quantize(USD)


def _is_free(model: str) -> bool:
    return model in FREE_MODELS or model.startswith("replay:")  # an eval replaying recorded responses


def _table_name(model: str) -> str:
    return model.split("/", 1)[1] if model.startswith("openai/") else model


@cache
def _in_table(model: str) -> bool:
    from genai_prices import Usage, calc_price

    try:
        calc_price(Usage(input_tokens=1), model_ref=_table_name(model), provider_id="openai")
    except LookupError:
        return False
    return True


_overrides: tuple[str, dict[str, ModelPrice]] | None = None


def overrides() -> dict[str, ModelPrice]:
    """HARNESS_MODEL_PRICES, parsed once per value: inline JSON or the path of a JSON file,
    `{"model": {"input": 0.75, "output": 4.5, "cached_input": 0.075}}` in USD per million tokens."""
    global _overrides
    raw = settings.HARNESS_MODEL_PRICES
    if _overrides is None or _overrides[0] != raw:
        _overrides = (raw, parse_overrides(raw))
    return _overrides[1]


def parse_overrides(raw: str) -> dict[str, ModelPrice]:
    raw = raw.strip()
    if not raw:
        return {}
    source = "HARNESS_MODEL_PRICES"
    if not raw.startswith("{"):
        path = Path(raw)
        try:
            raw = path.read_text()
        except OSError as exc:
            raise ImproperlyConfigured(f"HARNESS_MODEL_PRICES: cannot read price file {path}: {exc}") from None
        source = f"HARNESS_MODEL_PRICES file {path}"
    try:
        table = json.loads(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{source}: not valid JSON: {exc}") from None
    if not isinstance(table, dict):
        raise ImproperlyConfigured(f"{source}: expected an object of model names")
    prices = {}
    for model, entry in table.items():
        if not isinstance(entry, dict) or not {"input", "output"} <= set(entry):
            raise ImproperlyConfigured(
                f'{source}: {model!r} needs "input" and "output" (USD per million tokens), optionally "cached_input"'
            )
        try:
            values = {key: Decimal(str(entry[key])) for key in ("input", "output")}
            cached = Decimal(str(entry.get("cached_input", entry["input"])))
        except ArithmeticError:
            raise ImproperlyConfigured(f"{source}: {model!r} has a price that is not a number") from None
        if not all(value.is_finite() for value in (*values.values(), cached)):
            raise ImproperlyConfigured(f"{source}: {model!r} has a price that is not a number")
        if min(*values.values(), cached) < 0:
            raise ImproperlyConfigured(f"{source}: {model!r} has a negative price")
        prices[model] = ModelPrice(values["input"], values["output"], cached, source="override")
    return prices
