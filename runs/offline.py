"""A deterministic offline model: no network, same answer every time.

It drives a registry agent the way a real model would: on a user turn it calls
the tool the agent's offline plan picks for the input (a real function call the
SDK executes), then answers from the tool output. It streams its answer word by
word (optionally with a per-word delay, HARNESS_OFFLINE_DELAY_MS, to imitate a
slow model), reports token usage, and records a generation span.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections.abc import AsyncIterator
from typing import Any

from agents import Model, ModelSettings, ModelTracing, Usage, generation_span
from agents.items import ModelResponse, TResponseInputItem, TResponseOutputItem, TResponseStreamEvent
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call

from runs.registry import AgentSpec

OFFLINE_MODEL = "offline"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _tokens(value: Any) -> int:
    return max(1, math.ceil(len(json.dumps(value, default=str)) / 4))


class OfflineModel(Model):
    def __init__(self, spec: AgentSpec, *, delay_ms: int = 0) -> None:
        self.spec = spec
        self.delay = delay_ms / 1000

    def respond(self, items: list[Any], tool_names: set[str]) -> list[TResponseOutputItem]:
        """The whole decision: what this model answers to this input. Pure and deterministic."""
        user_texts = [
            _text_of(item.get("content")) for item in items if isinstance(item, dict) and item.get("role") == "user"
        ]
        user_text = user_texts[-1] if user_texts else ""
        turn = len(user_texts)
        last: Any = items[-1] if items else {}
        if isinstance(last, dict) and last.get("type") == "function_call_output":
            output = last.get("output")
            return [
                assistant_message(
                    self.spec.offline_reply(
                        user_text, _text_of(output) if not isinstance(output, str) else output, turn
                    ),
                    item_id=f"msg_{turn}_a",
                )
            ]
        plan = self.spec.offline_plan(user_text)
        if plan is not None and plan.name in tool_names:
            digest = hashlib.sha256(f"{turn}:{plan.name}:{user_text}".encode()).hexdigest()[:16]
            return [function_call(plan.name, plan.arguments, call_id=f"call_{turn}_{digest}")]
        return [assistant_message(self.spec.offline_reply(user_text, None, turn), item_id=f"msg_{turn}_a")]

    def _step(self, system_instructions: str | None, input: Any, tools: list[Any]) -> ModelStep:
        items = [{"role": "user", "content": input}] if isinstance(input, str) else list(input)
        output = self.respond(items, {getattr(tool, "name", "") for tool in tools})
        input_tokens = _tokens([system_instructions, items])
        output_tokens = _tokens([item.model_dump() for item in output])
        usage = Usage(
            requests=1,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=input_tokens + output_tokens,
        )
        return ModelStep(output=output, usage=usage, response_id=f"resp_offline_{len(items)}")

    def _span(self, step: ModelStep, input: Any, tracing: ModelTracing) -> Any:
        include = tracing.include_data()
        return generation_span(
            model=OFFLINE_MODEL,
            model_config={"agent": self.spec.name},
            input=([{"role": "user", "content": input}] if isinstance(input, str) else list(input))
            if include
            else None,
            output=[item.model_dump() for item in step.output] if include else None,
            usage={"input_tokens": step.usage.input_tokens, "output_tokens": step.usage.output_tokens},
            disabled=tracing.is_disabled(),
        )

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Any],
        output_schema: Any,
        handoffs: list[Any],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        prompt: Any = None,
    ) -> ModelResponse:
        step = self._step(system_instructions, input, tools)
        with self._span(step, input, tracing):
            return await ScriptedModel([step]).get_response(
                system_instructions,
                input,
                model_settings,
                tools,
                output_schema,
                handoffs,
                ModelTracing.DISABLED,
                previous_response_id=None,
                conversation_id=None,
                prompt=None,
            )

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Any],
        output_schema: Any,
        handoffs: list[Any],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        prompt: Any = None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        step = self._step(system_instructions, input, tools)
        with self._span(step, input, tracing):
            events = ScriptedModel([step]).stream_response(
                system_instructions,
                input,
                model_settings,
                tools,
                output_schema,
                handoffs,
                ModelTracing.DISABLED,
                previous_response_id=None,
                conversation_id=None,
                prompt=None,
            )
            async for event in events:
                if event.type != "response.output_text.delta":
                    yield event
                    continue
                # One delta per word, like a real model streams tokens.
                words = event.delta.split(" ")
                for index, word in enumerate(words):
                    if self.delay:
                        await asyncio.sleep(self.delay)
                    chunk = word if index == len(words) - 1 else word + " "
                    yield event.model_copy(update={"delta": chunk})
