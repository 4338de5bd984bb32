"""A Postgres that does not answer fails what waits on it within the configured bounds,
instead of holding a request, a worker's claim or `migrate` for as long as the kernel keeps
retrying (some fifteen minutes), or for ever.

- DATABASE_CONNECT_TIMEOUT_SECONDS: a server that takes the TCP connection but never answers
  (a listener here that reads nothing).
- DATABASE_TCP_TIMEOUT_SECONDS: a server whose host vanishes (a private Postgres in a network
  namespace of its own whose loopback is taken down): a statement sent into the void, and one
  waiting for its answer, each fail within the bound; with the bounds switched off by the URL,
  the first is still waiting when the test gives up on it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.integration.harness import ROOT
from tests.integration.pgtls import available as private_postgres_unavailable

pytestmark = [pytest.mark.integration, pytest.mark.own_services]


def migrate(database_url: str, **variables: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """`manage.py migrate` against `database_url` with DATABASE_CONNECT_TIMEOUT_SECONDS=2 and
    these variables: what it printed, and how long it took."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),  # noqa: S108
        "DEBUG": "true",
        "HARNESS_IGNORE_ENV_FILE": "true",
        "DATABASE_URL": database_url,
        "DATABASE_CONNECT_TIMEOUT_SECONDS": "2",
        **variables,
    }
    started = time.monotonic()
    done = subprocess.run(  # noqa: S603
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "s3cret-db-pw" not in done.stderr + done.stdout  # the URL's password is in no error
    return done, time.monotonic() - started


@pytest.fixture
def silent_postgres():
    """A TCP listener that takes connections and never says a word: libpq waits for the
    server's first message for ever unless told otherwise."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"postgres://harness:s3cret-db-pw@127.0.0.1:{listener.getsockname()[1]}/harness"
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    listener.close()


def test_a_server_that_never_answers_fails_the_connection_after_the_connect_timeout(silent_postgres):
    done, took = migrate(silent_postgres, DATABASE_POOL_SIZE="0")
    assert done.returncode != 0
    assert "connection timeout expired" in done.stderr, done.stderr[-2000:]
    assert took < 12, took  # two seconds for the attempt, plus Django's start


def test_a_pool_keeps_trying_a_server_that_never_answers_and_the_caller_waits_only_the_pool_timeout(silent_postgres):
    # Each of the pool's attempts gives up after the connect timeout and is tried again, so a
    # server that comes back is found; without it an attempt (and the pool's thread) waits for
    # ever. The caller itself waits DATABASE_POOL_TIMEOUT_SECONDS (the API then answers 503).
    done, took = migrate(silent_postgres, DATABASE_POOL_SIZE="2", DATABASE_POOL_TIMEOUT_SECONDS="7")
    assert done.returncode != 0 and "couldn't get a connection after 7.00 sec" in done.stderr, done.stderr[-2000:]
    attempts = [line for line in done.stdout.splitlines() if "error connecting" in line]
    assert len(attempts) >= 2 and all("connection timeout expired" in line for line in attempts), done.stdout[-2000:]
    assert took < 15, took


def test_the_connect_timeout_is_at_least_two_seconds_and_the_tcp_timeout_one():
    # libpq counts whole seconds and takes anything under 2 as 2.
    from conftest import settings_import

    refused = settings_import(DATABASE_URL="postgres://h@127.0.0.1/h", DATABASE_CONNECT_TIMEOUT_SECONDS="1")
    assert refused.returncode != 0 and "DATABASE_CONNECT_TIMEOUT_SECONDS" in refused.stderr, refused.stderr
    refused = settings_import(DATABASE_URL="postgres://h@127.0.0.1/h", DATABASE_TCP_TIMEOUT_SECONDS="0")
    assert refused.returncode != 0 and "DATABASE_TCP_TIMEOUT_SECONDS" in refused.stderr, refused.stderr
    accepted = settings_import(
        DATABASE_URL="postgres://h@127.0.0.1/h", DATABASE_CONNECT_TIMEOUT_SECONDS="2", DATABASE_TCP_TIMEOUT_SECONDS="1"
    )
    assert accepted.returncode == 0, accepted.stderr


def blackhole(timeout: float, *args: str, **variables: str) -> dict:
    process = subprocess.Popen(  # noqa: S603
        ["unshare", "-n", sys.executable, str(Path(__file__).with_name("blackhole_db.py")), *args],  # noqa: S607
        cwd=ROOT,
        env={**os.environ, **variables},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"the black-hole trial did not finish: {err[-2000:]}")
    assert process.returncode == 0, err[-2000:]
    reports = [line.removeprefix("REPORT ") for line in out.splitlines() if line.startswith("REPORT ")]
    assert len(reports) == 1, out[-2000:]
    return json.loads(reports[0])


@pytest.fixture(scope="module")
def network_namespace() -> None:
    """Skips unless this host can run the trial: root, a private Postgres, a network namespace."""
    if why := private_postgres_unavailable():
        pytest.skip(why)
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip (util-linux, iproute2)")
    probe = subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True, check=False)  # noqa: S607
    if probe.returncode != 0:
        pytest.skip("cannot make a network namespace here")


@pytest.mark.parametrize("pool_size", ["0", "2"])
def test_a_vanished_host_fails_statements_within_the_tcp_timeout(network_namespace, pool_size):
    results = blackhole(120, DATABASE_TCP_TIMEOUT_SECONDS="2", DATABASE_POOL_SIZE=pool_size)
    # Sent into the void: the kernel gives up once the data has waited 2 s unacknowledged.
    assert isinstance(results["sent_into_the_void"], float) and results["sent_into_the_void"] < 5, results
    # Waiting for the answer: a keepalive after 2 s idle, then probes every second, the
    # connection dropped 2 s after the last acknowledgement.
    assert isinstance(results["waiting_for_an_answer"], float) and results["waiting_for_an_answer"] < 8, results


def test_without_the_bounds_a_vanished_host_holds_the_statement(network_namespace):
    # What the bounds are for: the same trial with the URL switching them off is still waiting
    # when the trial gives up on it (the kernel would retry for some fifteen minutes).
    results = blackhole(
        90, "--url-params", "tcp_user_timeout=0&keepalives=0", "--give-up", "8", DATABASE_TCP_TIMEOUT_SECONDS="2"
    )
    assert results == {"sent_into_the_void": None}, results
