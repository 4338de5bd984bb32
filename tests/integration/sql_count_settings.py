"""Settings for a harness whose processes count the SQL statements that read run events.

The real settings, plus a connection wrapper (installed on every new database connection)
that appends one line per statement touching the run-event table to
`$HARNESS_SQL_COUNT_DIR/<pid>.log`. A test reads the web process's file to see how many
times the database was read for streams, from outside the process and whatever code did it.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from django.db.backends.signals import connection_created

from harness_site.settings import *  # noqa: F403

_COUNT_DIR = os.environ["HARNESS_SQL_COUNT_DIR"]
_lock = threading.Lock()


def _count_event_reads(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
    if "runs_runevent" in sql and sql.lstrip().upper().startswith("SELECT"):
        with _lock, open(os.path.join(_COUNT_DIR, f"{os.getpid()}.log"), "a") as log:  # noqa: PTH118,PTH123
            log.write("select\n")
    return execute(sql, params, many, context)


def _install(sender: Any, connection: Any, **kwargs: Any) -> None:
    if _count_event_reads not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count_event_reads)


connection_created.connect(_install, weak=False)
