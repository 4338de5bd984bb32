"""Record a run's model calls (a cassette) and play them back through the SDK's model interface.

Every run records, for each model call, the shape of what the SDK asked (a digest of the
instructions, the tool names, the kinds of input items) and what the model answered (its
output items and usage). Replaying a cassette answers each call with the recorded output,
after checking that the call has the recorded shape: when the agent's prompt or tools have
changed, or the conversation took another path, the replay stops with
"replay diverged at step N" and says how. Tool outputs themselves may differ (ids, timings),
so they are not part of the shape: the tools really run again during a replay.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from agents import Model, ModelSettings, ModelTracing, Usage
from agents.items import ModelResponse, TResponseInputItem, TResponseStreamEvent
from agents.testing import ModelStep
from openai.types.responses import ResponseCompletedEvent, ResponseOutputItem
from pydantic import TypeAdapter

from execution.offline import StepModel, model_step

if TYPE_CHECKING:
    from execution.budget import RunMeter

_OUTPUT_ITEM: TypeAdapter[Any] = TypeAdapter(ResponseOutputItem)


class ReplayDiverged(Exception):
    """The agent no longer asks what the cassette recorded."""

    def __init__(self, step: int, why: str) -> None:
        super().__init__(f"replay diverged at step {step}: {why}")
        self.step = step
        self.why = why


def _items(input: str | list[Any]) -> list[Any]:
    return [{"role": "user", "content": input}] if isinstance(input, str) else list(input)


def _kind(item: Any) -> str:
    if not isinstance(item, dict):
        item = item.model_dump() if hasattr(item, "model_dump") else {}
    kind = item.get("type") or ("message" if "role" in item else "item")
    if kind == "message":
        return f"message:{item.get('role', '')}"
    if kind in ("function_call", "custom_tool_call"):
        return f"{kind}:{item.get('name', '')}"
    return str(kind)


_RUN_IDS = re.compile(r"\b(sbx|run|sess)_[0-9A-Z]{26}\b")


def _instructions_digest(text: str | None) -> str:
    """The prompt, without what differs between runs of the same agent: its sandbox's path,
    and the ids of its run, session and sandbox (dynamic instructions may name them)."""
    from django.conf import settings

    text = (text or "").replace(str(settings.HARNESS_SANDBOX_ROOT), "<sandboxes>")
    text = _RUN_IDS.sub(lambda match: f"{match.group(1)}_*", text)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def call_shape(system_instructions: str | None, input: str | list[Any], tools: list[Any]) -> dict[str, Any]:
    return {
        "instructions": _instructions_digest(system_instructions),
        "tools": sorted(str(getattr(tool, "name", "")) for tool in tools),
        "items": [_kind(item) for item in _items(input)],
        "user": hashlib.sha256(json.dumps(_user_texts(input)).encode()).hexdigest()[:16],
    }


def _user_texts(input: str | list[Any]) -> list[Any]:
    texts = []
    for item in _items(input):
        if isinstance(item, dict) and item.get("role") == "user":
            texts.append(item.get("content"))
    return texts


def _usage(usage: Any) -> dict[str, int]:
    return {
        "input_tokens": int(getattr(usage, "input_tokens", 0) or 0),
        "output_tokens": int(getattr(usage, "output_tokens", 0) or 0),
    }


class RecordingModel(Model):
    """Passes every call to the real model and keeps a cassette of them; with a meter,
    each call is first allowed by the run's budget and then priced."""

    def __init__(self, model: Model, meter: RunMeter | None = None) -> None:
        self.model = model
        self.meter = meter
        self.calls: list[dict[str, Any]] = []

    def _record(self, shape: dict[str, Any], output: list[Any], usage: Any) -> None:
        self.calls.append(
            {
                "shape": shape,
                "output": [item.model_dump(mode="json", exclude_none=True) for item in output],
                "usage": _usage(usage),
            }
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
        **kwargs: Any,
    ) -> ModelResponse:
        shape = call_shape(system_instructions, input, tools)
        if self.meter is not None:
            await self.meter.before_call()
        response = await self.model.get_response(
            system_instructions, input, model_settings, tools, output_schema, handoffs, tracing, **kwargs
        )
        self._record(shape, list(response.output), response.usage)
        if self.meter is not None:
            await self.meter.after_call(response.usage)
        return response

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Any],
        output_schema: Any,
        handoffs: list[Any],
        tracing: ModelTracing,
        **kwargs: Any,
    ) -> AsyncIterator[TResponseStreamEvent]:
        shape = call_shape(system_instructions, input, tools)
        if self.meter is not None:
            await self.meter.before_call()
        async for event in self.model.stream_response(
            system_instructions, input, model_settings, tools, output_schema, handoffs, tracing, **kwargs
        ):
            if isinstance(event, ResponseCompletedEvent):
                self._record(shape, list(event.response.output), event.response.usage)
                if self.meter is not None:
                    await self.meter.after_call(event.response.usage)
            yield event


class CassetteModel(StepModel):
    """Answers each call with the cassette's next recorded response, if the call still fits it."""

    model_name = "replay"

    def __init__(self, calls: list[dict[str, Any]]) -> None:
        self.calls = calls
        self.position = 0

    def _span_config(self) -> dict[str, Any]:
        return {"replay_step": self.position}

    def _step(self, system_instructions: str | None, input: Any, tools: list[Any]) -> ModelStep:
        step = self.position + 1
        if self.position >= len(self.calls):
            raise ReplayDiverged(
                step, f"the agent made a model call the cassette does not have ({len(self.calls)} recorded)"
            )
        recorded = self.calls[self.position]
        self.position += 1
        now = call_shape(system_instructions, input, tools)
        then = recorded["shape"]
        if now["instructions"] != then["instructions"]:
            raise ReplayDiverged(step, "the agent's instructions (prompt) changed since the recording")
        if now["tools"] != then["tools"]:
            added = sorted(set(now["tools"]) - set(then["tools"]))
            removed = sorted(set(then["tools"]) - set(now["tools"]))
            raise ReplayDiverged(
                step, f"the agent's tools changed (added {added or 'none'}, removed {removed or 'none'})"
            )
        if now.get("user") != then.get("user"):
            raise ReplayDiverged(step, "the user's input differs from the recording's")
        if now["items"] != then["items"]:
            raise ReplayDiverged(step, f"the model was asked {now['items']}, the recording was asked {then['items']}")
        output = [_OUTPUT_ITEM.validate_python(item) for item in recorded["output"]]
        usage = Usage(
            requests=1,
            input_tokens=recorded["usage"]["input_tokens"],
            output_tokens=recorded["usage"]["output_tokens"],
            total_tokens=recorded["usage"]["input_tokens"] + recorded["usage"]["output_tokens"],
        )
        return model_step(output, usage, f"resp_replay_{step}")

    @property
    def finished(self) -> bool:
        return self.position == len(self.calls)


def cassette_digest(calls: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(calls, sort_keys=True).encode()).hexdigest()[:16]
