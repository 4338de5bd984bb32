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
import re
from collections.abc import AsyncIterator
from typing import Any

from agents import Model, ModelSettings, ModelTracing, Usage, generation_span
from agents.items import ModelResponse, TResponseInputItem, TResponseOutputItem, TResponseStreamEvent
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call
from agents.testing.model import ModelCall
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseCreatedEvent,
    ResponseCustomToolCall,
    ResponseOutputItemDoneEvent,
    ResponseUsage,
)
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

from execution.catalog import CatalogAgent
from harness.agents import OfflineScript

OFFLINE_MODEL = "offline"
# The sandbox shell tools' answer while a command is still going (agents.sandbox shell_tool).
_STILL_RUNNING = re.compile(r"^Process running with session ID (\d+)$", re.MULTILINE)
POLL_YIELD_MS = 30_000
_TOOL_OUTPUT_TYPES = {"function_call_output", "custom_tool_call_output"}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _tokens(value: Any) -> int:
    return max(1, math.ceil(len(json.dumps(value, default=str)) / 4))


def _custom_call_events(output: list[Any], usage: Usage, response_id: str) -> list[TResponseStreamEvent]:
    response = Response(
        id=response_id,
        created_at=0,
        model=OFFLINE_MODEL,
        object="response",
        output=output,
        tool_choice="auto",
        tools=[],
        top_p=None,
        parallel_tool_calls=False,
        status="completed",
        usage=ResponseUsage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            total_tokens=usage.total_tokens,
            input_tokens_details=InputTokensDetails(cached_tokens=0, cache_write_tokens=0),
            output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
        ),
    )
    started = response.model_copy(update={"output": [], "status": "in_progress"})
    events: list[TResponseStreamEvent] = [
        ResponseCreatedEvent(type="response.created", response=started, sequence_number=0)
    ]
    for index, item in enumerate(output):
        events.append(
            ResponseOutputItemDoneEvent(
                type="response.output_item.done", item=item, output_index=index, sequence_number=len(events)
            )
        )
    events.append(ResponseCompletedEvent(type="response.completed", response=response, sequence_number=len(events)))
    return events


def model_step(output: list[Any], usage: Usage, response_id: str) -> ModelStep:
    """A scripted step for these output items (custom tool calls get their stream built here)."""
    if any(isinstance(item, ResponseCustomToolCall) for item in output):
        # The scripted model streams only function calls and messages on its own.
        return ModelStep.stream(
            _custom_call_events(output, usage, response_id), output=output, usage=usage, response_id=response_id
        )
    return ModelStep(output=output, usage=usage, response_id=response_id)


class _OneCall(ScriptedModel):
    """The SDK's scripted model for the one call it is made for, keeping no record of that call.

    ScriptedModel records every call for a test's assertions: it deep-copies the call's input (the
    whole conversation so far, so the copy grows with each turn) and its settings twice. A StepModel
    makes one per call and drops it after, so the record is never read; this one skips it.
    """

    def _record_call(self, **call: Any) -> ModelCall:
        return ModelCall(**call)


class StepModel(Model):
    """A model that decides each call with `_step` and streams it like the real service would."""

    model_name = OFFLINE_MODEL
    delay = 0.0
    # The tool names of the current call's handoffs (transfer_to_<agent>), set per call.
    handoff_names: tuple[str, ...] = ()

    def _step(self, system_instructions: str | None, input: Any, tools: list[Any]) -> ModelStep:
        raise NotImplementedError

    def _span_config(self) -> dict[str, Any]:
        return {}

    def _span(self, step: ModelStep, input: Any, tracing: ModelTracing) -> Any:
        include = tracing.include_data()
        return generation_span(
            model=self.model_name,
            model_config=self._span_config(),
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
        self.handoff_names = tuple(getattr(handoff, "tool_name", "") for handoff in handoffs)
        step = self._step(system_instructions, input, tools)
        with self._span(step, input, tracing):
            return await _OneCall([step]).get_response(
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
        self.handoff_names = tuple(getattr(handoff, "tool_name", "") for handoff in handoffs)
        step = self._step(system_instructions, input, tools)
        with self._span(step, input, tracing):
            events = _OneCall([step]).stream_response(
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


class OfflineScriptError(Exception):
    """An offline script asks for a tool the agent does not offer at that point."""


class OfflineModel(StepModel):
    """Drives `spec` from its offline plan, its declared script, or `script` (a run's own)."""

    def __init__(self, spec: CatalogAgent, *, delay_ms: int = 0, script: OfflineScript | None = None) -> None:
        self.spec = spec
        self.delay = delay_ms / 1000
        self.script = script
        self.instructions = ""

    def _span_config(self) -> dict[str, Any]:
        return {"agent": self.spec.name}

    @property
    def scripted(self) -> bool:
        """Following a script (a run's, or an entry's): a step it cannot take is an error."""
        return self.script is not None or self.spec.facts.get("kind") == "entry"

    def respond(self, items: list[Any], tool_names: set[str]) -> list[TResponseOutputItem]:
        """The whole decision: what this model answers to this input. Pure and deterministic.

        A user turn runs the spec's offline plan one tool call per model call, then answers
        from the last tool output.
        """
        user_indexes = [
            index for index, item in enumerate(items) if isinstance(item, dict) and item.get("role") == "user"
        ]
        user_text = _text_of(items[user_indexes[-1]].get("content")) if user_indexes else ""
        turn = len(user_indexes)
        since_user = items[user_indexes[-1] + 1 :] if user_indexes else items
        outputs = [
            item.get("output")
            for item in since_user
            if isinstance(item, dict) and item.get("type") in _TOOL_OUTPUT_TYPES
        ]
        last_output = None
        if outputs:
            last_output = outputs[-1] if isinstance(outputs[-1], str) else _text_of(outputs[-1])
        running = _STILL_RUNNING.search(last_output or "")
        if running and "write_stdin" in tool_names:
            # A command outlasted its yield time: wait for it (poll its session) before the
            # next step, so each block ends before the next starts.
            arguments = {"session_id": int(running.group(1)), "chars": "", "yield_time_ms": POLL_YIELD_MS}
            return [function_call("write_stdin", arguments, call_id=f"call_{turn}_poll_{len(outputs)}")]
        steps = self.spec.offline_steps(user_text, self.script)
        done = sum(1 for output in outputs if not _STILL_RUNNING.search(_text_of(output)))
        if done < len(steps) and steps[done].name not in tool_names and self.scripted:
            offered = ", ".join(sorted(tool_names)) or "none"
            raise OfflineScriptError(
                f"offline script step {done + 1} calls {steps[done].name!r}, which the agent does not offer "
                f"at that point (it offers: {offered})"
            )
        if done < len(steps) and steps[done].name in tool_names:
            step, index = steps[done], done
            digest = hashlib.sha256(f"{turn}:{index}:{step.name}:{user_text}".encode()).hexdigest()[:16]
            call_id = f"call_{turn}_{index}_{digest}"
            if step.raw_input is not None:
                return [
                    ResponseCustomToolCall(
                        type="custom_tool_call",
                        call_id=call_id,
                        name=step.name,
                        input=step.raw_input,
                        id=f"ctc_{turn}_{index}",
                    )
                ]
            return [function_call(step.name, step.arguments, call_id=call_id)]
        reply = self.spec.offline_reply(
            user_text, last_output, turn, instructions=self.instructions, script=self.script
        )
        return [assistant_message(reply, item_id=f"msg_{turn}_a")]

    def _step(self, system_instructions: str | None, input: Any, tools: list[Any]) -> ModelStep:
        items = [{"role": "user", "content": input}] if isinstance(input, str) else list(input)
        self.instructions = system_instructions or ""
        offered = {getattr(tool, "name", "") for tool in tools} | set(self.handoff_names)
        output = self.respond(items, offered)
        input_tokens = _tokens([system_instructions, items])
        output_tokens = _tokens([item.model_dump() for item in output])
        usage = Usage(
            requests=1,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=input_tokens + output_tokens,
        )
        return model_step(output, usage, f"resp_offline_{len(items)}")
