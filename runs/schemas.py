from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from ninja import Field, Schema
from pydantic import JsonValue, field_validator

from approvals.schemas import ApprovalOut
from common.text import SafeStr
from harness.agents import OfflineScript, ScriptError

# Some text that is not blank, with no NUL or lone surrogate (common.text.SafeStr).
INPUT_PATTERN = "^[^\\x00]*[^\\x00\\s][^\\x00]*$"


class RunIn(Schema):
    input: SafeStr = Field(
        description="The user's message to the agent: some non-blank text, at most HARNESS_MAX_INPUT_CHARS (else 413).",
        json_schema_extra={"pattern": INPUT_PATTERN, "maxLength": settings.HARNESS_MAX_INPUT_CHARS},
    )
    agent: SafeStr = Field(
        "assistant",
        description="An agent the workers run; GET /api/agents lists them (else 422, naming the valid ones).",
        max_length=64,
    )
    model: SafeStr | None = Field(None, description="A model name; defaults to HARNESS_MODEL. 'offline' needs no key.")
    session_id: SafeStr | None = Field(None, description="Continue this session's conversation.")
    files: list[SafeStr] = Field(
        default_factory=list,
        description="Artifact ids (from your earlier runs) to place under inputs/ in a sandbox agent's workspace.",
        max_length=20,
    )
    max_cost_usd: Decimal | None = Field(
        None,
        ge=0,
        max_digits=14,
        decimal_places=6,
        description="Stop the run once its model calls have cost this much (USD); clamped by the server's maximum.",
    )
    max_tokens: int | None = Field(None, ge=1, description="Stop the run once it has used this many tokens.")
    max_turns: int | None = Field(None, ge=1, description="The most model turns the agent may take.")
    max_sandbox_seconds: float | None = Field(
        None, gt=0, description="Stop the run once its sandbox has been up this long (sandbox agents)."
    )

    def requested_limits(self) -> dict[str, object]:
        return {
            "max_cost_usd": self.max_cost_usd,
            "max_tokens": self.max_tokens,
            "max_turns": self.max_turns,
            "max_sandbox_seconds": self.max_sandbox_seconds,
        }

    @field_validator("input")
    @classmethod
    def input_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("input must not be empty")
        return value

    offline_script: dict[str, JsonValue] | None = Field(
        None,
        description='Model "offline" only: how the offline model drives the agent, '
        '{"steps": [{"tool": "name", "arguments": {...}}], "answer": "text or JSON"}; the answer may use '
        "{input}, {output} (the last tool output), {instructions} and {agent}. "
        "Without it the agent's own declared script (if any) is used.",
    )

    @field_validator("offline_script")
    @classmethod
    def offline_script_shape(cls, value: dict[str, JsonValue] | None) -> dict[str, JsonValue] | None:
        if value is not None:
            if "{instructions}" in json.dumps(value):
                # The agent's system prompt is the operator's, not the client's to read back.
                raise ValueError("{instructions} is only for scripts declared with the agent")
            try:
                OfflineScript.from_data(value)
            except ScriptError as exc:
                # The field is named by the error's location: "offline_script: steps must be a list".
                raise ValueError(str(exc).removeprefix("offline_script").lstrip(".: ")) from None
        return value

    @field_validator("model")
    @classmethod
    def model_allowed(cls, value: str | None) -> str | None:
        if value is not None and value not in settings.HARNESS_ALLOWED_MODELS:
            raise ValueError(
                f"model {value!r} is not allowed; allowed models: {', '.join(settings.HARNESS_ALLOWED_MODELS)}"
            )
        return value

    @property
    def model_or_default(self) -> str:
        return self.model or settings.HARNESS_MODEL

    @field_validator("files")
    @classmethod
    def files_shape(cls, value: list[str]) -> list[str]:
        for artifact_id in value:
            if not artifact_id.startswith("art_") or len(artifact_id) > 64:
                raise ValueError(f"{artifact_id!r} is not an artifact id (art_...)")
        if len(set(value)) != len(value):
            raise ValueError("an artifact is listed twice")
        return value

    @field_validator("session_id")
    @classmethod
    def session_id_shape(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("sess_") or len(value) > 64):
            raise ValueError("session_id must be a session id from an earlier run (sess_...)")
        return value


class UsageOut(Schema):
    requests: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0


class LimitsOut(Schema):
    max_cost_usd: str | None = Field(None, description="USD, as a decimal string; null: no cost limit.")
    max_tokens: int | None = None
    max_turns: int | None = None
    max_sandbox_seconds: float | None = None


class RunOut(Schema):
    id: str
    status: str = Field(
        description="queued, running, awaiting_approval (a tool call waits for a person: see pending_approvals), "
        "succeeded, failed or cancelled."
    )
    session_id: str
    agent: str
    model: str
    input: str
    files: list[str]
    output: str | None
    output_json: JsonValue = Field(
        None, description="An agent with a structured output type: its output as JSON (else null)."
    )
    error: str | None
    usage: UsageOut
    cost_usd: str | None = Field(
        description="What the run's model calls cost in USD (a decimal string); null while running or when unpriced."
    )
    unpriced: bool = Field(description="A model the price tables do not know was used: the cost is unknown, not $0.")
    limits: LimitsOut
    trace_id: str | None = Field(description="The run's OpenTelemetry trace id, when telemetry is on.")
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    pending_approvals: list[ApprovalOut] = Field(
        description="While awaiting_approval: the tool calls waiting for a decision "
        "(POST /api/runs/{id}/approvals with one's call_id); empty otherwise."
    )

    @staticmethod
    def resolve_pending_approvals(obj: object) -> list[object]:
        if getattr(obj, "status", "") != "awaiting_approval":
            return []
        attached = getattr(obj, "pending_approvals_attached", None)
        if attached is not None:  # approvals.selectors.attach_pending (one query per page)
            return list(attached)
        from approvals.selectors import pending_for_run

        return list(pending_for_run(str(getattr(obj, "pk", ""))))

    @staticmethod
    def resolve_files(obj: object) -> list[str]:
        return list(getattr(obj, "input_files", None) or [])

    @staticmethod
    def resolve_error(obj: object) -> str | None:
        return getattr(obj, "error", "") or None

    @staticmethod
    def resolve_usage(obj: object) -> dict[str, int]:
        return getattr(obj, "usage", None) or {}

    @staticmethod
    def resolve_cost_usd(obj: object) -> str | None:
        cost = getattr(obj, "cost_usd", None)
        return None if cost is None else str(cost)

    @staticmethod
    def resolve_limits(obj: object) -> dict[str, object]:
        return getattr(obj, "limits", None) or {}

    @staticmethod
    def resolve_trace_id(obj: object) -> str | None:
        return getattr(obj, "otel_trace_id", "") or None


class RunPage(Schema):
    items: list[RunOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next (older) page; null on the last page.")


class AgentOut(Schema):
    name: str
    description: str
    tools: list[str]
    sandbox: bool = Field(description="Runs commands in an isolated sandbox; accepts files.")
    models: list[str] | None = Field(description="The models it runs on; null: any of `models`.")
    version: str = Field(description="A digest of its declaration and code, as the workers published it.")
    spec: dict[str, JsonValue] = Field(
        description="What the workers published: module, handoffs, output_type, guardrails, mcp_servers, "
        "approvals, maxima, timeout_seconds, ..."
    )


class WorkerRegistryOut(Schema):
    worker_id: str
    registry_version: str


class AgentsOut(Schema):
    agents: list[AgentOut]
    registry_version: str = Field(description="A digest of the published agents' versions.")
    workers: list[WorkerRegistryOut] = Field(
        description="Live workers and the registry each runs: during a deploy some may run another one."
    )
    consistent: bool = Field(
        description="At least one worker is live and every live worker runs the published registry."
    )
    models: list[str]
    default_model: str
    openai_configured: bool = Field(description="False: OPENAI_API_KEY is not set, so only the offline model runs.")


class FieldError(Schema):
    type: str = Field(description="The kind of problem, e.g. missing, string_type, value_error.")
    loc: list[str | int] = Field(description='Where: ["body", "payload", "input"], ["query", "cursor"], ...')
    msg: str


class ErrorOut(Schema):
    detail: str = Field(description="What went wrong, for people.")
    errors: list[FieldError] | None = Field(
        None, description="On a 422 for invalid input: each invalid field, for programs."
    )


class BudgetErrorOut(Schema):
    detail: str
    limit: str = Field(description="The limit that refused the run, e.g. daily_limit_usd or max_concurrent_runs.")
    limit_usd: str | None = None
    spent_usd: str | None = Field(None, description="The spend so far in the limit's period.")
    resets_at: str | None = Field(None, description="When the limit's period ends (UTC).")
    max_concurrent_runs: int | None = None
    active_runs: int | None = None


def model_unavailable(model: str) -> str | None:
    """Why runs on `model` cannot work on this server now, or None: every model but the offline
    one (and eval replays) needs OPENAI_API_KEY."""
    if model == "offline" or model.startswith("replay:") or settings.OPENAI_API_KEY:
        return None
    return (
        f'model {model!r} needs OPENAI_API_KEY, which is not set on this server; set it, or run with "model": "offline"'
    )
