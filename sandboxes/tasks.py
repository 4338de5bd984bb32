"""django-q2 task entry points."""

from __future__ import annotations


def reap_sandboxes() -> dict[str, list[str]]:
    from sandboxes.services import sandboxes_reap

    report = sandboxes_reap()
    return {
        "cleaned": report.cleaned,
        "failed": report.failed,
        "orphan_workspaces": report.orphan_workspaces,
        "orphan_remote": report.orphan_remote,
        "errors": report.errors,
    }
