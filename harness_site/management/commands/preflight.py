"""manage.py preflight: the production checklist. Each check prints PASS or FAIL with a hint;
the command exits 1 when any fails (deploy/azure/deploy.sh runs it before shifting traffic)."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from harness_site.env import env_bool
from harness_site.preflight import preflight


class Command(BaseCommand):
    help = "Check this deployment against the production checklist; exit 1 when a check fails."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--backups-acknowledged",
            action="store_true",
            default=env_bool("HARNESS_BACKUPS_ACKNOWLEDGED", False),
            help="Confirm the database's backups (Neon point-in-time restore) were checked by hand.",
        )

    def handle(self, *args: Any, backups_acknowledged: bool, **options: Any) -> None:
        failed = 0
        total = 0
        for title, checks in preflight(backups_acknowledged=backups_acknowledged):
            self.stdout.write(title)
            for check in checks:
                total += 1
                failed += not check.ok
                mark = self.style.SUCCESS("PASS") if check.ok else self.style.ERROR("FAIL")
                self.stdout.write(f"  {mark}  {check.name}: {check.detail}")
                if check.hint:
                    self.stdout.write(f"        hint: {check.hint}")
        if failed:
            self.stdout.write(self.style.ERROR(f"\n{failed} of {total} checks failed: not ready for production."))
            sys.exit(1)
        self.stdout.write(self.style.SUCCESS(f"\nAll {total} checks passed."))
