"""Declaring agents for the harness: `AgentEntry`, the offline script that can drive one with
no model key, and the context every run gives its agent.

A module named in HARNESS_AGENT_MODULES (comma-separated dotted paths) declares

    AGENTS = [AgentEntry(name="support", description="...", agent=triage), ...]

Each entry holds an OpenAI Agents SDK `Agent` (or `SandboxAgent`) object, or a factory that
builds one for a model name (a factory builds a fresh agent per run: use one when the agent
holds per-run resources such as MCP servers), and the harness's policy for it. The run
engine's workers import these modules; the web process never does (it reads what the
workers publish). Nothing here imports the SDK.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# What a script may hold (a run request carries one, so it is bounded), and the longest answer
# it renders, placeholders filled in: the Django settings HARNESS_OFFLINE_SCRIPT_MAX_STEPS,
# HARNESS_OFFLINE_SCRIPT_MAX_CHARS and HARNESS_MAX_STORED_CHARS when they are configured.
SCRIPT_MAX_STEPS = 50
SCRIPT_MAX_CHARS = 64_000
ANSWER_MAX_CHARS = 200_000


def _limit(name: str, default: int) -> int:
    try:
        from django.conf import settings

        return int(getattr(settings, name, default)) if settings.configured else default
    except ImportError:
        return default


# Whether a tool call must wait for a person: always (True), never (False), or when a
# predicate on the call's arguments says so (a predicate that raises asks a person).
ApprovalRule = bool | Callable[[dict[str, Any]], bool]


class ScriptError(ValueError):
    """An offline script that cannot drive a run (said in the words of its field)."""


@dataclass(frozen=True)
class ToolStep:
    """One model turn of an offline script: call `tool` (a function tool, an MCP tool or a
    handoff's `transfer_to_<agent>`) with `arguments`; a free-form tool takes `raw_input`."""

    tool: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    raw_input: str | None = None


@dataclass(frozen=True)
class OfflineScript:
    """How the offline model drives an agent: the tool calls, in order, one per model turn
    (across handoffs), then the answer.

    `answer` is text, or a JSON value for an agent with an `output_type`. In text (and in
    the strings of a JSON answer) `{input}` is the user's message, `{output}` the last tool
    output, `{instructions}` the instructions the current agent received and `{agent}` its name.
    """

    steps: tuple[ToolStep, ...] = ()
    answer: Any = "{output}"

    @classmethod
    def from_data(cls, data: Any) -> OfflineScript:
        """A script from JSON (`{"steps": [{"tool": ..., "arguments": {...}}], "answer": ...}`);
        ScriptError says what is wrong."""
        if not isinstance(data, Mapping):
            raise ScriptError("offline_script must be an object with steps and answer")
        unknown = sorted(set(data) - {"steps", "answer"})
        if unknown:
            raise ScriptError(f"offline_script: unknown field(s) {', '.join(unknown)}; it takes steps and answer")
        max_chars = _limit("HARNESS_OFFLINE_SCRIPT_MAX_CHARS", SCRIPT_MAX_CHARS)
        if len(json.dumps(data, default=str)) > max_chars:
            raise ScriptError(f"offline_script is over {max_chars} characters (HARNESS_OFFLINE_SCRIPT_MAX_CHARS)")
        raw_steps = data.get("steps") or []
        if not isinstance(raw_steps, list):
            raise ScriptError("offline_script.steps must be a list")
        max_steps = _limit("HARNESS_OFFLINE_SCRIPT_MAX_STEPS", SCRIPT_MAX_STEPS)
        if len(raw_steps) > max_steps:
            raise ScriptError(f"offline_script.steps: at most {max_steps} steps (HARNESS_OFFLINE_SCRIPT_MAX_STEPS)")
        steps = []
        for index, step in enumerate(raw_steps):
            where = f"offline_script.steps[{index}]"
            if not isinstance(step, Mapping) or not isinstance(step.get("tool"), str) or not step["tool"].strip():
                raise ScriptError(f"{where} must be an object with a tool name")
            extra = sorted(set(step) - {"tool", "arguments", "raw_input"})
            if extra:
                raise ScriptError(f"{where}: unknown field(s) {', '.join(extra)}")
            arguments = step.get("arguments")
            arguments = {} if arguments is None else arguments
            if not isinstance(arguments, Mapping):
                raise ScriptError(f"{where}.arguments must be an object")
            raw_input = step.get("raw_input")
            if raw_input is not None and not isinstance(raw_input, str):
                raise ScriptError(f"{where}.raw_input must be text")
            steps.append(ToolStep(step["tool"], dict(arguments), raw_input))
        return cls(steps=tuple(steps), answer=data.get("answer", "{output}"))

    def to_data(self) -> dict[str, Any]:
        return {
            "steps": [
                {"tool": step.tool, "arguments": dict(step.arguments)}
                | ({"raw_input": step.raw_input} if step.raw_input is not None else {})
                for step in self.steps
            ],
            "answer": self.answer,
        }

    def render_answer(self, *, input: str, output: str | None, instructions: str, agent: str) -> str:
        """The answer as the model's text (a JSON answer as JSON)."""
        values = {"input": input, "output": output or "", "instructions": instructions, "agent": agent}

        def fill(value: Any) -> Any:
            if isinstance(value, str):
                return re.sub(r"\{(input|output|instructions|agent)\}", lambda match: values[match.group(1)], value)
            if isinstance(value, list):
                return [fill(item) for item in value]
            if isinstance(value, Mapping):
                return {key: fill(item) for key, item in value.items()}
            return value

        answer = fill(self.answer)
        text = answer if isinstance(answer, str) else json.dumps(answer)
        # Placeholders may repeat a long input many times: the answer is bounded all the same.
        return text[: _limit("HARNESS_MAX_STORED_CHARS", ANSWER_MAX_CHARS)]


@dataclass(frozen=True)
class RunContext:
    """The context of every run (the SDK's `RunContextWrapper.context`): dynamic instructions,
    tools and guardrails read it as `ctx.context`."""

    run_id: str
    session_id: str
    agent: str
    model: str
    principal_id: int | None = None
    attempt: int = 1


@dataclass(frozen=True)
class AgentEntry:
    """One agent the harness may run by `name`.

    - `agent`: an SDK `Agent` or `SandboxAgent` (shared by every run), or `factory`: a
      callable that takes the run's model name and returns one (called once per run).
    - `models`: the models a run of it may ask for (None: any of HARNESS_ALLOWED_MODELS).
    - `approvals`: tool name -> ApprovalRule; those calls pause the run for a person.
    - `max_cost_usd`, `max_tokens`, `max_turns`, `max_sandbox_seconds`: the most one run may
      use (what a request asks is clamped to these; the server's maxima still apply).
    - `timeout_seconds`: this agent's run timeout (at most HARNESS_RUN_TIMEOUT_SECONDS).
    - `offline`: the script the offline model follows for this agent, or a callable taking
      the user's message and returning one (None: the offline model just answers).
    """

    name: str
    description: str
    agent: Any = None
    factory: Callable[[str], Any] | None = None
    models: tuple[str, ...] | None = None
    approvals: Mapping[str, ApprovalRule] = field(default_factory=dict)
    max_cost_usd: float | None = None
    max_tokens: int | None = None
    max_turns: int | None = None
    max_sandbox_seconds: float | None = None
    timeout_seconds: float | None = None
    offline: OfflineScript | Callable[[str], OfflineScript | None] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME.match(self.name):
            raise ValueError(f"agent name {self.name!r}: 1-64 of a-z, 0-9, _ and -, starting with a letter or digit")
        if not isinstance(self.description, str) or not self.description.strip():
            raise ValueError(f"agent {self.name!r}: a description is required")
        if (self.agent is None) == (self.factory is None):
            raise ValueError(f"agent {self.name!r}: give exactly one of agent= (an SDK Agent) or factory=")
        if self.factory is not None and not callable(self.factory):
            raise ValueError(f"agent {self.name!r}: factory must be callable (model name -> Agent)")
        if self.models is not None:
            if isinstance(self.models, str) or not all(isinstance(model, str) and model for model in self.models):
                raise ValueError(f"agent {self.name!r}: models must be a list of model names")
            object.__setattr__(self, "models", tuple(self.models))
        for key in ("max_cost_usd", "max_tokens", "max_turns", "max_sandbox_seconds", "timeout_seconds"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
                raise ValueError(f"agent {self.name!r}: {key} must be a positive number")
        for tool, rule in self.approvals.items():
            if not isinstance(rule, bool) and not callable(rule):
                raise ValueError(f"agent {self.name!r}: approvals[{tool!r}] must be True, False or a predicate")
        if self.offline is not None and not isinstance(self.offline, OfflineScript) and not callable(self.offline):
            raise ValueError(f"agent {self.name!r}: offline must be an OfflineScript or a callable returning one")

    @property
    def maxima(self) -> dict[str, Any]:
        keys = ("max_cost_usd", "max_tokens", "max_turns", "max_sandbox_seconds")
        return {key: getattr(self, key) for key in keys if getattr(self, key) is not None}

    def offline_script(self, text: str) -> OfflineScript | None:
        if self.offline is None or isinstance(self.offline, OfflineScript):
            return self.offline
        return self.offline(text)
