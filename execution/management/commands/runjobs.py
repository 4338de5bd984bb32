"""The scheduled-jobs cluster (django-q2: the reapers, retention, the nightly eval), stopped once.

`manage.py qcluster` stops its cluster from inside its signal handler, and that stop is not
re-entrant: a second signal arriving while the first one's stop runs (Ctrl-C reaches every
process of the terminal's group, and the supervisor then sends SIGTERM too) interrupts
`multiprocessing.Event.set()` or `Process.join()` with themselves, and the cluster can hang
until it is killed, leaving its sentinel, workers, monitor and pusher behind. Here a signal
only asks for the stop; the stop itself runs once, outside any handler.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand

from common.processes import StopSignals

POLL_SECONDS = 0.2


class Command(BaseCommand):
    help = "Run the scheduled-jobs cluster (manage.py runworker starts it for you)."

    def handle(self, *args: Any, **options: Any) -> None:
        from django_q.cluster import Cluster

        cluster = Cluster()
        signals = StopSignals()  # replaces the handlers the cluster installed
        cluster.start()
        while not signals.requested and cluster.sentinel.is_alive():
            time.sleep(POLL_SECONDS)
        if not cluster.stop():  # False: the sentinel had already ended
            code = cluster.sentinel.exitcode
            if not signals.requested:
                self.stderr.write(f"jobs: the cluster's sentinel exited with code {code}.")
                raise SystemExit(code or 1)
