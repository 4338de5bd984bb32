"""The background worker: HARNESS_WORKERS run-engine processes and the django-q2 cluster
that runs scheduled jobs (reaper, retention, nightly eval).

A child that dies is started again after a pause (its runs are the reaper's to retry
or fail, by their leases); SIGTERM or SIGINT stops them all, giving runs in flight
HARNESS_WORKER_STOP_GRACE_SECONDS to finish.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

# Registers the agents.E001-E003 checks, run before this command starts: a broken
# HARNESS_AGENT_MODULES stops it with the reason.
import execution.catalog  # noqa: F401
from common.processes import StopSignals, stop_children

RESTART_DELAY_SECONDS = 1.0


class Command(BaseCommand):
    help = "Run the background worker: the run engine processes and the scheduled-jobs cluster."

    def handle(self, *args: Any, **options: Any) -> None:
        commands = {f"engine-{n}": "runengine" for n in range(1, settings.HARNESS_WORKERS + 1)}
        commands["jobs"] = "runjobs"
        children = {name: self._start(command) for name, command in commands.items()}
        signals = StopSignals()
        while not signals.requested:
            for name, child in list(children.items()):
                code = child.poll()
                if code is not None and not signals.requested:
                    self.stderr.write(f"worker: {name} exited with code {code}; starting it again.")
                    time.sleep(RESTART_DELAY_SECONDS)
                    children[name] = self._start(commands[name])
            time.sleep(0.2)
        stop_children(children, grace=settings.HARNESS_WORKER_STOP_GRACE_SECONDS + 10, say=self.stderr.write)

    def _start(self, command: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(  # noqa: S603 (our own interpreter and manage.py, no user input)
            [sys.executable, "manage.py", command], cwd=settings.BASE_DIR
        )
