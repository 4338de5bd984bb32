"""Start the real harness (`manage.py runharness`: daphne + django-q2 worker) for tests.

It gets its own database (a temporary SQLite file, or a fresh Postgres database
on the server DATABASE_URL points at), a free loopback port, and is stopped the
way an operator stops it: SIGINT to its process group, as Ctrl-C does.

Its database starts as a copy of a schema migrated once per test session (`MigratedSchema`),
then its own `migrate` runs: nothing is left to apply, and what `migrate` does after
migrating (roles, scheduled jobs, the starter dataset, the agents its workers publish) runs
with its own environment, as on a fresh database.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from django.conf import settings

ROOT = Path(settings.BASE_DIR)
POSTGRES = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def harness_environment(var_dir: Path, database_url: str) -> dict[str, str]:
    """This process's environment without anything that configures the harness, plus what every
    harness process of the tests runs with."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(
            ("OPENAI_", "HARNESS_", "DJANGO_", "REDIS_", "DATABASE_", "E2B_", "SANDBOX_", "OTEL_", "PHOENIX_")
        )
    }
    env.update(
        {
            "HARNESS_IGNORE_ENV_FILE": "1",
            "DEBUG": "false",
            "SECRET_KEY": "integration-secret-key-0123456789abcdef",
            "HARNESS_VAR_DIR": str(var_dir),
            "DATABASE_URL": database_url,
        }
    )
    return env


class PostgresDatabase:
    """A throw-away database on the Postgres server the suite is pointed at (a copy of
    `template` when given)."""

    def __init__(self, template: str | None = None) -> None:
        import psycopg

        db = settings.DATABASES["default"]
        self.name = f"harness_it_{uuid.uuid4().hex[:10]}"
        self.admin_dsn = f"host={db['HOST'] or '127.0.0.1'} port={db['PORT'] or 5432} user={db['USER']} dbname=postgres"
        if db.get("PASSWORD"):
            self.admin_dsn += f" password={db['PASSWORD']}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"' + (f' TEMPLATE "{template}"' if template else ""))
        auth = f"{db['USER']}:{db['PASSWORD']}@" if db.get("PASSWORD") else f"{db['USER']}@"
        self.url = f"postgres://{auth}{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{self.name}"

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class MigratedSchema:
    """Every migration applied once per test session, for harnesses to copy: a SQLite file, or
    a Postgres database used as a template. Removed when the session ends."""

    _made: MigratedSchema | None = None

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="harness-schema-"))
        self.postgres = PostgresDatabase() if POSTGRES else None
        self.sqlite = self.dir / "schema.sqlite3"
        env = harness_environment(self.dir, self.postgres.url if self.postgres else f"sqlite:///{self.sqlite}")
        atexit.register(self.remove)
        subprocess.run(  # noqa: S603
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )

    @classmethod
    def get(cls) -> MigratedSchema:
        if cls._made is None:
            cls._made = cls()
        return cls._made

    def copy_to(self, workdir: Path) -> PostgresDatabase | None:
        """A new database with the schema: the Postgres database made, or None for the SQLite
        file it wrote as workdir/harness.sqlite3."""
        if self.postgres is not None:
            return PostgresDatabase(template=self.postgres.name)
        shutil.copyfile(self.sqlite, workdir / "harness.sqlite3")
        return None

    def remove(self) -> None:
        if self.postgres is not None:
            self.postgres.drop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Harness:
    def __init__(self, workdir: Path, **env: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.postgres = MigratedSchema.get().copy_to(workdir)
        self.env = harness_environment(
            workdir, self.postgres.url if self.postgres else f"sqlite:///{workdir / 'harness.sqlite3'}"
        )
        self.env.update(
            {
                "HARNESS_WORKERS": "1",
                "PYTHONUNBUFFERED": "1",
                # Tests poll one key hard (wait_for); the limits are tested where they are set.
                "HARNESS_API_RATE_LIMIT": "0",
                "HARNESS_MAX_STREAMS_PER_KEY": "0",
            }
        )
        self.env.update(env)
        # Its own keys in a Redis that other instances on this machine may use at the same time:
        # nobody else's worker takes its runs or jobs (replicas of one deployment pass the same).
        self.env.setdefault("HARNESS_REDIS_PREFIX", f"it-{uuid.uuid4().hex[:12]}")
        self.log_path = workdir / f"harness-{self.port}.log"  # stdout: JSON lines only
        self.err_path = workdir / f"harness-{self.port}.err"  # stderr: the banner for people
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.group: int | None = None  # the process group of the last start
        self.manage("migrate", "--noinput")

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def start(self) -> Harness:
        log, err = self.log_path.open("ab"), self.err_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "runharness", "--port", str(self.port)],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=err,
            start_new_session=True,
        )
        self.group = self.process.pid
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"harness exited early:\n{self.log_path.read_text()}{self.err_path.read_text()}")
            try:
                logged = self.log_path.read_text()
                engines = int(self.env.get("HARNESS_WORKERS", "1"))
                if (
                    httpx.get(f"{self.base_url}/health", timeout=1).status_code == 200
                    and "running." in logged  # the jobs cluster
                    and logged.count('"run engine ready"') >= engines * (self.starts + 1)
                ):
                    self.starts += 1
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"harness did not come up:\n{self.log_path.read_text()}")

    def stop(self) -> int:
        """Ctrl-C: SIGINT to the whole foreground process group."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGINT)
        code = self.process.wait(timeout=30)
        self.process = None
        return code

    def kill(self) -> None:
        """A crash: SIGKILL to everything, no chance to clean up."""
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=30)
            self.process = None

    def close(self) -> None:
        if self.process is not None:
            try:
                self.stop()
            except Exception:
                self.kill()
        if self.group is not None:
            # Nothing of this harness may outlive the test: a straggler left in its own
            # process group (no other instance's) is killed.
            try:
                os.killpg(self.group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.postgres:
            self.postgres.drop()

    def api_key(self, username: str) -> str:
        return self.manage("createapikey", username).stdout.strip().splitlines()[-1]

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=10)

    def wait_for(
        self, client: httpx.Client, run_id: str, statuses: tuple[str, ...], timeout: float = 30
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            body = client.get(f"/api/runs/{run_id}").json()
            if body["status"] in statuses or time.monotonic() > deadline:
                return body
            time.sleep(0.05)

    def sql(self, code: str) -> Any:
        """Read the harness's database through its own ORM (a separate process)."""
        out = self.manage("shell", "-c", f"import json\n{code}").stdout.strip().splitlines()
        return json.loads(out[-1])

    def log_lines(self) -> list[str]:
        return self.log_path.read_text().splitlines()
