"""Run inside a network namespace of its own (`unshare -n`): a private Postgres on that
namespace's loopback, the harness's Django settings pointed at it, then the loopback taken
down, so the server's host vanishes without a reset (a partition, a host gone): every packet
the harness sends goes nowhere, as through a black hole.

Prints one line, `REPORT ` and a JSON object: for each case, how many seconds the statement
took to fail, or null when it had not failed after `--give-up` seconds, or what else happened
("answered", or the exception met). The harness logs to stdout too (a pool retrying the
server while it stops, say), so the report is the line with the prefix, not the last line. Nothing here is visible outside the
namespace; Postgres runs as the `postgres` user from a temporary directory and is stopped
on the way out.

    unshare -n python tests/integration/blackhole_db.py [--url-params 'keepalives=0&...']
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.integration.pgbin import postgres_bin  # noqa: E402

REPORT = "REPORT "


def lo(state: str) -> None:
    subprocess.run(["ip", "link", "set", "lo", state], check=True, timeout=10)  # noqa: S607


def lo_is_up() -> bool:
    # `ip`, not /sys/class/net: sysfs shows the namespace it was mounted in, not this one.
    shown = subprocess.run(["ip", "-j", "link", "show", "lo"], capture_output=True, check=True, timeout=10)  # noqa: S607
    return "UP" in json.loads(shown.stdout)[0]["flags"]


def start_postgres(root: Path, port: int) -> subprocess.Popen[bytes]:
    user = pwd.getpwnam("postgres")
    os.chown(root, user.pw_uid, user.pw_gid)
    data = root / "data"
    subprocess.run(  # noqa: S603
        ["runuser", "-u", "postgres", "--", postgres_bin("initdb"), "-D", str(data), "--auth=trust", "--no-sync"],
        capture_output=True,
        check=True,
        timeout=120,
    )
    server = subprocess.Popen(  # noqa: S603
        ["runuser", "-u", "postgres", "--", postgres_bin("postgres"), "-D", str(data)]
        + ["-c", f"port={port}", "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={root}"]
        + ["-c", "fsync=off"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the private Postgres did not start") from None
            time.sleep(0.1)


class Trial:
    """Each case on a fresh connection that works, then the host vanishes; a watchdog reports
    a statement still waiting after `give_up` seconds and ends the process."""

    def __init__(self, give_up: float, cleanup) -> None:
        self.give_up = give_up
        self.cleanup = cleanup
        self.results: dict[str, float | str | None] = {}

    def report(self) -> None:
        # One write, so a log line from a pool thread cannot land inside the report's line.
        sys.stdout.write(f"{REPORT}{json.dumps(self.results)}\n")
        sys.stdout.flush()

    def case(self, name: str, statement: str, *, vanish_after: float | None) -> None:
        from django.db import OperationalError, connection

        connection.close()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        if vanish_after is None:
            lo("down")
            if lo_is_up():
                raise RuntimeError("the loopback is still up after `ip link set lo down`")
        else:
            threading.Timer(vanish_after, lo, ["down"]).start()

        def gave_up() -> None:
            self.results[name] = None
            self.report()
            self.cleanup()
            os._exit(0)

        watchdog = threading.Timer(self.give_up, gave_up)
        watchdog.start()
        started = time.monotonic()
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement)
            self.results[name] = "answered"
        except OperationalError:
            self.results[name] = round(time.monotonic() - started, 2)
        except Exception as error:  # noqa: BLE001 -- reported, the test says what it expected
            self.results[name] = f"{type(error).__name__}: {error}"
        watchdog.cancel()
        lo("up")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url-params", default="")
    parser.add_argument("--give-up", type=float, default=15)
    args = parser.parse_args()
    lo("up")
    root = Path(tempfile.mkdtemp(prefix="harness-blackhole-"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = start_postgres(root, port)

    def cleanup() -> None:
        lo("up")
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(root, ignore_errors=True)

    try:
        query = f"?{args.url_params}" if args.url_params else ""
        os.environ.update(
            DEBUG="true",
            HARNESS_IGNORE_ENV_FILE="true",
            DJANGO_SETTINGS_MODULE="harness_site.settings",
            DATABASE_URL=f"postgres://postgres@127.0.0.1:{port}/postgres{query}",
        )
        os.environ.setdefault("DATABASE_POOL_SIZE", "0")
        import django

        django.setup()
        trial = Trial(args.give_up, cleanup)
        # 1. A statement sent after the host vanished: nothing acknowledges it.
        trial.case("sent_into_the_void", "SELECT 1", vanish_after=None)
        # 2. A statement waiting on its answer when the host vanishes: nothing is left
        #    unacknowledged, only keepalives can tell.
        trial.case("waiting_for_an_answer", "SELECT pg_sleep(600)", vanish_after=0.5)
        trial.report()
        from django.db import connection

        connection.close()
        if getattr(connection, "pool", None) is not None:
            connection.close_pool()  # type: ignore[attr-defined] # before Postgres stops: its workers would retry it
    finally:
        cleanup()
    os._exit(0)  # a connection's socket may still be draining


if __name__ == "__main__":
    main()
