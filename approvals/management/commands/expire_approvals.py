from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from approvals.services import approvals_expire


class Command(BaseCommand):
    help = (
        "Fail the runs whose tool calls waited longer than HARNESS_APPROVAL_TIMEOUT_SECONDS for a decision "
        "(the schedule does it every HARNESS_REAPER_INTERVAL_MINUTES), and drop what ended runs left paused."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        report = approvals_expire()
        self.stdout.write(f"expired {len(report.failed)}, closed {len(report.closed)}")
        for run_id in report.failed:
            self.stdout.write(f"  failed: {run_id}")
        for run_id in report.closed:
            self.stdout.write(f"  closed: {run_id}")
