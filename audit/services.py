"""The one function that writes the audit log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from audit.models import AuditLog
from common.sql import insert_rows
from harness_site.redaction import redact_data


@dataclass(frozen=True)
class Actor:
    """Who did it: kept apart from what it was done to."""

    type: str
    id: str = ""
    label: str = ""

    @classmethod
    def for_user(cls, user: Any) -> Actor:
        return cls(AuditLog.ActorType.USER, str(user.pk), user.get_username())

    @classmethod
    def for_api_key(cls, api_key: Any) -> Actor:
        return cls(AuditLog.ActorType.API_KEY, api_key.pk, f"{api_key.user.get_username()} ({api_key.prefix}…)")

    @classmethod
    def worker(cls, worker_id: str) -> Actor:
        return cls(AuditLog.ActorType.WORKER, worker_id[:64], "worker")

    @classmethod
    def system(cls, label: str) -> Actor:
        return cls(AuditLog.ActorType.SYSTEM, "", label)


def audit_record(
    *,
    action: str,
    actor: Actor,
    target_type: str,
    target_id: str,
    run_id: str = "",
    data: dict[str, Any] | None = None,
) -> None:
    """Append one audit row. Call it inside the transaction of the change it records."""
    insert_rows(
        AuditLog,
        [
            {
                "created_at": timezone.now(),
                "action": action,
                "actor_type": actor.type,
                "actor_id": actor.id,
                "actor_label": actor.label[:150],
                "target_type": target_type,
                "target_id": target_id,
                "run_id": run_id,
                "data": redact_data(data or {}),
            }
        ],
    )
