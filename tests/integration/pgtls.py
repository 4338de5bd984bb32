"""A Neon-shaped database for tests: a private Postgres cluster that speaks only TLS and
SCRAM-SHA-256 (the direct endpoint), with PgBouncer in transaction mode in front of it, also
TLS-only with SCRAM (the pooled endpoint).

Both run as the `postgres` system user (neither runs as root) from a temporary directory, on
free loopback ports, with a self-signed certificate made here; `stop()` stops both and removes
the directory. Nothing is shared with the machine's own Postgres.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.integration.harness import free_port
from tests.integration.pgbin import postgres_bin

ROLE, PASSWORD, DATABASE = "harness_app", "pooled-Pa55word-0d1e", "harness"


def available() -> str | None:
    """Why this cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (to run Postgres and PgBouncer as the postgres user)"
    try:
        pwd.getpwnam("postgres")
        postgres_bin("initdb")
    except (KeyError, FileNotFoundError) as exc:
        return f"needs the Postgres server package: {exc}"
    if shutil.which("pgbouncer") is None:
        return "needs pgbouncer (apt-get install pgbouncer)"
    if shutil.which("openssl") is None:
        return "needs openssl"
    return None


class NeonLike:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="harness-neonlike-"))
        self.pg_port = free_port()
        self.pool_port = free_port()
        self.user = pwd.getpwnam("postgres")
        self.bouncer: subprocess.Popen[bytes] | None = None
        self.started = False

    # --- URLs -------------------------------------------------------------------------
    def url(self, *, pooled: bool, **params: str) -> str:
        port = self.pool_port if pooled else self.pg_port
        query = "&".join(f"{key}={value}" for key, value in {"sslmode": "require", **params}.items())
        return f"postgres://{ROLE}:{PASSWORD}@127.0.0.1:{port}/{DATABASE}?{query}"

    # --- lifecycle --------------------------------------------------------------------
    def _as_postgres(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 (our own fixed commands)
            ["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True, check=True, timeout=60
        )

    def _own(self, path: Path, mode: int) -> None:
        os.chown(path, self.user.pw_uid, self.user.pw_gid)
        os.chmod(path, mode)

    def start(self) -> NeonLike:
        self._own(self.dir, 0o700)
        cert, key = self.dir / "server.crt", self.dir / "server.key"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"]
            + ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
            capture_output=True,
            check=True,
            timeout=60,
        )
        self._own(cert, 0o644)
        self._own(key, 0o600)
        data = self.dir / "data"
        pwfile = self.dir / "superuser.pw"
        pwfile.write_text("superuser-pw-7f3a\n")
        self._own(pwfile, 0o600)
        self._as_postgres(
            postgres_bin("initdb"),
            "-D",
            str(data),
            "--auth=scram-sha-256",
            "--username=postgres",
            f"--pwfile={pwfile}",
            "--no-sync",
        )
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.pg_port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.dir}'\n"
                f"ssl = on\nssl_cert_file = '{cert}'\nssl_key_file = '{key}'\n"
                "password_encryption = 'scram-sha-256'\nmax_connections = 200\nfsync = off\n"
            )
        # TLS only: a connection without it is refused, as Neon's are.
        (data / "pg_hba.conf").write_text(
            "local all postgres scram-sha-256\n"
            "hostssl all all 127.0.0.1/32 scram-sha-256\n"
            "hostnossl all all 0.0.0.0/0 reject\n"
        )
        self._as_postgres(postgres_bin("pg_ctl"), "-D", str(data), "-l", str(self.dir / "postgres.log"), "-w", "start")
        self.started = True
        self._psql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}' CREATEDB")
        self._psql(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")
        self._start_bouncer(cert, key)
        return self

    def _psql(self, sql: str) -> None:
        subprocess.run(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql]
            + [f"host={self.dir} port={self.pg_port} user=postgres dbname=postgres"],
            env={**os.environ, "PGPASSWORD": "superuser-pw-7f3a"},
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )

    def _start_bouncer(self, cert: Path, key: Path) -> None:
        userlist = self.dir / "userlist.txt"
        userlist.write_text(f'"{ROLE}" "{PASSWORD}"\n')
        self._own(userlist, 0o600)
        ini = self.dir / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"{DATABASE} = host=127.0.0.1 port={self.pg_port} dbname={DATABASE}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.pool_port}\nunix_socket_dir =\n"
            "pool_mode = transaction\nauth_type = scram-sha-256\n"
            f"auth_file = {userlist}\n"
            "max_client_conn = 500\ndefault_pool_size = 20\n"
            f"client_tls_sslmode = require\nclient_tls_cert_file = {cert}\nclient_tls_key_file = {key}\n"
            "server_tls_sslmode = require\n"
            f"logfile = {self.dir / 'pgbouncer.log'}\npidfile = {self.dir / 'pgbouncer.pid'}\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
        )
        self._own(ini, 0o600)
        self.bouncer = subprocess.Popen(  # noqa: S603
            ["runuser", "-u", "postgres", "--", "pgbouncer", str(ini)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        import psycopg

        deadline = time.monotonic() + 20
        while True:
            try:
                with psycopg.connect(self.url(pooled=True), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline or self.bouncer.poll() is not None:
                    log = (self.dir / "pgbouncer.log").read_text() if (self.dir / "pgbouncer.log").exists() else ""
                    raise RuntimeError(f"pgbouncer did not start:\n{log}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.bouncer is not None:
            try:
                os.killpg(self.bouncer.pid, 15)
                self.bouncer.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.bouncer.pid, 9)
            self.bouncer = None
        if self.started:
            subprocess.run(
                ["runuser", "-u", "postgres", "--", postgres_bin("pg_ctl"), "-D", str(self.dir / "data")]
                + ["-m", "immediate", "-w", "stop"],
                capture_output=True,
                timeout=60,
                check=False,
            )
            self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)
