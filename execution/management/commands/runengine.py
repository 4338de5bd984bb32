"""One run-engine process: up to HARNESS_WORKER_CONCURRENCY runs at once on one event loop."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

# Registers the agents.E001-E003 checks, run before this command starts: a broken
# HARNESS_AGENT_MODULES stops it with the reason.
import execution.catalog  # noqa: F401


class Command(BaseCommand):
    help = "Run one worker process of the run engine (manage.py runworker starts these for you)."

    def handle(self, *args: Any, **options: Any) -> None:
        from django.conf import settings

        from common.processes import gc_tune
        from execution.engine import serve_forever
        from execution.executor import warm_up
        from harness_site.telemetry import telemetry_setup, telemetry_shutdown

        telemetry_setup("worker")

        # Importing the SDK and building a first run's schemas cost seconds of CPU: pay
        # them before taking runs, so no run waits for them.
        warm_up()
        gc_tune(settings.HARNESS_GC_THRESHOLD)  # after startup: what it made is never scanned again
        try:
            serve_forever()
        finally:
            telemetry_shutdown()  # exports what is still batched
