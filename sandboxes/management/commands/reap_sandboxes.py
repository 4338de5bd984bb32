from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from sandboxes.services import sandboxes_reap


class Command(BaseCommand):
    help = (
        "Destroy sandboxes no worker will clean up (past their time budget, their run over or retried) "
        "and provider sessions (local workspaces, E2B sandboxes) that no live sandbox row accounts for."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        report = sandboxes_reap()
        self.stdout.write(
            f"cleaned {len(report.cleaned)}, cleanup failed {len(report.failed)}, "
            f"orphan workspaces {len(report.orphan_workspaces)}, orphan E2B sandboxes {len(report.orphan_remote)}"
        )
        for label, items in (
            ("cleaned", report.cleaned),
            ("cleanup failed", report.failed),
            ("orphan workspace", report.orphan_workspaces),
            ("orphan E2B sandbox", report.orphan_remote),
            ("error", report.errors),
        ):
            for item in items:
                self.stdout.write(f"  {label}: {item}")
