"""Run throughput and cost: the trivial offline run, end to end through the real harness.

Starts the harness the way `make run` does (`manage.py migrate`, then `manage.py runharness`
on a free loopback port) with its own environment, in production shape by default: a fresh
Postgres database (created here, dropped at the end) and Redis (db --redis-db, its keys
under a HARNESS_REDIS_PREFIX of this invocation's own, deleted at the end: other instances may
use the same Redis at the same time); `--sqlite` for the embedded shape (SQLite, no Redis). The workload is

    POST /api/runs {"input": "What is (2 + 3) * 4?", "agent": "calculator", "model": "offline"}

then following GET /api/runs/{id}/events (Server-Sent Events) to the run's final event
(with --one-request: the same POST with `Accept: text/event-stream`, whose answer is the
run's event stream, followed to its final event).
Phases:

  a. warm-up (not measured);
  b. concurrency 1: --seq-runs runs one after another;
  c. concurrency --concurrency: --conc-runs runs from that many concurrent clients;
  d. slow model: the harness restarted with HARNESS_OFFLINE_DELAY_MS so a run lasts about
     --slow-target-seconds; --slow-runs runs submitted at once; the most runs `running` at
     the same time (sampled from the database every --slow-sample-seconds) and the time
     until all finished;
  e. the floor: the same calculator agent on the offline model run with the bare SDK loop
     (`Runner.run`, tracing off) in a subprocess, --floor-runs times.

For b and c: runs/s, submit-to-final-event latency p50/p99, errors, server CPU per run
(utime+stime over the harness's whole process tree, reaped children included; also
Postgres's and Redis's own CPU, and this client's), Postgres transactions per run
(pg_stat_database, read over a connection to another database so it counts none of its
own), what the database's indexes and tables grew by per run (pg_indexes_size and
pg_table_size of its tables, read before and after the phase), and the peak RSS (sum over
the tree) and PSS.

    uv run python bench/throughput.py                              # everything, Postgres + Redis
    uv run python bench/throughput.py --sqlite --phases a,b,c      # embedded shape, no slow phase
    uv run python bench/throughput.py --root /tmp/bench-base --json /tmp/base.json

Exits non-zero only when the harness cannot be started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

HERE_ROOT = Path(__file__).resolve().parent.parent
RUN_BODY = {"input": "What is (2 + 3) * 4?", "agent": "calculator", "model": "offline"}
FINAL = {"run.succeeded", "run.failed", "run.cancelled"}
SECRET_KEY = "bench-throughput-secret-key-0123456789abcdef0123456789"  # noqa: S105 (a throw-away harness)
ENV_DROP_PREFIXES = ("OPENAI_", "HARNESS_", "DJANGO_", "REDIS_", "DATABASE_", "DIRECT_DATABASE_", "E2B_", "SANDBOX_")
MiB = 1024 * 1024
# --one-request: each run is made and followed with one POST (Accept: text/event-stream).
ONE_REQUEST = False


# --------------------------------------------------------------------------- output


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Progress:
    """One progress line on stderr (rewritten in place on a terminal, else every few seconds)."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total = label, total
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()
        self.last = 0.0

    def update(self, done: int, errors: int, extra: str = "", force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < (0.5 if self.tty else 5.0):
            return
        self.last = now
        elapsed = now - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        line = f"[{self.label}] {done}/{self.total} done, {errors} errors, {rate:.1f}/s, {elapsed:.0f} s{extra}"
        if self.tty:
            sys.stderr.write("\r\x1b[2K" + line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def fmt(value: float | None, spec: str = ".1f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


# --------------------------------------------------------------------------- process trees


def _role(cmdline: list[str]) -> str | None:
    """What a harness process is, from its command line; None when it does not say."""
    text = " ".join(cmdline)
    for marker, role in (
        ("harness_site.webserver", "web"),
        ("daphne", "web"),
        ("runharness", "runharness"),
        ("runengine", "engine"),  # a run engine process (many runs on one event loop)
        ("runjobs", "jobs"),  # the scheduled-jobs cluster (django-q2)
        ("qcluster", "jobs"),  # the same in older trees (and runs, in the oldest)
        ("runworker", "worker"),
    ):
        if marker in text:
            return role
    return None


@dataclass
class _Seen:
    total: float  # own utime+stime + reaped children's
    ppid: int
    role: str


class ProcTree:
    """CPU and memory of a process and all its descendants, including ones that come and go.

    CPU at any moment = sum over the live tree of (own utime+stime + the CPU of children it
    has reaped, which the kernel adds to children_user/children_system). A process that
    exits between two samples is therefore still counted once its parent reaps it; one whose
    parent is gone too (an orphan, reparented out of the tree) keeps the CPU last seen for it
    as a residual. Sample often (a background thread) so little is lost that way.
    """

    def __init__(self, root_pid: int, label: str, pss_every: float = 1.0) -> None:
        self.root_pid, self.label = root_pid, label
        self.lock = threading.Lock()
        self.seen: dict[tuple[int, float], _Seen] = {}
        self.residual: defaultdict[str, float] = defaultdict(float)
        self.roles_by_pid: dict[int, str] = {}
        self.peak_rss = 0
        self.peak_pss = 0
        self.peak_procs = 0
        self.pss_every = pss_every
        self.last_pss = 0.0
        self.last_cpu: dict[str, float] = {}

    def _procs(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.root_pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def sample(self) -> dict[str, float]:
        """CPU seconds so far by role (and 'total'); updates the memory peaks."""
        with self.lock:
            want_pss = time.monotonic() - self.last_pss >= self.pss_every
            current: dict[tuple[int, float], _Seen] = {}
            rss = pss = 0
            for proc in self._procs():
                try:
                    with proc.oneshot():
                        times = proc.cpu_times()
                        key = (proc.pid, proc.create_time())
                        ppid = proc.ppid()
                        role = self.roles_by_pid.get(proc.pid)
                        if role is None or proc.pid == self.root_pid:
                            role = self._role_for(proc, ppid)
                        memory = proc.memory_info()
                        rss += memory.rss
                    if want_pss:
                        with contextlib.suppress(psutil.Error):
                            pss += getattr(proc.memory_full_info(), "pss", memory.rss)
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                self.roles_by_pid[proc.pid] = role
                total = times.user + times.system + times.children_user + times.children_system
                current[key] = _Seen(total=total, ppid=ppid, role=role)
            live_pids = {pid for pid, _ in current}
            for key, gone in self.seen.items():
                if key in current:
                    continue
                if gone.ppid not in live_pids:
                    # Orphaned (or its parent exited too): nobody in the tree will reap it.
                    self.residual[gone.role] += gone.total
            self.seen = current
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_procs = max(self.peak_procs, len(current))
            if want_pss:
                self.last_pss = time.monotonic()
                self.peak_pss = max(self.peak_pss, pss)
            by_role: defaultdict[str, float] = defaultdict(float, self.residual)
            for seen in current.values():
                by_role[seen.role] += seen.total
            out = dict(by_role)
            out["total"] = sum(by_role.values())
            self.last_cpu = out
            return out

    def _role_for(self, proc: psutil.Process, ppid: int) -> str:
        if self.label != "harness":
            return self.label
        own = _role(proc.cmdline())
        if own is not None:
            return own
        # A child that does not say what it is (a forked or spawned helper) counts with its parent.
        parent = self.roles_by_pid.get(ppid)
        if parent is not None and parent != "runharness":
            return parent
        return os.path.basename(proc.cmdline()[0]) if proc.cmdline() else "other"

    def reset_peaks(self) -> None:
        with self.lock:
            self.peak_rss = self.peak_pss = self.peak_procs = 0
            self.last_pss = 0.0

    def alive(self) -> bool:
        return psutil.pid_exists(self.root_pid)


class Sampler(threading.Thread):
    def __init__(self, trees: list[ProcTree], interval: float) -> None:
        super().__init__(daemon=True, name="bench-sampler")
        self.trees, self.interval = trees, interval
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            for tree in self.trees:
                with contextlib.suppress(Exception):
                    tree.sample()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)


def find_process(predicate: Any) -> int | None:
    for proc in psutil.process_iter(["pid", "name", "ppid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if predicate(proc):
                return proc.pid
    return None


def postmaster_pid() -> int | None:
    def is_postmaster(proc: psutil.Process) -> bool:
        if proc.info["name"] != "postgres":
            return False
        try:
            return psutil.Process(proc.info["ppid"]).name() != "postgres"
        except psutil.Error:
            return True

    return find_process(is_postmaster)


def redis_pid() -> int | None:
    return find_process(lambda proc: proc.info["name"] == "redis-server")


# --------------------------------------------------------------------------- Postgres and Redis


class Postgres:
    """Creates and drops the bench database; reads its transaction counter from another database."""

    def __init__(self, host: str, port: int, user: str, password: str, name: str) -> None:
        self.host, self.port, self.user, self.password, self.name = host, port, user, password, name
        self.admin_dsn = f"host={host} port={port} user={user} dbname=postgres"
        if password:
            self.admin_dsn += f" password={password}"
        auth = f"{user}:{password}@" if password else f"{user}@"
        self.url = f"postgres://{auth}{host}:{port}/{name}"
        self.stat_conn: Any = None
        self.db_conn: Any = None
        self.own_queries = 0  # queries this script ran in the bench database (counted by the server)

    def create(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        import psycopg

        for conn in (self.stat_conn, self.db_conn):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
        self.stat_conn = self.db_conn = None
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def xacts(self) -> int:
        """xact_commit + xact_rollback of the bench database, read over a connection to `postgres`."""
        import psycopg

        if self.stat_conn is None:
            self.stat_conn = psycopg.connect(self.admin_dsn, autocommit=True)
        self.stat_conn.execute("SELECT pg_stat_clear_snapshot()")
        row = self.stat_conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", (self.name,)
        ).fetchone()
        return int(row[0]) if row else 0

    def sizes(self) -> tuple[int, int]:
        """Bytes of the bench database's indexes and of its tables (heap and TOAST), in that order."""
        row = self.query(
            "SELECT coalesce(sum(pg_indexes_size(c.oid)), 0), coalesce(sum(pg_table_size(c.oid)), 0) "
            "FROM pg_class c WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace"
        )[0]
        return int(row[0]), int(row[1])

    def query(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        import psycopg

        if self.db_conn is None:
            dsn = f"host={self.host} port={self.port} user={self.user} dbname={self.name}"
            if self.password:
                dsn += f" password={self.password}"
            self.db_conn = psycopg.connect(dsn, autocommit=True)
        self.own_queries += 1
        return self.db_conn.execute(sql, params).fetchall()


def redis_forget(url: str, prefix: str) -> int:
    """Delete this harness's keys (its queues and its cache), no one else's; how many there were."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = [key for pattern in (f"django_q:{prefix}*", f"{prefix}:*") for key in client.scan_iter(match=pattern)]
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


# --------------------------------------------------------------------------- the harness


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def python_for(root: Path) -> str:
    venv = root / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


class HarnessError(Exception):
    pass


class Harness:
    def __init__(self, args: argparse.Namespace, label: str, extra_env: dict[str, str]) -> None:
        self.args, self.label = args, label
        self.root: Path = args.root
        self.python = python_for(self.root)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"bench-throughput-{label}-"))
        self.port = args.port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.postgres: Postgres | None = None
        self.sqlite_path: Path | None = None
        self.redis_url: str | None = None
        self.redis_prefix = ""
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_DROP_PREFIXES)}
        env.pop("VIRTUAL_ENV", None)
        env.update(
            {
                "HARNESS_IGNORE_ENV_FILE": "1",
                "DEBUG": "false",
                "SECRET_KEY": SECRET_KEY,
                "HARNESS_VAR_DIR": str(self.workdir),
                "PYTHONUNBUFFERED": "1",
                "HARNESS_WORKERS": str(args.workers),
                "HARNESS_WORKER_CONCURRENCY": str(args.worker_concurrency),
                "HARNESS_PRINCIPAL_MAX_INFLIGHT": str(args.principal_max_inflight),
                # One key drives the whole load: the per-key limits would measure themselves.
                "HARNESS_API_RATE_LIMIT": "0",
                "HARNESS_MAX_STREAMS_PER_KEY": "0",
            }
        )
        if args.offline_delay_ms is not None:
            env["HARNESS_OFFLINE_DELAY_MS"] = str(args.offline_delay_ms)
        for item in args.env:
            key, _, value = item.partition("=")
            env[key] = value
        env.update(extra_env)
        self.env = env
        self.log_path = self.workdir / "harness.log"
        self.err_path = self.workdir / "harness.err"

    # -- lifecycle

    def start(self) -> Harness:
        args = self.args
        if args.sqlite:
            self.sqlite_path = self.workdir / "harness.sqlite3"
            self.env["DATABASE_URL"] = f"sqlite:///{self.sqlite_path}"
        else:
            name = f"bench_tp_{uuid.uuid4().hex[:10]}"
            self.postgres = Postgres(args.pg_host, args.pg_port, args.pg_user, args.pg_password, name)
            try:
                self.postgres.create()
            except Exception as exc:
                self.postgres = None
                raise HarnessError(f"could not create Postgres database {name}: {exc}") from exc
            self.env["DATABASE_URL"] = self.postgres.url
        use_redis = args.redis == "on" or (args.redis == "auto" and not args.sqlite)
        if use_redis:
            self.redis_url = f"redis://{args.redis_host}:{args.redis_port}/{args.redis_db}"
            self.redis_prefix = f"bench-{uuid.uuid4().hex[:10]}"
            try:
                redis_forget(self.redis_url, self.redis_prefix)
            except Exception as exc:
                raise HarnessError(f"could not reach Redis at {self.redis_url}: {exc}") from exc
            self.env["REDIS_URL"] = self.redis_url
            self.env["HARNESS_REDIS_PREFIX"] = self.redis_prefix
        log(f"[{self.label}] migrate ({'sqlite' if args.sqlite else self.postgres.name if self.postgres else '?'})")
        migrate = self.manage("migrate", "--noinput", check=False, timeout=300)
        if migrate.returncode != 0:
            raise HarnessError(
                f"migrate failed ({migrate.returncode}):\n{migrate.stdout[-3000:]}{migrate.stderr[-3000:]}"
            )
        log(f"[{self.label}] runharness --port {self.port} ({self.root})")
        self.process = subprocess.Popen(  # noqa: S603 (our interpreter and the tree's manage.py)
            [self.python, "manage.py", "runharness", "--port", str(self.port)],
            cwd=self.root,
            env=self.env,
            stdout=self.log_path.open("ab"),
            stderr=self.err_path.open("ab"),
            start_new_session=True,
        )
        self.started_at = time.monotonic()
        deadline = self.started_at + self.args.start_timeout
        while True:
            if self.process.poll() is not None:
                raise HarnessError(f"runharness exited early with code {self.process.returncode}:\n{self.tail()}")
            try:
                response = httpx.get(f"{self.base_url}/health", timeout=2)
                if response.status_code == 200:
                    self.health = response.json()
                    break
            except (httpx.HTTPError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise HarnessError(f"GET /health did not answer 200 within {self.args.start_timeout} s:\n{self.tail()}")
            time.sleep(0.2)
        key = self.manage("createapikey", "benchuser", check=False)
        lines = key.stdout.strip().splitlines()
        if key.returncode != 0 or not lines:
            raise HarnessError(f"createapikey failed ({key.returncode}):\n{key.stdout}{key.stderr}")
        self.key = lines[-1].strip()
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        """Wait (bounded) until the workers say they take runs: /health answers before they do.

        Trees with the run engine log "run engine ready" once per worker process; older
        trees run runs on django-q2, whose cluster logs "running.". Not seeing it within
        --ready-timeout is only a warning: the first runs then include the workers' start.
        """
        engine = (self.root / "execution" / "engine.py").exists()
        deadline = time.monotonic() + self.args.ready_timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                text = self.log_path.read_text(errors="replace") + self.err_path.read_text(errors="replace")
                ready = (
                    text.count("run engine ready") >= int(self.env.get("HARNESS_WORKERS", "1"))
                    if engine
                    else "running." in text
                )
                if ready:
                    self.ready_s: float | None = time.monotonic() - self.started_at
                    log(f"[{self.label}] workers ready {self.ready_s:.1f} s after start")
                    return
            if not self.alive():
                raise HarnessError(f"runharness exited while starting:\n{self.tail()}")
            time.sleep(0.2)
        self.ready_s = None
        log(f"[{self.label}] WARNING: no worker readiness line in the log within {self.args.ready_timeout} s")

    def manage(self, *argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603
            [self.python, "manage.py", *argv],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tail(self, lines: int = 40) -> str:
        out = []
        for path in (self.log_path, self.err_path):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {path} (last {len(text)} lines)\n" + "\n".join(text))
        return "\n".join(out)

    def stop(self) -> int | None:
        """Ctrl-C: SIGINT to the process group; SIGKILL to the group after the grace."""
        if self.process is None:
            return None
        code = self.process.poll()
        if code is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGINT)
            try:
                code = self.process.wait(timeout=self.args.stop_grace)
            except subprocess.TimeoutExpired:
                log(f"[{self.label}] harness did not stop within {self.args.stop_grace} s of SIGINT: SIGKILL")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                code = self.process.wait(timeout=30)
        # Anything left in the group (a child that ignored the stop) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process = None
        return code

    def close(self) -> None:
        try:
            code = self.stop()
            if code not in (None, 0, -signal.SIGINT):
                log(f"[{self.label}] harness exited with code {code}")
        finally:
            if self.postgres is not None:
                try:
                    self.postgres.drop()
                except Exception as exc:
                    log(f"[{self.label}] could not drop database {self.postgres.name}: {exc}")
            if self.redis_url:
                with contextlib.suppress(Exception):
                    redis_forget(self.redis_url, self.redis_prefix)
            if self.args.keep_workdir:
                log(f"[{self.label}] kept {self.workdir}")
            else:
                import shutil

                shutil.rmtree(self.workdir, ignore_errors=True)

    # -- reading the database (slow phase)

    def run_rows(self, ids: list[str]) -> list[tuple[str, str, Any, Any]]:
        """(id, status, started_at, finished_at) for these runs, straight from the database."""
        if self.postgres is not None:
            return [
                tuple(row)  # type: ignore[misc]
                for row in self.postgres.query(
                    "SELECT id, status, started_at, finished_at FROM runs_run WHERE id = ANY(%s)", (ids,)
                )
            ]
        if self.sqlite_path is None:
            raise HarnessError("no database to read")
        conn = sqlite3.connect(f"file:{self.sqlite_path}?mode=ro", uri=True, timeout=5)
        try:
            rows: list[tuple[str, str, Any, Any]] = []
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows += conn.execute(
                    f"SELECT id, status, started_at, finished_at FROM runs_run WHERE id IN ({marks})",  # noqa: S608
                    chunk,
                ).fetchall()
            return rows
        finally:
            conn.close()


def as_epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


# --------------------------------------------------------------------------- the workload


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)  # submit -> final event, successful runs
    post_latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    done: int = 0
    ids: list[str] = field(default_factory=list)

    def error(self, kind: str, detail: str = "") -> None:
        self.errors[kind] += 1
        self.done += 1
        if len(self.examples) < 5:
            self.examples.append(f"{kind}: {detail}"[:300])

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def make_client(harness: Harness, connections: int, read_timeout: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=harness.base_url,
        headers={"Authorization": f"Bearer {harness.key}"},
        timeout=httpx.Timeout(30.0, read=read_timeout),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


async def submit(client: httpx.AsyncClient, tally: Tally) -> tuple[str | None, float]:
    started = time.perf_counter()
    try:
        response = await client.post("/api/runs", json=RUN_BODY)
    except httpx.HTTPError as exc:
        tally.error(f"POST {type(exc).__name__}", str(exc))
        return None, started
    if response.status_code != 202:
        tally.error(f"POST {response.status_code}", response.text)
        return None, started
    tally.post_latencies.append(time.perf_counter() - started)
    run_id = response.json()["id"]
    tally.ids.append(run_id)
    return run_id, started


async def follow(client: httpx.AsyncClient, run_id: str) -> str | None:
    """The run's final event type, following its SSE stream; None if the stream ended without one."""
    async with client.stream("GET", f"/api/runs/{run_id}/events") as response:
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"GET events {response.status_code}: {response.text[:200]}")
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                kind = line[6:].strip()
                if kind in FINAL:
                    return kind
    return None


async def one_request_run(client: httpx.AsyncClient, tally: Tally, timeout: float) -> None:
    """The run made and followed in one request: POST /api/runs with `Accept: text/event-stream`."""
    started = time.perf_counter()
    run_id = "?"
    try:
        async with asyncio.timeout(timeout):
            async with client.stream(
                "POST", "/api/runs", json=RUN_BODY, headers={"Accept": "text/event-stream"}
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    tally.error(f"POST {response.status_code}", response.text)
                    return
                tally.post_latencies.append(time.perf_counter() - started)
                run_id = response.headers["X-Run-Id"]
                tally.ids.append(run_id)
                final = None
                async for line in response.aiter_lines():
                    if line.startswith("event:") and line[6:].strip() in FINAL:
                        final = line[6:].strip()
                        break
    except TimeoutError:
        tally.error("timeout", f"{run_id}: no final event within {timeout} s")
        return
    except httpx.HTTPError as exc:
        tally.error(f"stream {type(exc).__name__}", f"{run_id}: {exc}")
        return
    _tally_final(tally, run_id, final, started)


def _tally_final(tally: Tally, run_id: str, final: str | None, started: float) -> None:
    if final is None:
        tally.error("stream ended without a final event", run_id)
    elif final != "run.succeeded":
        tally.error(final, run_id)
    else:
        tally.latencies.append(time.perf_counter() - started)
        tally.done += 1


async def one_run(client: httpx.AsyncClient, tally: Tally, timeout: float) -> None:
    if ONE_REQUEST:
        await one_request_run(client, tally, timeout)
        return
    run_id, started = await submit(client, tally)
    if run_id is None:
        return
    try:
        async with asyncio.timeout(timeout):
            final = await follow(client, run_id)
    except TimeoutError:
        tally.error("timeout", f"{run_id}: no final event within {timeout} s")
        return
    except (httpx.HTTPError, RuntimeError) as exc:
        tally.error(f"stream {type(exc).__name__}", f"{run_id}: {exc}")
        return
    _tally_final(tally, run_id, final, started)


async def drive(harness: Harness, label: str, runs: int, concurrency: int, timeout: float) -> tuple[Tally, float]:
    tally = Tally()
    progress = Progress(label, runs)
    remaining = runs

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await one_run(client, tally, timeout)
            progress.update(tally.done, tally.error_count)

    async with make_client(harness, concurrency * 2 + 4, timeout) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    progress.update(tally.done, tally.error_count, force=True)
    progress.close()
    return tally, elapsed


# --------------------------------------------------------------------------- measured phases


class Meters:
    """Everything measured around a phase: CPU of each process tree, Postgres transactions."""

    def __init__(self, harness: Harness, interval: float) -> None:
        self.harness = harness
        if harness.process is None:
            raise HarnessError("the harness is not running")
        self.trees = [ProcTree(harness.process.pid, "harness")]
        self.pg_tree = self.redis_tree = None
        if harness.postgres is not None and (pid := postmaster_pid()):
            self.pg_tree = ProcTree(pid, "postgres", pss_every=1e9)
            self.trees.append(self.pg_tree)
        if harness.redis_url and (pid := redis_pid()):
            self.redis_tree = ProcTree(pid, "redis", pss_every=1e9)
            self.trees.append(self.redis_tree)
        self.sampler = Sampler(self.trees, interval)
        self.sampler.start()

    @property
    def harness_tree(self) -> ProcTree:
        return self.trees[0]

    def snapshot(self) -> dict[str, Any]:
        return {
            "harness": self.harness_tree.sample(),
            "postgres": self.pg_tree.sample()["total"] if self.pg_tree else None,
            "redis": self.redis_tree.sample()["total"] if self.redis_tree else None,
            "client": time.process_time(),
            "machine": machine_busy(),
            "wall": time.perf_counter(),
        }

    def settled_xacts(self, settle: float) -> int | None:
        """The transaction counter once idle backends have flushed their statistics."""
        pg = self.harness.postgres
        if pg is None:
            return None
        # Postgres 15 backends flush pending statistics at most once a second, and an idle
        # one only after its 10 s idle timeout: wait that long before trusting the counter.
        time.sleep(settle)
        return pg.xacts()

    def stop(self) -> None:
        self.sampler.stop()


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (every process, this client included)."""
    times = psutil.cpu_times()
    return (
        sum(times)
        - times.idle
        - getattr(times, "iowait", 0.0)
        - getattr(times, "guest", 0.0)
        - getattr(times, "guest_nice", 0.0)
    )


def cpu_delta(before: dict[str, Any], after: dict[str, Any], runs: int) -> dict[str, Any]:
    per = max(runs, 1)
    roles = sorted(set(before["harness"]) | set(after["harness"]))
    harness = {
        role: (after["harness"].get(role, 0.0) - before["harness"].get(role, 0.0)) * 1000 / per for role in roles
    }
    out: dict[str, Any] = {"harness_cpu_ms_per_run": harness.pop("total"), "harness_cpu_ms_per_run_by_role": harness}
    for name in ("postgres", "redis"):
        out[f"{name}_cpu_ms_per_run"] = (
            (after[name] - before[name]) * 1000 / per if before[name] is not None and after[name] is not None else None
        )
    out["client_cpu_ms_per_run"] = (after["client"] - before["client"]) * 1000 / per
    wall = after["wall"] - before["wall"]
    # The whole machine: tells whether the trees above miss anything, and how busy the cores were.
    out["machine_cpu_ms_per_run"] = (after["machine"] - before["machine"]) * 1000 / per
    out["machine_busy_cores"] = (after["machine"] - before["machine"]) / wall if wall > 0 else None
    # Busy time no measured tree accounts for: other work on the machine, which skews runs/s and latency.
    accounted = (after["harness"]["total"] - before["harness"]["total"]) + (after["client"] - before["client"])
    for name in ("postgres", "redis"):
        if before[name] is not None and after[name] is not None:
            accounted += after[name] - before[name]
    out["other_load_cores"] = ((after["machine"] - before["machine"]) - accounted) / wall if wall > 0 else None
    out["harness_cpu_cores"] = (
        (after["harness"]["total"] - before["harness"]["total"]) / wall if wall > 0 else None
    )  # average cores busy in the harness over the phase (incl. the tail)
    return out


def measured_phase(
    harness: Harness, meters: Meters, label: str, runs: int, concurrency: int, args: argparse.Namespace
) -> dict[str, Any]:
    pg = harness.postgres
    sizes_before = pg.sizes() if pg else None
    own_before = pg.own_queries if pg else 0
    xact_before = pg.xacts() if pg else None
    meters.harness_tree.reset_peaks()
    before = meters.snapshot()
    tally, elapsed = asyncio.run(drive(harness, label, runs, concurrency, args.run_timeout))
    time.sleep(args.tail_seconds)  # work the harness does after sending the final event
    after = meters.snapshot()
    peak_rss, peak_pss, peak_procs = (
        meters.harness_tree.peak_rss,
        meters.harness_tree.peak_pss,
        meters.harness_tree.peak_procs,
    )
    xact_after = meters.settled_xacts(args.settle_seconds) if pg else None
    completed = len(tally.latencies) + tally.error_count
    result: dict[str, Any] = {
        "phase": label,
        "runs": runs,
        "concurrency": concurrency,
        "succeeded": len(tally.latencies),
        "errors": tally.error_count,
        "errors_by_kind": dict(tally.errors),
        "error_examples": tally.examples,
        "wall_s": elapsed,
        "runs_per_s": len(tally.latencies) / elapsed if elapsed > 0 else None,
        "latency_p50_ms": _ms(statistics.median(tally.latencies) if tally.latencies else None),
        "latency_p99_ms": _ms(percentile(tally.latencies, 99)),
        "latency_max_ms": _ms(max(tally.latencies) if tally.latencies else None),
        "post_p50_ms": _ms(statistics.median(tally.post_latencies) if tally.post_latencies else None),
        "post_p99_ms": _ms(percentile(tally.post_latencies, 99)),
        "peak_rss_mib": peak_rss / MiB,
        "peak_pss_mib": peak_pss / MiB if peak_pss else None,
        "peak_processes": peak_procs,
        **cpu_delta(before, after, completed),
    }
    if pg is not None and xact_before is not None and xact_after is not None:
        own = pg.own_queries - own_before
        result["pg_xacts"] = xact_after - xact_before - own
        result["pg_xact_per_run"] = result["pg_xacts"] / max(completed, 1)
    else:
        result["pg_xacts"] = result["pg_xact_per_run"] = None
    result["pg_index_kib_per_run"] = result["pg_table_kib_per_run"] = None
    if pg is not None and sizes_before is not None:
        # What the database grew by, per run: its indexes, and its tables.
        index_bytes, table_bytes = (b - a for a, b in zip(sizes_before, pg.sizes(), strict=True))
        result["pg_index_kib_per_run"] = index_bytes / 1024 / max(completed, 1)
        result["pg_table_kib_per_run"] = table_bytes / 1024 / max(completed, 1)
    print_phase(result)
    return result


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1000


def print_phase(r: dict[str, Any]) -> None:
    roles = ", ".join(f"{k} {v:.1f}" for k, v in sorted(r["harness_cpu_ms_per_run_by_role"].items()))
    log(
        f"[{r['phase']}] {r['succeeded']}/{r['runs']} ok, {r['errors']} errors in {r['wall_s']:.1f} s: "
        f"{fmt(r['runs_per_s'])} runs/s, p50 {fmt(r['latency_p50_ms'])} ms, p99 {fmt(r['latency_p99_ms'])} ms; "
        f"harness CPU {fmt(r['harness_cpu_ms_per_run'])} ms/run ({roles}); "
        f"postgres CPU {fmt(r['postgres_cpu_ms_per_run'])} ms/run; client CPU {fmt(r['client_cpu_ms_per_run'])} ms/run; "
        f"machine {fmt(r['machine_cpu_ms_per_run'])} ms/run ({fmt(r['machine_busy_cores'], '.2f')} cores busy); "
        f"pg xact/run {fmt(r['pg_xact_per_run'], '.2f')}; "
        f"pg growth/run: indexes {fmt(r['pg_index_kib_per_run'], '.1f')} KiB, "
        f"tables {fmt(r['pg_table_kib_per_run'], '.1f')} KiB; "
        f"peak RSS {r['peak_rss_mib']:.0f} MiB"
    )
    if (r["other_load_cores"] or 0) > 0.15:
        log(
            f"[{r['phase']}] WARNING: {r['other_load_cores']:.2f} cores were busy outside the harness, Postgres, "
            "Redis and this client: something else is running, and runs/s and latency suffer from it"
        )
    if r["errors"]:
        log(f"[{r['phase']}] errors: {r['errors_by_kind']}")
        for example in r["error_examples"]:
            log(f"    {example}")


def idle_phase(harness: Harness, meters: Meters, seconds: float, settle: float) -> dict[str, Any]:
    """What the harness costs doing nothing: CPU cores and Postgres transactions per second."""
    log(f"[idle] {seconds:.0f} s")
    pg = harness.postgres
    if pg is not None:
        time.sleep(settle)
    xact_before = pg.xacts() if pg else None
    before = meters.snapshot()
    time.sleep(seconds)
    after = meters.snapshot()
    xact_after = meters.settled_xacts(settle) if pg else None
    wall = after["wall"] - before["wall"]
    result = {
        "seconds": wall,
        "harness_cpu_cores": (after["harness"]["total"] - before["harness"]["total"]) / wall,
        "postgres_cpu_cores": (after["postgres"] - before["postgres"]) / wall
        if before["postgres"] is not None
        else None,
        "pg_xact_per_s": (xact_after - xact_before) / (wall + settle)
        if xact_after is not None and xact_before is not None
        else None,
        "rss_mib": meters.harness_tree.peak_rss / MiB,
    }
    log(
        f"[idle] harness {result['harness_cpu_cores'] * 100:.1f}% of a core, "
        f"pg xact/s {fmt(result['pg_xact_per_s'], '.2f')}, RSS {result['rss_mib']:.0f} MiB"
    )
    return result


def warm_up(harness: Harness, runs: int, timeout: float) -> dict[str, Any]:
    tally, elapsed = asyncio.run(drive(harness, "a: warm-up", runs, min(4, max(runs, 1)), max(timeout, 120)))
    log(f"[a: warm-up] {len(tally.latencies)}/{runs} ok in {elapsed:.1f} s, errors {dict(tally.errors)}")
    for example in tally.examples:
        log(f"    {example}")
    return {"runs": runs, "succeeded": len(tally.latencies), "errors": dict(tally.errors), "wall_s": elapsed}


# --------------------------------------------------------------------------- d. slow model


async def submit_all(harness: Harness, runs: int, concurrency: int) -> Tally:
    tally = Tally()
    progress = Progress("d: submit", runs)
    queue = list(range(runs))

    async def loop(client: httpx.AsyncClient) -> None:
        while queue:
            queue.pop()
            run_id, _ = await submit(client, tally)
            if run_id is not None:
                tally.done += 1
            progress.update(len(tally.ids), tally.error_count)

    async with make_client(harness, concurrency + 2, 60) as client:
        await asyncio.gather(*(loop(client) for _ in range(concurrency)))
    progress.update(len(tally.ids), tally.error_count, force=True)
    progress.close()
    return tally


def cancel_runs(harness: Harness, ids: list[str]) -> None:
    with httpx.Client(base_url=harness.base_url, headers={"Authorization": f"Bearer {harness.key}"}, timeout=10) as c:
        for run_id in ids:
            with contextlib.suppress(httpx.HTTPError):
                c.post(f"/api/runs/{run_id}/cancel")


def slow_phase(harness: Harness, meters: Meters, args: argparse.Namespace, delay_ms: int) -> dict[str, Any]:
    runs = args.slow_runs
    meters.harness_tree.reset_peaks()
    before = meters.snapshot()
    submit_started_epoch = time.time()
    submit_started = time.perf_counter()
    tally = asyncio.run(submit_all(harness, runs, args.slow_submit_concurrency))
    submit_s = time.perf_counter() - submit_started
    ids = tally.ids
    log(f"[d: slow] {len(ids)} runs submitted in {submit_s:.1f} s; sampling every {args.slow_sample_seconds} s")
    progress = Progress("d: slow", len(ids))
    max_running = 0
    max_running_at = None
    samples: list[tuple[float, int, int]] = []  # (seconds since submit start, running, queued)
    deadline = time.perf_counter() + args.slow_max_wait
    unfinished = len(ids)
    sample_errors = 0
    while ids:
        try:
            rows = harness.run_rows(ids)
        except Exception as exc:
            sample_errors += 1
            if sample_errors <= 3:
                log(f"[d: slow] database sample failed: {exc}")
            time.sleep(args.slow_sample_seconds)
            continue
        statuses = Counter(row[1] for row in rows)
        running, queued = statuses.get("running", 0), statuses.get("queued", 0)
        now = time.perf_counter() - submit_started
        samples.append((round(now, 2), running, queued))
        if running > max_running:
            max_running, max_running_at = running, now
        unfinished = running + queued
        finished = len(ids) - unfinished
        progress.update(
            finished,
            sum(c for s, c in statuses.items() if s in ("failed", "cancelled")),
            f", running {running} (max {max_running}), queued {queued}",
        )
        if unfinished == 0:
            break
        if time.perf_counter() > deadline:
            log(f"\n[d: slow] gave up after {args.slow_max_wait} s with {unfinished} runs unfinished; cancelling them")
            break
        if not harness.alive():
            log("\n[d: slow] the harness died")
            break
        time.sleep(args.slow_sample_seconds)
    all_done_wall = time.perf_counter() - submit_started
    progress.close()
    after = meters.snapshot()
    rows = harness.run_rows(ids) if ids else []
    if unfinished:
        cancel_runs(harness, [row[0] for row in rows if row[1] in ("queued", "running")])
    statuses = Counter(row[1] for row in rows)
    durations = [
        as_epoch(row[3]) - as_epoch(row[2])  # type: ignore[operator]
        for row in rows
        if row[1] == "succeeded" and row[2] is not None and row[3] is not None
    ]
    finished_at = [as_epoch(row[3]) for row in rows if row[3] is not None]
    succeeded = statuses.get("succeeded", 0)
    last_finished = (max(f for f in finished_at if f is not None) - submit_started_epoch) if finished_at else None
    # From the start timestamps: the most runs whose [started_at, finished_at] overlap (exact, no sampling).
    intervals = [(as_epoch(row[2]), as_epoch(row[3]) or float("inf")) for row in rows if row[2] is not None]
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    overlap = best_overlap = 0
    for _, step in edges:
        overlap += step
        best_overlap = max(best_overlap, overlap)
    result: dict[str, Any] = {
        "phase": "d: slow model",
        "offline_delay_ms": delay_ms,
        "runs": runs,
        "submitted": len(ids),
        "submit_s": submit_s,
        "succeeded": succeeded,
        # Failed or cancelled on their own (the ones cancelled here after giving up are `unfinished`).
        "errors": tally.error_count
        + sum(n for s, n in statuses.items() if s not in ("succeeded", "queued", "running")),
        "statuses": dict(statuses),
        "submit_errors": dict(tally.errors),
        "error_examples": tally.examples,
        "all_finished_s": last_finished if not unfinished else None,
        "gave_up_after_s": all_done_wall if unfinished else None,
        "unfinished_at_give_up": unfinished,
        "max_running_sampled": max_running,
        "max_running_at_s": max_running_at,
        "max_running_from_timestamps": best_overlap,
        "run_duration_p50_s": statistics.median(durations) if durations else None,
        "run_duration_max_s": max(durations) if durations else None,
        "peak_rss_mib": meters.harness_tree.peak_rss / MiB,
        "peak_pss_mib": meters.harness_tree.peak_pss / MiB or None,
        "peak_processes": meters.harness_tree.peak_procs,
        "samples": samples,
        **cpu_delta(before, after, max(succeeded, 1)),
    }
    log(
        f"[d: slow] {succeeded}/{runs} succeeded; all finished after {fmt(result['all_finished_s'])} s; "
        f"max running {max_running} (timestamps: {best_overlap}); run p50 {fmt(result['run_duration_p50_s'])} s; "
        f"peak RSS {result['peak_rss_mib']:.0f} MiB; statuses {dict(statuses)}"
    )
    for example in tally.examples:
        log(f"    {example}")
    return result


# --------------------------------------------------------------------------- e. the floor

FLOOR_CODE = textwrap.dedent(
    """
    import asyncio, json, os, sys, time
    sys.path.insert(0, os.getcwd())
    import django
    django.setup()
    from agents import RunConfig, Runner
    try:  # the agents this harness runs (older commits kept them in runs.registry)
        from execution.catalog import agent_get
    except ImportError:
        from runs.registry import agent_get
    try:
        from execution.offline import OfflineModel
    except ImportError:
        from runs.offline import OfflineModel

    RUNS, WARM, TEXT = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    spec = agent_get("calculator")

    def build(delay_ms):
        try:
            model = OfflineModel(spec, delay_ms=delay_ms)
        except TypeError:
            model = OfflineModel(spec)
            model.delay = delay_ms / 1000
        return spec.build(model)

    async def main():
        config = RunConfig(tracing_disabled=True)
        agent = build(0)
        out = {}
        for _ in range(WARM):
            result = await Runner.run(agent, TEXT, run_config=config)
        out["output"] = str(result.final_output)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(RUNS):
            await Runner.run(agent, TEXT, run_config=config)
        out["run"] = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
        # The harness runs agents streamed: the same loop through Runner.run_streamed.
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(RUNS):
            streamed = Runner.run_streamed(agent, TEXT, run_config=config)
            async for _event in streamed.stream_events():
                pass
        out["run_streamed"] = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
        # How the offline delay applies (the harness streams, so time it streamed): one run with a
        # 40 ms delay against the undelayed ones.
        slow = build(40)
        started = time.perf_counter()
        streamed = Runner.run_streamed(slow, TEXT, run_config=config)
        async for _event in streamed.stream_events():
            pass
        elapsed = time.perf_counter() - started
        base = out["run_streamed"]["wall_s"] / max(RUNS, 1)
        out["delay_sleeps_per_run"] = max(0.0, (elapsed - base) / 0.040)
        print(json.dumps(out))

    asyncio.run(main())
    """
)


def floor_phase(args: argparse.Namespace) -> dict[str, Any]:
    log(f"[e: floor] bare SDK loop, {args.floor_runs} runs (Runner.run, then Runner.run_streamed)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_DROP_PREFIXES)}
    env.pop("VIRTUAL_ENV", None)
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as var:
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "harness_site.settings",
                "HARNESS_IGNORE_ENV_FILE": "1",
                "DEBUG": "true",
                "SECRET_KEY": SECRET_KEY,
                "HARNESS_VAR_DIR": var,
            }
        )
        proc = subprocess.run(  # noqa: S603
            [python_for(args.root), "-c", FLOOR_CODE, str(args.floor_runs), "10", RUN_BODY["input"]],
            cwd=args.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
    if proc.returncode != 0:
        log(f"[e: floor] failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return {"phase": "e: floor", "error": proc.stderr[-3000:]}
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    n = max(args.floor_runs, 1)
    result = {
        "phase": "e: floor",
        "runs": args.floor_runs,
        "output": data["output"],
        "runs_per_s": n / data["run"]["wall_s"],
        "cpu_ms_per_run": data["run"]["cpu_s"] * 1000 / n,
        "streamed_runs_per_s": n / data["run_streamed"]["wall_s"],
        "streamed_cpu_ms_per_run": data["run_streamed"]["cpu_s"] * 1000 / n,
        "delay_sleeps_per_run": data["delay_sleeps_per_run"],
    }
    log(
        f"[e: floor] Runner.run {result['runs_per_s']:.1f} runs/s, {result['cpu_ms_per_run']:.2f} CPU ms/run; "
        f"run_streamed {result['streamed_runs_per_s']:.1f} runs/s, {result['streamed_cpu_ms_per_run']:.2f} CPU ms/run; "
        f"output {result['output']!r}; offline delay sleeps per run ~{result['delay_sleeps_per_run']:.1f}"
    )
    return result


# --------------------------------------------------------------------------- the summary


def tree_description(root: Path) -> str:
    git = ["git", "-C", str(root), "--no-optional-locks"]
    try:
        head = subprocess.run(  # noqa: S603
            [*git, "log", "-1", "--format=%h %s"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(  # noqa: S603
            [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        return f"{head}{' + uncommitted changes' if dirty else ''}"
    except Exception:
        return "?"


def summary(args: argparse.Namespace, results: dict[str, Any]) -> None:
    floor = results.get("floor") or {}
    floor_cpu = floor.get("cpu_ms_per_run")
    shape = "SQLite" if args.sqlite else "Postgres"
    if results.get("redis_url"):
        shape += " + Redis"
    shape += "; one request a run (POST with Accept: text/event-stream)" if args.one_request else ""
    print()
    print(f"tree: {args.root} ({results.get('tree')})")
    print(
        f"shape: {shape}; HARNESS_WORKERS={args.workers}, HARNESS_WORKER_CONCURRENCY={args.worker_concurrency}, "
        f"HARNESS_PRINCIPAL_MAX_INFLIGHT={args.principal_max_inflight}; {os.cpu_count()} cores; "
        f"python {platform.python_version()}"
    )
    if results.get("health"):
        print(f"health: {json.dumps(results['health'])}")
    if results.get("idle"):
        idle = results["idle"]
        print(
            f"idle: harness {idle['harness_cpu_cores'] * 100:.1f}% of a core, pg xact/s "
            f"{fmt(idle['pg_xact_per_s'], '.2f')}, RSS {idle['rss_mib']:.0f} MiB"
        )
    print()
    print(
        "| phase | runs | errors | runs/s | p50 | p99 | harness CPU/run | by process | x floor "
        "| postgres CPU/run | redis CPU/run | client CPU/run | machine CPU/run (cores busy) | other load "
        "| pg xact/run | peak RSS (PSS) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key in ("seq", "conc"):
        r = results.get(key)
        if not r:
            continue
        roles = r["harness_cpu_ms_per_run_by_role"]
        by_process = ", ".join(f"{k} {v:.1f}" for k, v in sorted(roles.items(), key=lambda kv: -kv[1]) if v >= 0.05)
        ratio = r["harness_cpu_ms_per_run"] / floor_cpu if floor_cpu else None
        print(
            f"| {r['phase']} | {r['runs']} | {r['errors']} | {fmt(r['runs_per_s'])} | "
            f"{fmt(r['latency_p50_ms'], '.0f', ' ms')} | {fmt(r['latency_p99_ms'], '.0f', ' ms')} | "
            f"{fmt(r['harness_cpu_ms_per_run'], '.1f', ' ms')} | {by_process} | "
            f"{fmt(ratio, '.1f', 'x')} | {fmt(r['postgres_cpu_ms_per_run'], '.1f', ' ms')} | "
            f"{fmt(r['redis_cpu_ms_per_run'], '.1f', ' ms')} | {fmt(r['client_cpu_ms_per_run'], '.1f', ' ms')} | "
            f"{fmt(r['machine_cpu_ms_per_run'], '.1f', ' ms')} ({fmt(r['machine_busy_cores'], '.2f')}) | "
            f"{fmt(r['other_load_cores'], '.2f', ' cores')} | "
            f"{fmt(r['pg_xact_per_run'], '.1f')} | {r['peak_rss_mib']:.0f} MiB ({fmt(r['peak_pss_mib'], '.0f')}) |"
        )
    slow = results.get("slow")
    if slow:
        print()
        print(
            "| slow model | delay | runs | submitted in | all finished after | max running (sampled / timestamps) "
            "| run p50 | errors | harness CPU/run | peak RSS (PSS) |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        finished = (
            fmt(slow["all_finished_s"], ".1f", " s")
            if slow["all_finished_s"] is not None
            else f"gave up at {slow['gave_up_after_s']:.0f} s ({slow['unfinished_at_give_up']} unfinished)"
        )
        print(
            f"| d | {slow['offline_delay_ms']} ms | {slow['runs']} | {slow['submit_s']:.1f} s | {finished} | "
            f"{slow['max_running_sampled']} / {slow['max_running_from_timestamps']} | "
            f"{fmt(slow['run_duration_p50_s'], '.1f', ' s')} | {slow['errors']} | "
            f"{fmt(slow['harness_cpu_ms_per_run'], '.1f', ' ms')} | "
            f"{slow['peak_rss_mib']:.0f} MiB ({fmt(slow['peak_pss_mib'], '.0f')}) |"
        )
    if floor and "error" not in floor:
        print()
        print("| floor (bare SDK loop, one process) | runs | runs/s | CPU/run |")
        print("|---|---:|---:|---:|")
        print(f"| e: Runner.run | {floor['runs']} | {floor['runs_per_s']:.1f} | {floor['cpu_ms_per_run']:.2f} ms |")
        print(
            f"| e: Runner.run_streamed | {floor['runs']} | {floor['streamed_runs_per_s']:.1f} | "
            f"{floor['streamed_cpu_ms_per_run']:.2f} ms |"
        )
    elif floor:
        print("\nfloor: failed (see stderr)")
    for problem in results.get("problems", []):
        print(f"problem: {problem}")


# --------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--root", type=Path, default=HERE_ROOT, help="the tree whose manage.py to start (default: %(default)s)"
    )
    p.add_argument("--phases", default="a,b,c,d,e", help="which phases to run, comma-separated (default: %(default)s)")
    p.add_argument("--json", type=Path, help="also write the raw figures here")
    p.add_argument("--sqlite", action="store_true", help="embedded shape: SQLite (and no Redis unless --redis on)")
    p.add_argument(
        "--redis", choices=["auto", "on", "off"], default="auto", help="auto: on with Postgres, off with SQLite"
    )
    p.add_argument("--redis-host", default="127.0.0.1")
    p.add_argument("--redis-port", type=int, default=6379)
    p.add_argument("--redis-db", type=int, default=15, help="the Redis database (default: %(default)s)")
    p.add_argument("--pg-host", default="127.0.0.1")
    p.add_argument("--pg-port", type=int, default=5432)
    p.add_argument("--pg-user", default="postgres")
    p.add_argument("--pg-password", default="")
    p.add_argument("--port", type=int, default=0, help="the harness's port (default: a free one)")
    p.add_argument("--workers", type=int, default=2, help="HARNESS_WORKERS (default: %(default)s)")
    p.add_argument(
        "--worker-concurrency", type=int, default=100, help="HARNESS_WORKER_CONCURRENCY (default: %(default)s)"
    )
    p.add_argument(
        "--principal-max-inflight", type=int, default=1000, help="HARNESS_PRINCIPAL_MAX_INFLIGHT (default: %(default)s)"
    )
    p.add_argument("--offline-delay-ms", type=int, default=None, help="HARNESS_OFFLINE_DELAY_MS for phases a-c")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra harness environment")
    p.add_argument(
        "--one-request",
        action="store_true",
        help="make and follow each run with one POST /api/runs (Accept: text/event-stream) instead of "
        "a POST and a GET of its events",
    )
    p.add_argument("--warmup", type=int, default=20, help="warm-up runs (default: %(default)s)")
    p.add_argument("--seq-runs", type=int, default=200, help="runs at concurrency 1 (default: %(default)s)")
    p.add_argument("--conc-runs", type=int, default=600, help="runs at --concurrency (default: %(default)s)")
    p.add_argument("--concurrency", type=int, default=50, help="concurrent clients in phase c (default: %(default)s)")
    p.add_argument("--run-timeout", type=float, default=120, help="seconds a run may take to its final event")
    p.add_argument(
        "--slow-runs", type=int, default=200, help="runs submitted at once in phase d (default: %(default)s)"
    )
    p.add_argument(
        "--slow-delay-ms",
        default="auto",
        help="HARNESS_OFFLINE_DELAY_MS in phase d; 'auto' (default) derives it from --slow-target-seconds by timing "
        "how the tree's offline model applies its delay (falls back to 5000)",
    )
    p.add_argument("--slow-target-seconds", type=float, default=10, help="how long a run should last in phase d")
    p.add_argument("--slow-submit-concurrency", type=int, default=20, help="concurrent POSTs in phase d")
    p.add_argument("--slow-sample-seconds", type=float, default=0.5)
    p.add_argument("--slow-max-wait", type=float, default=300, help="give up (and cancel the rest) after this long")
    p.add_argument("--floor-runs", type=int, default=500, help="bare SDK runs in phase e (default: %(default)s)")
    p.add_argument("--idle-seconds", type=float, default=5, help="measure the idle harness this long (0: skip)")
    p.add_argument("--sample-interval", type=float, default=0.25, help="process tree sampling interval")
    p.add_argument("--tail-seconds", type=float, default=1.0, help="CPU still counted after a phase's last run")
    p.add_argument(
        "--settle-seconds",
        type=float,
        default=11,
        help="wait for Postgres to flush backend statistics (PG15: 10 s idle)",
    )
    p.add_argument("--start-timeout", type=float, default=90, help="seconds for GET /health to answer 200")
    p.add_argument("--ready-timeout", type=float, default=60, help="seconds to wait for the workers' ready lines")
    p.add_argument("--stop-grace", type=float, default=30, help="seconds after SIGINT before SIGKILL")
    p.add_argument("--keep-workdir", action="store_true", help="keep the harness's var dir and logs")
    args = p.parse_args()
    args.root = args.root.resolve()
    args.phases = {x.strip().lower() for x in args.phases.split(",") if x.strip()}
    if not (args.root / "manage.py").exists():
        p.error(f"{args.root} has no manage.py")
    return args


def slow_delay(args: argparse.Namespace, floor: dict[str, Any] | None) -> int:
    if args.slow_delay_ms != "auto":
        return int(args.slow_delay_ms)
    sleeps = (floor or {}).get("delay_sleeps_per_run")
    if not sleeps or sleeps < 0.5:
        log("[d: slow] could not time the offline delay; using 5000 ms")
        return 5000
    sleeps = round(sleeps)
    delay = int(args.slow_target_seconds * 1000 / sleeps)
    log(f"[d: slow] the offline model sleeps ~{sleeps} times per calculator run: delay {delay} ms")
    return delay


def run_main_harness(args: argparse.Namespace, results: dict[str, Any]) -> bool:
    harness = Harness(args, "main", {})
    meters = None
    try:
        try:
            harness.start()
        except (HarnessError, OSError, subprocess.SubprocessError) as exc:
            log(f"ERROR: the harness could not be started: {exc}")
            results["problems"].append(f"main harness did not start: {str(exc)[:500]}")
            return False
        results["health"] = harness.health
        results["main_ready_s"] = harness.ready_s
        results["redis_url"] = harness.redis_url
        log(f"[main] up on {harness.base_url}: {json.dumps(harness.health)}")
        meters = Meters(harness, args.sample_interval)
        if "a" in args.phases:
            results["warmup"] = warm_up(harness, args.warmup, args.run_timeout)
        if args.idle_seconds > 0:
            results["idle"] = idle_phase(harness, meters, args.idle_seconds, min(args.settle_seconds, 11))
        elif harness.postgres is not None and "b" in args.phases:
            time.sleep(args.settle_seconds)
        for key, phase, label, runs, conc in (
            ("seq", "b", "b: concurrency 1", args.seq_runs, 1),
            ("conc", "c", f"c: concurrency {args.concurrency}", args.conc_runs, args.concurrency),
        ):
            if phase not in args.phases:
                continue
            if not harness.alive():
                results["problems"].append(f"harness died before phase {phase}")
                log(f"ERROR: the harness died before phase {phase}:\n{harness.tail()}")
                break
            results[key] = measured_phase(harness, meters, label, runs, conc, args)
        if not harness.alive():
            log(f"ERROR: the harness is not running after the phases:\n{harness.tail()}")
            results["problems"].append("the harness died during the run")
        return True
    finally:
        if meters is not None:
            meters.stop()
        harness.close()


def run_slow_harness(args: argparse.Namespace, results: dict[str, Any], delay: int) -> bool:
    harness = Harness(args, "slow", {"HARNESS_OFFLINE_DELAY_MS": str(delay)})
    meters = None
    try:
        try:
            harness.start()
        except (HarnessError, OSError, subprocess.SubprocessError) as exc:
            log(f"ERROR: the slow-model harness could not be started: {exc}")
            results["problems"].append(f"slow harness did not start: {str(exc)[:500]}")
            return False
        log(f"[slow] up on {harness.base_url} with HARNESS_OFFLINE_DELAY_MS={delay}")
        results["slow_ready_s"] = harness.ready_s
        meters = Meters(harness, args.sample_interval)
        results["slow"] = slow_phase(harness, meters, args, delay)
        if not harness.alive():
            log(f"ERROR: the slow-model harness died:\n{harness.tail()}")
            results["problems"].append("the slow-model harness died")
        return True
    finally:
        if meters is not None:
            meters.stop()
        harness.close()


def main() -> int:
    global ONE_REQUEST
    args = parse_args()
    ONE_REQUEST = args.one_request
    results: dict[str, Any] = {
        "tree": tree_description(args.root),
        "config": {
            k: (str(v) if isinstance(v, Path) else sorted(v) if isinstance(v, set) else v)
            for k, v in vars(args).items()
        },
        "problems": [],
        "started_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    log(f"bench/throughput.py against {args.root} ({results['tree']})")
    started = True

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        # The floor first: it is quick, and it tells the slow phase how the offline delay applies.
        if "e" in args.phases or ("d" in args.phases and args.slow_delay_ms == "auto"):
            try:
                results["floor"] = floor_phase(args)
            except Exception as exc:
                log(f"[e: floor] failed: {exc}")
                results["floor"] = {"phase": "e: floor", "error": str(exc)}
        if args.phases & {"a", "b", "c"}:
            started = run_main_harness(args, results) and started
        if "d" in args.phases:
            started = run_slow_harness(args, results, slow_delay(args, results.get("floor"))) and started
        if "e" not in args.phases:
            results.pop("floor", None)
    except KeyboardInterrupt:
        log("interrupted; the harness was stopped and its database dropped")
        results["problems"].append("interrupted")
    finally:
        results["finished_at"] = dt.datetime.now(dt.UTC).isoformat()
        summary(args, results)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str))
            log(f"wrote {args.json}")
    return 0 if started else 1


if __name__ == "__main__":
    sys.exit(main())
