"""django-q2 task entry points (safe to run twice)."""

from __future__ import annotations


def expire_approvals() -> dict[str, list[str]]:
    from approvals.services import approvals_expire

    report = approvals_expire()
    return {"failed": report.failed, "closed": report.closed}
