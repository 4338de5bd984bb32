from __future__ import annotations

from datetime import datetime

from django.conf import settings
from ninja import Field, Schema
from pydantic import field_validator

from runs.registry import agent_names


class RunIn(Schema):
    input: str = Field(description="The user's message to the agent.")
    agent: str = Field("assistant", description="A registry agent name; GET /api/agents lists them.")
    model: str | None = Field(None, description="A model name; defaults to HARNESS_MODEL. 'offline' needs no key.")
    session_id: str | None = Field(None, description="Continue this session's conversation.")
    files: list[str] = Field(
        default_factory=list,
        description="Artifact ids (from your earlier runs) to place under inputs/ in a sandbox agent's workspace.",
        max_length=20,
    )

    @field_validator("input")
    @classmethod
    def input_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("input must not be empty")
        return value

    @field_validator("agent")
    @classmethod
    def agent_known(cls, value: str) -> str:
        names = agent_names()
        if value not in names:
            raise ValueError(f"unknown agent {value!r}; valid agents: {', '.join(names)}")
        return value

    @field_validator("model")
    @classmethod
    def model_allowed(cls, value: str | None) -> str | None:
        if value is not None and value not in settings.HARNESS_ALLOWED_MODELS:
            raise ValueError(
                f"model {value!r} is not allowed; allowed models: {', '.join(settings.HARNESS_ALLOWED_MODELS)}"
            )
        return value

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
    output_tokens: int = 0
    total_tokens: int = 0


class RunOut(Schema):
    id: str
    status: str
    session_id: str
    agent: str
    model: str
    input: str
    files: list[str]
    output: str | None
    error: str | None
    usage: UsageOut
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @staticmethod
    def resolve_files(obj: object) -> list[str]:
        return list(getattr(obj, "input_files", None) or [])

    @staticmethod
    def resolve_error(obj: object) -> str | None:
        return getattr(obj, "error", "") or None

    @staticmethod
    def resolve_usage(obj: object) -> dict[str, int]:
        return getattr(obj, "usage", None) or {}


class RunPage(Schema):
    items: list[RunOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next (older) page; null on the last page.")


class AgentOut(Schema):
    name: str
    description: str
    tools: list[str]
    sandbox: bool = Field(description="Runs commands in an isolated sandbox; accepts files.")


class AgentsOut(Schema):
    agents: list[AgentOut]
    models: list[str]
    default_model: str


class ErrorOut(Schema):
    detail: str
