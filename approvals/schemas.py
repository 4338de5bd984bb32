"""The API's shapes of approvals (also part of a run: RunOut.pending_approvals)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from ninja import Field, Schema
from pydantic import JsonValue

ApprovalStatus = Literal["pending", "approved", "rejected", "expired", "cancelled"]


class ApprovalOut(Schema):
    id: str
    call_id: str = Field(description="The tool call's id: what POST /api/runs/{id}/approvals decides.")
    tool: str
    arguments: JsonValue = Field(description="The call's arguments as the model sent them (long texts clipped).")
    status: ApprovalStatus
    requested_at: datetime
    expires_at: datetime = Field(description="Undecided by then, the run fails (HARNESS_APPROVAL_TIMEOUT_SECONDS).")
    decided_at: datetime | None
    decided_by: str | None = Field(description="Who decided: an API key, an operator, or the expiry.")
    message: str = Field(description="The decision's message; a rejection's is what the model reads.")

    @staticmethod
    def resolve_decided_by(obj: object) -> str | None:
        return getattr(obj, "decided_by_label", "") or None
