"""The background worker: django-q2's qcluster, with the Agents SDK loaded first.

Importing the SDK costs seconds of CPU. Loading it once in the cluster's parent
means every worker process it forks (and re-forks on recycle) starts with it,
so no run waits for an import.
"""

from __future__ import annotations

from typing import Any

from django_q.management.commands.qcluster import Command as QclusterCommand


class Command(QclusterCommand):
    help = "Run the background worker (django-q2 cluster) that executes runs and scheduled jobs."

    def handle(self, *args: Any, **options: Any) -> None:
        import runs.executor  # noqa: F401  (warm import, inherited by forked workers)

        super().handle(*args, **options)
