from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from runs.services import run_reap


class Command(BaseCommand):
    help = "Retry or fail runs whose worker stopped responding, and re-enqueue queued runs whose task was lost."

    def handle(self, *args: Any, **options: Any) -> None:
        report = run_reap()
        self.stdout.write(
            f"requeued {len(report.requeued)}, failed {len(report.failed)}, re-enqueued {len(report.reenqueued)}"
        )
        for label, ids in (
            ("requeued", report.requeued),
            ("failed", report.failed),
            ("re-enqueued", report.reenqueued),
        ):
            for run_id in ids:
                self.stdout.write(f"  {label}: {run_id}")
