"""`migrate` on the direct database endpoint when DIRECT_DATABASE_URL is set.

Neon (like any pgbouncer in transaction mode) serves the app through a pooled
endpoint that cannot run migrations safely; the direct endpoint can. The
`direct` alias points at the same database, so the migration records land in
the same django_migrations table the app reads.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.commands.migrate import Command as MigrateCommand


class Command(MigrateCommand):
    def handle(self, *args: Any, **options: Any) -> Any:
        if "direct" in settings.DATABASES and options.get("database") in (None, "default"):
            options["database"] = "direct"
            if options.get("verbosity", 1) >= 1:
                self.stdout.write("Migrating through DIRECT_DATABASE_URL.")
        return super().handle(*args, **options)
