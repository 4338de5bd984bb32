"""Start the whole harness in one process tree: the web server and the worker.

Both log JSON lines to this terminal; Ctrl-C (or SIGTERM) stops both. If either
exits on its own, the other is stopped too and the command fails, so a
supervisor (or a container runtime) restarts the pair.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from common.processes import StopSignals, stop_children


class Command(BaseCommand):
    help = "Run the web server (daphne) and the background worker (the run engine and the django-q2 jobs cluster) together."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--no-worker", action="store_true", help="Web server only (run workers elsewhere).")
        parser.add_argument("--no-web", action="store_true", help="Worker only.")

    def handle(self, *args: Any, host: str, port: int, no_worker: bool, no_web: bool, **options: Any) -> None:
        if not no_worker:
            _check_agents()  # the web alone (--no-worker) never loads the agents' code
        shown = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::") else host  # noqa: S104
        base = f"http://{shown}:{port}"
        # Links the harness hands out (artifact download and upload URLs, the admin's) point
        # at the port it really serves on unless SITE_URL says where the public sees it.
        env = dict(os.environ)
        env.setdefault("SITE_URL", base)
        children: dict[str, subprocess.Popen[bytes]] = {}
        if not no_web:
            children["web"] = subprocess.Popen(  # noqa: S603 (our own interpreter and module, no user input)
                [
                    sys.executable,
                    "-m",
                    "harness_site.webserver",
                    "--verbosity",
                    "0",
                    "--ping-interval",
                    str(settings.HARNESS_WS_PING_SECONDS),
                    "--ping-timeout",
                    str(settings.HARNESS_WS_PING_TIMEOUT_SECONDS),
                    "-b",
                    host,
                    "-p",
                    str(port),
                    "harness_site.asgi:application",
                ],
                env=env,
            )
        if not no_worker:
            children["worker"] = subprocess.Popen(  # noqa: S603 (our own interpreter and manage.py)
                [sys.executable, "manage.py", "runworker"], cwd=settings.BASE_DIR, env=env
            )
        signals = StopSignals()
        if "web" in children:
            _wait_listening(host, port, children["web"], signals)
        self.stderr.write(
            "\n".join(
                [
                    "",
                    f"Agent harness on {base}  (web: {'yes' if 'web' in children else 'no'}, "
                    f"worker: {'yes' if 'worker' in children else 'no'}: {settings.HARNESS_WORKERS} process(es) "
                    f"x {settings.HARNESS_WORKER_CONCURRENCY} runs at once)",
                    f"  model:   {settings.HARNESS_MODEL} by default"
                    + ("" if settings.OPENAI_API_KEY else " (OPENAI_API_KEY is not set: only the offline model runs)"),
                    f"  health:  curl {base}/health",
                    f"  admin:   {base}/admin/   (login: uv run python manage.py ensureadmin)",
                    "  API key: uv run python manage.py createapikey USERNAME",
                    "  Ctrl-C stops everything.",
                    "",
                ]
            )
        )
        exit_code = 0
        while not signals.requested and not exit_code:
            for name, child in children.items():
                code = child.poll()
                if code is not None:
                    self.stderr.write(f"{name} exited with code {code}; stopping the harness.")
                    exit_code = code or 1
                    break
            time.sleep(0.2)
        # The worker's own stop takes its runs' grace and its children's: wait for it.
        stop_children(children, grace=settings.HARNESS_WORKER_STOP_GRACE_SECONDS + 20, say=self.stderr.write)
        self.stderr.write("Harness stopped.")
        if exit_code:
            raise SystemExit(exit_code)


def _wait_listening(host: str, port: int, web: subprocess.Popen[bytes], signals: StopSignals) -> None:
    """Until the web server takes connections, so the banner's URLs answer when it appears;
    no longer than a minute, nor once the web has exited or a stop is asked for."""
    target = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
    deadline = time.monotonic() + 60
    while not signals.requested and web.poll() is None and time.monotonic() < deadline:
        try:
            socket.create_connection((target, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)


def _check_agents() -> None:
    """A broken HARNESS_AGENT_MODULES stops the harness before it starts (agents.E001-E004)."""
    from django.core.checks import run_checks
    from django.core.management.base import SystemCheckError

    import execution.catalog  # noqa: F401 (registers the checks)

    errors = [error for error in run_checks(tags=["agents"]) if error.is_serious()]
    if errors:
        lines = "\n".join(f"{error.id}: {error.msg}\n\tHINT: {error.hint}" for error in errors)
        raise SystemCheckError(f"SystemCheckError: the agent modules cannot be loaded:\n{lines}")
