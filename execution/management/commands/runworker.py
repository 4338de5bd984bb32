"""The background worker: django-q2's qcluster, with the Agents SDK loaded first.

Importing the SDK costs seconds of CPU, and a first run pays again for building
its schemas. Doing both once in the cluster's parent means every worker process
it forks (and re-forks on recycle) starts warm, so no run waits for them.
"""

from __future__ import annotations

from typing import Any

from django_q.management.commands.qcluster import Command as QclusterCommand


class Command(QclusterCommand):
    help = "Run the background worker (django-q2 cluster) that executes runs and scheduled jobs."

    def handle(self, *args: Any, **options: Any) -> None:
        from execution.executor import warm_up

        warm_up()
        super().handle(*args, **options)
