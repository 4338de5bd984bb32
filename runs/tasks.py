"""django-q2 task entry points: take ids, call a service, safe to run twice."""

from __future__ import annotations


def reap_runs() -> dict[str, list[str]]:
    from runs.services import run_reap

    report = run_reap()
    return {"requeued": report.requeued, "failed": report.failed, "reenqueued": report.reenqueued}
