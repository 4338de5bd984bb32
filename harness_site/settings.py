"""Settings for the agent harness, read from the environment only.

A local `.env` file (created by `make run` from `.env.example`) is loaded first;
real environment variables always win over it. Every variable is documented in
`.env.example`.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import dj_database_url
import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured

from billing.pricing import parse_overrides
from harness_site.env import (
    env_bool,
    env_float,
    env_int,
    env_list,
    env_secret,
    env_str,
    env_usd,
    load_env_file,
    redis_url_with_timeouts,
)

# Lets the typed admin (ModelAdmin[Run]) and QuerySet[Run] work at run time.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("HARNESS_VAR_DIR") or BASE_DIR / "var")

if not env_bool("HARNESS_IGNORE_ENV_FILE"):
    load_env_file(BASE_DIR / ".env")

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_secret("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set it in the environment (or SECRET_KEY_FILE), "
            "or set DEBUG=true for local development."
        )
    SECRET_KEY = "insecure-local-development-key-only-used-when-DEBUG-is-on"  # noqa: S105 (DEBUG only)

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ("localhost", "127.0.0.1", "[::1]"))
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
# Without SITE_URL, links point at localhost on PORT (runharness sets it for its children).
SITE_URL = env_str("SITE_URL", f"http://localhost:{env_int('PORT', 8000, minimum=1)}").rstrip("/")
if env_bool("SECURE_PROXY_SSL_HEADER"):
    # Azure Container Apps terminates TLS at its ingress and forwards the scheme.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # django-ninja's own static files: /api/docs loads Swagger UI from them, not from a CDN.
    "ninja",
    "django_q",
    "harness_site.apps.HarnessSiteConfig",
    "harness",
    "audit",
    "accounts",
    "runs",
    "execution",
    "artifacts",
    "sandboxes",
    "evals",
    "billing",
    "approvals",
    "feedback",
]

MIDDLEWARE = [
    "harness_site.middleware.RequestLogMiddleware",
    "harness_site.middleware.DatabaseUnavailableMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "harness_site.urls"
WSGI_APPLICATION = "harness_site.wsgi.application"
ASGI_APPLICATION = "harness_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------
# DATABASE_URL: the app's connection (Neon: the pooled endpoint).
# DIRECT_DATABASE_URL: used by `manage.py migrate` when set (Neon: the direct
# endpoint; pgbouncer in transaction mode cannot run migrations safely).


def _database(url: str) -> dict[str, Any]:
    config: dict[str, Any] = dict(dj_database_url.parse(url, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0)))
    if config["ENGINE"] == "django.db.backends.sqlite3":
        Path(config["NAME"]).parent.mkdir(parents=True, exist_ok=True)
        # Web and worker processes share the file: WAL lets readers run beside the
        # writer, IMMEDIATE takes the write lock up front instead of failing with
        # "database is locked" on upgrade, and the timeout waits out short writes.
        config["OPTIONS"] = {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        }
    else:
        # libpq's own bounds, never sent to the server (so PgBouncer and Neon's pooler accept
        # them); what the URL says itself wins. A server that does not answer a new connection
        # fails it after the connect timeout instead of hanging the request, the worker's
        # claim or `migrate`; one that stops acknowledging (a partition, a vanished host) fails
        # the statement waiting on it after the TCP timeout, and keepalives find an idle or
        # waiting connection whose peer is gone within about twice that, where the kernel's
        # defaults take some fifteen minutes.
        options = config.setdefault("OPTIONS", {})
        options.setdefault("connect_timeout", DATABASE_CONNECT_TIMEOUT_SECONDS)
        options.setdefault("tcp_user_timeout", DATABASE_TCP_TIMEOUT_SECONDS * 1000)
        options.setdefault("keepalives", 1)
        options.setdefault("keepalives_idle", DATABASE_TCP_TIMEOUT_SECONDS)
        options.setdefault("keepalives_interval", max(1, DATABASE_TCP_TIMEOUT_SECONDS // 3))
        options.setdefault("keepalives_count", 3)
        config["CONN_HEALTH_CHECKS"] = True
        if DATABASE_POOL_SIZE and not config.get("CONN_MAX_AGE"):
            # One pool per process bounds its connections: a request or a worker thread
            # borrows one and gives it back; past `timeout` seconds of waiting the API
            # answers 503 with Retry-After (harness_site.middleware). Django refuses a pool
            # beside persistent connections (DATABASE_CONN_MAX_AGE > 0).
            config["OPTIONS"]["pool"] = {
                "min_size": 1,
                "max_size": DATABASE_POOL_SIZE,
                "timeout": DATABASE_POOL_TIMEOUT_SECONDS,
                "name": "harness",
            }
            # A health check would cost a round trip (an empty statement) per checkout: the
            # pool discards a connection returned broken, and the call that met it answers 503.
            config["CONN_HEALTH_CHECKS"] = False
    return config


# Postgres connections per process (0: no pool, a connection per thread). Web processes +
# worker processes + job processes, each times this, must stay under the server's limit.
DATABASE_POOL_SIZE = env_int("DATABASE_POOL_SIZE", 8, minimum=0)
DATABASE_POOL_TIMEOUT_SECONDS = env_float("DATABASE_POOL_TIMEOUT_SECONDS", 5, minimum=0.1)
# Seconds a new Postgres connection may take (libpq counts whole seconds, at least 2).
DATABASE_CONNECT_TIMEOUT_SECONDS = env_int("DATABASE_CONNECT_TIMEOUT_SECONDS", 10, minimum=2)
# Seconds a Postgres server may leave sent data unacknowledged before the connection fails.
DATABASE_TCP_TIMEOUT_SECONDS = env_int("DATABASE_TCP_TIMEOUT_SECONDS", 30, minimum=1)
# How long a migration that swaps indexes (common.plain_indexes) waits for a table's lock
# before it gives up whole, so that the app's queries never queue behind it for longer.
DATABASE_MIGRATE_LOCK_TIMEOUT_SECONDS = env_int("DATABASE_MIGRATE_LOCK_TIMEOUT_SECONDS", 10, minimum=1)
# What a 503 from an unreachable or exhausted database tells clients to wait.
HARNESS_RETRY_AFTER_SECONDS = env_int("HARNESS_RETRY_AFTER_SECONDS", 2, minimum=1)
# How long an Idempotency-Key on POST /api/runs is remembered, per principal.
HARNESS_IDEMPOTENCY_HOURS = env_int("HARNESS_IDEMPOTENCY_HOURS", 24, minimum=1)

DATABASE_URL = env_secret("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'harness.sqlite3'}"
DATABASES = {"default": _database(DATABASE_URL)}
DIRECT_DATABASE_URL = env_secret("DIRECT_DATABASE_URL")
if DIRECT_DATABASE_URL:
    DATABASES["direct"] = _database(DIRECT_DATABASE_URL)
    # DATABASE_URL is then a transaction-mode pooler (Neon's pooled endpoint, PgBouncer): a
    # server-side cursor would outlive the transaction that holds its server connection.
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
    DATABASES["direct"]["TEST"] = {"MIRROR": "default"}
if env_str("TEST_DATABASE_NAME"):
    DATABASES["default"]["TEST"] = {"NAME": env_str("TEST_DATABASE_NAME")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
# Serve admin assets straight from the installed apps: no collectstatic step is
# needed for `make run`, and the container image runs collectstatic anyway.
WHITENOISE_USE_FINDERS = True
warnings.filterwarnings("ignore", message="No directory at")

DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("HARNESS_MAX_REQUEST_BYTES", 1_048_576, minimum=1024)

# --- Models and agents ----------------------------------------------------
OPENAI_API_KEY = env_secret("OPENAI_API_KEY")
# Runs that name no model use HARNESS_MODEL; unset, it is gpt-5.4-mini with OPENAI_API_KEY and
# the offline model without one, so the first run on a fresh install works.
HARNESS_MODEL = env_str("HARNESS_MODEL", "gpt-5.4-mini" if OPENAI_API_KEY else "offline")
HARNESS_ALLOWED_MODELS = sorted({HARNESS_MODEL, "offline", *env_list("HARNESS_ALLOWED_MODELS")})
OPENAI_BASE_URL = env_str("OPENAI_BASE_URL")
HARNESS_OPENAI_API = env_str("HARNESS_OPENAI_API", "responses")
if HARNESS_OPENAI_API not in {"responses", "chat_completions"}:
    raise ImproperlyConfigured(
        f"HARNESS_OPENAI_API: expected 'responses' or 'chat_completions', got {HARNESS_OPENAI_API!r}"
    )
HARNESS_OPENAI_TRACING = env_bool("HARNESS_OPENAI_TRACING", False)
HARNESS_TRACE_INCLUDE_SENSITIVE_DATA = env_bool("HARNESS_TRACE_INCLUDE_SENSITIVE_DATA", True)
HARNESS_OFFLINE_DELAY_MS = env_int("HARNESS_OFFLINE_DELAY_MS", 0, minimum=0)
# Telemetry is configured by the standard OTEL_* variables (harness_site/telemetry.py);
# the admin links a run's trace to this Phoenix (https://phoenix.example.com).
PHOENIX_URL = env_str("PHOENIX_URL").rstrip("/")

# --- Runs -----------------------------------------------------------------
HARNESS_MAX_INPUT_CHARS = env_int("HARNESS_MAX_INPUT_CHARS", 32_000, minimum=1)
HARNESS_RUN_TIMEOUT_SECONDS = env_float("HARNESS_RUN_TIMEOUT_SECONDS", 600, minimum=1)
HARNESS_RUN_MAX_TURNS = env_int("HARNESS_RUN_MAX_TURNS", 10, minimum=1)

# --- Cost and budgets ------------------------------------------------------
# The most any one run may spend, use or take (a request may ask for less); empty: no maximum.
HARNESS_RUN_MAX_COST_USD = env_usd("HARNESS_RUN_MAX_COST_USD", "1.00")
HARNESS_RUN_MAX_TOKENS = env_int("HARNESS_RUN_MAX_TOKENS", 1_000_000, minimum=1)
HARNESS_RUN_MAX_SANDBOX_SECONDS = env_float("HARNESS_RUN_MAX_SANDBOX_SECONDS", 600, minimum=1)
# Prices for models the genai-prices table does not know: inline JSON or a JSON file's path,
# {"model": {"input": 0.75, "output": 4.5, "cached_input": 0.075}} in USD per million tokens.
HARNESS_MODEL_PRICES = env_str("HARNESS_MODEL_PRICES")
parse_overrides(HARNESS_MODEL_PRICES)  # a bad price table fails at boot, naming what is wrong
HARNESS_RUN_LEASE_SECONDS = env_float("HARNESS_RUN_LEASE_SECONDS", 30, minimum=1)
HARNESS_RUN_MAX_ATTEMPTS = env_int("HARNESS_RUN_MAX_ATTEMPTS", 1, minimum=1)
HARNESS_CANCEL_CHECK_SECONDS = env_float("HARNESS_CANCEL_CHECK_SECONDS", 0.25, minimum=0.01)
HARNESS_REQUEUE_AFTER_SECONDS = env_float("HARNESS_REQUEUE_AFTER_SECONDS", 120, minimum=1)
HARNESS_REAPER_INTERVAL_MINUTES = env_int("HARNESS_REAPER_INTERVAL_MINUTES", 1, minimum=1)

# --- Artifacts: object store ------------------------------------------------
# With R2_BUCKET (+ R2_ACCOUNT_ID or S3_ENDPOINT_URL, R2_ACCESS_KEY_ID, R2_SECRET_ACCESS_KEY)
# artifacts live in Cloudflare R2 (any S3-compatible store); otherwise on the local disk
# under var/artifacts, with harness-signed URLs that follow the same rules.
R2_BUCKET = env_str("R2_BUCKET")
R2_ACCOUNT_ID = env_str("R2_ACCOUNT_ID")
S3_ENDPOINT_URL = env_str("S3_ENDPOINT_URL") or (
    f"https://{R2_ACCOUNT_ID}.r2.cloudflarestorage.com" if R2_ACCOUNT_ID else ""
)
R2_ACCESS_KEY_ID = env_secret("R2_ACCESS_KEY_ID")
R2_SECRET_ACCESS_KEY = env_secret("R2_SECRET_ACCESS_KEY")
R2_REGION = env_str("R2_REGION", "auto")
if R2_BUCKET and not (S3_ENDPOINT_URL and R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY):
    raise ImproperlyConfigured(
        "R2_BUCKET is set but the store is incomplete: set R2_ACCOUNT_ID (or S3_ENDPOINT_URL), "
        "R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY."
    )
ARTIFACTS_URL_EXPIRY_SECONDS = env_int("ARTIFACTS_URL_EXPIRY_SECONDS", 900, minimum=1)
ARTIFACTS_URL_MAX_EXPIRY_SECONDS = env_int("ARTIFACTS_URL_MAX_EXPIRY_SECONDS", 3600, minimum=1)
ARTIFACTS_MAX_BYTES = env_int("ARTIFACTS_MAX_BYTES", 50 * 2**20, minimum=1)
ARTIFACTS_UPLOAD_WINDOW_SECONDS = env_int("ARTIFACTS_UPLOAD_WINDOW_SECONDS", 3600, minimum=60)
ARTIFACTS_RETENTION_DAYS = env_int("ARTIFACTS_RETENTION_DAYS", 30, minimum=0)
ARTIFACTS_RETENTION_INTERVAL_MINUTES = env_int("ARTIFACTS_RETENTION_INTERVAL_MINUTES", 60, minimum=1)


def artifact_storage_config(
    *, bucket: str, endpoint: str, access_key: str, secret_key: str, region: str
) -> dict[str, Any]:
    """django-storages' S3 backend for R2 (or any S3-compatible store)."""
    from botocore.config import Config

    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": bucket,
            "endpoint_url": endpoint,
            "access_key": access_key,
            "secret_key": secret_key,
            "region_name": region,
            "default_acl": None,
            "file_overwrite": True,
            "querystring_expire": ARTIFACTS_URL_EXPIRY_SECONDS,
            # /health checks the bucket live: fail fast rather than hang the probe.
            "client_config": Config(
                connect_timeout=3,
                read_timeout=10,
                retries={"max_attempts": 2},
                signature_version="s3v4",
                s3={"addressing_style": "path"},
            ),
        },
    }


STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "artifacts": (
        artifact_storage_config(
            bucket=R2_BUCKET,
            endpoint=S3_ENDPOINT_URL,
            access_key=R2_ACCESS_KEY_ID,
            secret_key=R2_SECRET_ACCESS_KEY,
            region=R2_REGION,
        )
        if R2_BUCKET
        else {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(VAR_DIR / "artifacts")},
        }
    ),
}

# --- Sandboxes: where agents' commands run ------------------------------------
# SANDBOX_PROVIDER: "local" (bubblewrap), "e2b", or empty to pick: e2b when E2B_API_KEY
# is set, else local when bwrap is installed. "unconfined" runs commands on the host
# with no isolation and needs HARNESS_SANDBOX_ALLOW_UNCONFINED=true (development only).
SANDBOX_PROVIDER = env_str("SANDBOX_PROVIDER").lower()
if SANDBOX_PROVIDER not in {"", "local", "e2b", "unconfined"}:
    raise ImproperlyConfigured(
        f"SANDBOX_PROVIDER: expected 'local', 'e2b', 'unconfined' or empty, got {SANDBOX_PROVIDER!r}"
    )
HARNESS_SANDBOX_ALLOW_UNCONFINED = env_bool("HARNESS_SANDBOX_ALLOW_UNCONFINED", False)
E2B_API_KEY = env_secret("E2B_API_KEY")
E2B_TEMPLATE = env_str("E2B_TEMPLATE")
# One root per instance (named after its var/ directory): two harnesses on one host never share
# workspaces, and each one's reaper only ever looks at its own.
HARNESS_SANDBOX_ROOT = Path(
    env_str("HARNESS_SANDBOX_ROOT")
    or Path(tempfile.gettempdir())
    / f"harness-sandboxes-{hashlib.sha256(str(VAR_DIR.resolve()).encode()).hexdigest()[:12]}"
)
# When the harness runs as root, sandboxed commands run as this unprivileged host uid.
HARNESS_SANDBOX_UID = env_int("HARNESS_SANDBOX_UID", 65534, minimum=1)
HARNESS_SANDBOX_TIME_BUDGET_SECONDS = env_int("HARNESS_SANDBOX_TIME_BUDGET_SECONDS", 900, minimum=5)
HARNESS_SANDBOX_COMMAND_TIMEOUT_SECONDS = env_int("HARNESS_SANDBOX_COMMAND_TIMEOUT_SECONDS", 60, minimum=1)
HARNESS_SANDBOX_CPU_SECONDS = env_int("HARNESS_SANDBOX_CPU_SECONDS", 60, minimum=1)
HARNESS_SANDBOX_MEMORY_MB = env_int("HARNESS_SANDBOX_MEMORY_MB", 1024, minimum=64)
HARNESS_SANDBOX_MAX_PROCESSES = env_int("HARNESS_SANDBOX_MAX_PROCESSES", 32, minimum=4)
HARNESS_SANDBOX_MAX_FILE_MB = env_int("HARNESS_SANDBOX_MAX_FILE_MB", 64, minimum=1)
HARNESS_SANDBOX_TMP_MB = env_int("HARNESS_SANDBOX_TMP_MB", 256, minimum=1)
# The memory of one sandbox, all its processes together: its cgroup's memory.max where the
# kernel gives the harness a cgroup v2 per sandbox. Without one (cgroup v1 hosts, containers),
# each process's address space is cut to TOTAL / MAX_PROCESSES (when that is below
# HARNESS_SANDBOX_MEMORY_MB), so MAX_PROCESSES processes together stay within it.
HARNESS_SANDBOX_TOTAL_MEMORY_MB = env_int("HARNESS_SANDBOX_TOTAL_MEMORY_MB", 4096, minimum=64)
if HARNESS_SANDBOX_TOTAL_MEMORY_MB // HARNESS_SANDBOX_MAX_PROCESSES < 32:
    raise ImproperlyConfigured(
        "HARNESS_SANDBOX_TOTAL_MEMORY_MB / HARNESS_SANDBOX_MAX_PROCESSES: without a cgroup each process gets "
        f"{HARNESS_SANDBOX_TOTAL_MEMORY_MB // HARNESS_SANDBOX_MAX_PROCESSES} MB, and a process needs at least 32; "
        "raise the total or lower the process limit."
    )
# A delegated cgroup v2 directory for the per-sandbox cgroups (empty: /sys/fs/cgroup/harness-sandboxes
# when the harness runs as root on a cgroup v2 host).
HARNESS_SANDBOX_CGROUP_ROOT = env_str("HARNESS_SANDBOX_CGROUP_ROOT")
if HARNESS_SANDBOX_CGROUP_ROOT and not HARNESS_SANDBOX_CGROUP_ROOT.startswith("/sys/fs/cgroup/"):
    raise ImproperlyConfigured(
        f"HARNESS_SANDBOX_CGROUP_ROOT: expected a directory under /sys/fs/cgroup/, got {HARNESS_SANDBOX_CGROUP_ROOT!r}"
    )
# Each local workspace is a filesystem of this size of its own (an ext4 image on a loop device,
# mounted by the harness), so a sandbox cannot fill the host's disk. 0 turns the quota off.
HARNESS_SANDBOX_DISK_MB = env_int("HARNESS_SANDBOX_DISK_MB", 1024, minimum=0)
if 0 < HARNESS_SANDBOX_DISK_MB < 16:
    raise ImproperlyConfigured(f"HARNESS_SANDBOX_DISK_MB: 0 (no quota) or at least 16, got {HARNESS_SANDBOX_DISK_MB}")
HARNESS_SANDBOX_NETWORK = env_str("HARNESS_SANDBOX_NETWORK", "deny").lower()
if HARNESS_SANDBOX_NETWORK not in {"deny", "allow"}:
    raise ImproperlyConfigured(f"HARNESS_SANDBOX_NETWORK: expected 'deny' or 'allow', got {HARNESS_SANDBOX_NETWORK!r}")
HARNESS_SANDBOX_OUTPUT_MAX_FILES = env_int("HARNESS_SANDBOX_OUTPUT_MAX_FILES", 20, minimum=0)
# Host variables passed into sandboxes by name. Nothing else of the harness's environment
# enters a sandbox; names that look like credentials are refused.
HARNESS_SANDBOX_ENV_ALLOWLIST = env_list("HARNESS_SANDBOX_ENV_ALLOWLIST")
_SECRET_LIKE = ("KEY", "SECRET", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL", "DATABASE_URL", "REDIS_URL", "DSN")
for _name in HARNESS_SANDBOX_ENV_ALLOWLIST:
    if any(marker in _name.upper() for marker in _SECRET_LIKE):
        raise ImproperlyConfigured(
            f"HARNESS_SANDBOX_ENV_ALLOWLIST: {_name!r} looks like a credential; secrets never enter a sandbox."
        )
HARNESS_SANDBOX_REAPER_INTERVAL_MINUTES = env_int("HARNESS_SANDBOX_REAPER_INTERVAL_MINUTES", 1, minimum=1)
# After a run ends, its worker has this long to save outputs and destroy the sandbox
# before the reaper steps in.
HARNESS_SANDBOX_CLOSE_GRACE_SECONDS = env_int("HARNESS_SANDBOX_CLOSE_GRACE_SECONDS", 60, minimum=0)

# --- Human approval of tool calls (approvals/) ---------------------------------
# A tool call waiting for a person expires after this long: its run fails, saying so.
HARNESS_APPROVAL_TIMEOUT_SECONDS = env_int("HARNESS_APPROVAL_TIMEOUT_SECONDS", 86_400, minimum=1)
# The longest message a decision may carry (a rejection's message is what the model reads).
HARNESS_APPROVAL_MESSAGE_MAX_CHARS = env_int("HARNESS_APPROVAL_MESSAGE_MAX_CHARS", 2000, minimum=1)
# Whether the sandbox agents' exec_command waits for a person before each command.
HARNESS_SANDBOX_APPROVAL = env_str("HARNESS_SANDBOX_APPROVAL", "never").lower()
if HARNESS_SANDBOX_APPROVAL not in {"never", "always"}:
    raise ImproperlyConfigured(
        f"HARNESS_SANDBOX_APPROVAL: expected 'never' or 'always', got {HARNESS_SANDBOX_APPROVAL!r}"
    )
# The refunds agent's refund tool waits for a person above this amount (USD).
HARNESS_REFUND_APPROVAL_OVER_USD = env_float("HARNESS_REFUND_APPROVAL_OVER_USD", 100, minimum=0)

# --- Agents ----------------------------------------------------------------------
# The modules (dotted paths, comma-separated) that declare the agents the workers run
# (execution/catalog.py); the built-in demo agents by default. Only execution processes import them.
HARNESS_AGENT_MODULES = env_str("HARNESS_AGENT_MODULES", "runs.registry")
# How long the web process trusts what it last read of the published registry (seconds).
HARNESS_AGENT_REGISTRY_TTL_SECONDS = env_float("HARNESS_AGENT_REGISTRY_TTL_SECONDS", 2.0, minimum=0)
# What a run's own offline script (model "offline") may hold: steps, and characters of JSON.
HARNESS_OFFLINE_SCRIPT_MAX_STEPS = env_int("HARNESS_OFFLINE_SCRIPT_MAX_STEPS", 50, minimum=1)
HARNESS_OFFLINE_SCRIPT_MAX_CHARS = env_int("HARNESS_OFFLINE_SCRIPT_MAX_CHARS", 64_000, minimum=100)

# --- Evals ----------------------------------------------------------------------
# `manage.py eval` (and the nightly eval) fails when fewer than this share of cases pass.
HARNESS_EVAL_MIN_PASS_RATE = env_float("HARNESS_EVAL_MIN_PASS_RATE", 1.0, minimum=0)
if HARNESS_EVAL_MIN_PASS_RATE > 1:
    raise ImproperlyConfigured("HARNESS_EVAL_MIN_PASS_RATE: a share between 0 and 1, e.g. 0.95")
# The nightly eval (replay mode, every active case) runs at this UTC hour.
HARNESS_EVAL_NIGHTLY_HOUR = env_int("HARNESS_EVAL_NIGHTLY_HOUR", 3, minimum=0)
if HARNESS_EVAL_NIGHTLY_HOUR > 23:
    raise ImproperlyConfigured("HARNESS_EVAL_NIGHTLY_HOUR: an hour between 0 and 23")
# Comparisons in the admin: the characters of each text an output or version diff compares
# (difflib's time grows with the square of the lines), the eval runs a pass-rate trend
# shows, and the versions of a golden case whose differences its page shows.
HARNESS_EVAL_DIFF_MAX_CHARS = env_int("HARNESS_EVAL_DIFF_MAX_CHARS", 20_000, minimum=100)
HARNESS_EVAL_TREND_RUNS = env_int("HARNESS_EVAL_TREND_RUNS", 30, minimum=2)
HARNESS_EVAL_VERSION_DIFFS = env_int("HARNESS_EVAL_VERSION_DIFFS", 20, minimum=1)

# --- Feedback ---------------------------------------------------------------------
# The longest comment a feedback may carry (API and admin); longer is refused (422).
HARNESS_FEEDBACK_MAX_COMMENT_CHARS = env_int("HARNESS_FEEDBACK_MAX_COMMENT_CHARS", 2000, minimum=1)
# Runs per page of the admin's "needs review" queue.
HARNESS_REVIEW_QUEUE_PAGE_SIZE = env_int("HARNESS_REVIEW_QUEUE_PAGE_SIZE", 50, minimum=1)

# --- Fleet dashboard (admin index, GET /api/stats) --------------------------------
# How many of the latest failures the dashboard and /api/stats list.
HARNESS_DASHBOARD_FAILURES = env_int("HARNESS_DASHBOARD_FAILURES", 10, minimum=1)
if HARNESS_DASHBOARD_FAILURES > 100:
    raise ImproperlyConfigured("HARNESS_DASHBOARD_FAILURES: at most 100")

# --- Redis ---------------------------------------------------------------------
# The run queue, live streams, the cache and the per-key counts; unset: none of them needs it.
REDIS_URL = env_secret("REDIS_URL")
# How long any Redis client of the harness waits for a connection or an answer before it treats
# Redis as unavailable, so a Redis that stops answering (stalled, or a network black hole) costs
# a request or a publish this long, never for ever. More than the run queue's 1 s blocking read
# (and than any other blocking read the clients make: the pub/sub layer's reads set their own).
HARNESS_REDIS_TIMEOUT_SECONDS = env_float("HARNESS_REDIS_TIMEOUT_SECONDS", 3, minimum=2)

# --- Live streams ----------------------------------------------------------
# With Redis, live events travel over a channel layer between the worker and the
# web processes; without it, streams follow the durable log in the database.
CHANNEL_LAYERS = (
    {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [redis_url_with_timeouts(REDIS_URL, HARNESS_REDIS_TIMEOUT_SECONDS)]},
        }
    }
    if REDIS_URL
    else {}
)
HARNESS_STREAM_POLL_SECONDS = env_float("HARNESS_STREAM_POLL_SECONDS", 0.1, minimum=0.01)
HARNESS_STREAM_KEEPALIVE_SECONDS = env_float("HARNESS_STREAM_KEEPALIVE_SECONDS", 15, minimum=0.1)
HARNESS_STREAM_COALESCE_MS = env_int("HARNESS_STREAM_COALESCE_MS", 25, minimum=0)
HARNESS_STREAM_TOKEN_SECONDS = env_int("HARNESS_STREAM_TOKEN_SECONDS", 300, minimum=10)
# A stream more batches behind than this re-reads the log instead of queueing more (runs/streams.py).
HARNESS_STREAM_MAX_PENDING_BATCHES = env_int("HARNESS_STREAM_MAX_PENDING_BATCHES", 256, minimum=1)
# How long a new stream waits for Redis to confirm its run's subscription before it replays the log.
HARNESS_STREAM_SUBSCRIBE_WAIT_SECONDS = env_float("HARNESS_STREAM_SUBSCRIBE_WAIT_SECONDS", 1.0, minimum=0)
# daphne pings every WebSocket this often (keepalive through proxies) and drops a client
# that has not answered within the timeout: a client that stops reading is dropped too.
HARNESS_WS_PING_SECONDS = env_int("HARNESS_WS_PING_SECONDS", 20, minimum=1)
HARNESS_WS_PING_TIMEOUT_SECONDS = env_int("HARNESS_WS_PING_TIMEOUT_SECONDS", 30, minimum=1)
# An HTTP client (an SSE stream) with more than this unread, beyond the kernel's own socket
# buffer, that takes nothing for HARNESS_STREAM_STALL_SECONDS is dropped (harness_site/webserver.py).
HARNESS_STREAM_MAX_BUFFER_BYTES = env_int("HARNESS_STREAM_MAX_BUFFER_BYTES", 1_048_576, minimum=1024)
HARNESS_STREAM_STALL_SECONDS = env_float("HARNESS_STREAM_STALL_SECONDS", 30, minimum=0.1)

# --- Run engine and background jobs -----------------------------------------
# Runs execute in worker processes (`manage.py runworker`), each hosting up to
# HARNESS_WORKER_CONCURRENCY runs on one asyncio event loop (execution/engine.py).
# Scheduled jobs (reaper, retention, nightly eval) run in a small django-q2 cluster.
# What this deployment's keys in Redis (its run queue, jobs queue, cache and per-key counts) start
# with, so that deployments sharing one Redis database never take each other's runs or jobs.
HARNESS_REDIS_PREFIX = env_str("HARNESS_REDIS_PREFIX", "harness")
if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}", HARNESS_REDIS_PREFIX):
    raise ImproperlyConfigured(
        "HARNESS_REDIS_PREFIX: 1 to 40 letters, digits, '.', '_' or '-', starting with a letter or digit; "
        f"got {HARNESS_REDIS_PREFIX!r}"
    )
HARNESS_WORKERS = env_int("HARNESS_WORKERS", 1, minimum=1)
HARNESS_WORKER_CONCURRENCY = env_int("HARNESS_WORKER_CONCURRENCY", 100, minimum=1)
# Threads for synchronous tools (the SDK runs them with asyncio.to_thread): one per run
# slot, so a tool that blocks never waits behind another run's. Created only when used.
HARNESS_WORKER_THREADS = env_int("HARNESS_WORKER_THREADS", HARNESS_WORKER_CONCURRENCY, minimum=1)
# Threads that do a worker's own database work (claims, event batches, outcomes).
HARNESS_WORKER_DB_THREADS = env_int("HARNESS_WORKER_DB_THREADS", 4, minimum=1)
# Live event batches a worker holds for Redis at most; past it, while Redis is slow or silent,
# batches are dropped (streams read them from the log) rather than held in the worker's memory.
HARNESS_WORKER_PUBLISH_BACKLOG = env_int("HARNESS_WORKER_PUBLISH_BACKLOG", 1000, minimum=1)
# The web and worker processes, once started, freeze what startup made (the garbage collector
# never scans it again) and collect their youngest objects every this many allocations
# (Python's default is 700). 0 leaves the collector as Python sets it.
HARNESS_GC_THRESHOLD = env_int("HARNESS_GC_THRESHOLD", 10000, minimum=0)
# The event loop a worker process runs its runs on: uvloop (libuv; cheaper hand-offs and
# callbacks) or Python's own asyncio loop.
HARNESS_WORKER_EVENT_LOOP = env_str("HARNESS_WORKER_EVENT_LOOP", "uvloop")
if HARNESS_WORKER_EVENT_LOOP not in {"uvloop", "asyncio"}:
    raise ImproperlyConfigured(
        f"HARNESS_WORKER_EVENT_LOOP: expected 'uvloop' or 'asyncio', got {HARNESS_WORKER_EVENT_LOOP!r}"
    )
# Runs of one principal executing at once, over every worker; the rest wait queued.
HARNESS_PRINCIPAL_MAX_INFLIGHT = env_int("HARNESS_PRINCIPAL_MAX_INFLIGHT", 50, minimum=1)
# On SIGTERM a worker takes no new runs and gives running ones this long to finish.
HARNESS_WORKER_BEAT_SECONDS = env_float("HARNESS_WORKER_BEAT_SECONDS", 5, minimum=0.1)
HARNESS_WORKER_STOP_GRACE_SECONDS = env_float("HARNESS_WORKER_STOP_GRACE_SECONDS", 10, minimum=0)
HARNESS_JOB_WORKERS = env_int("HARNESS_JOB_WORKERS", 1, minimum=1)
# The broker queue (django-q2 list key) that carries runs to the run engine.
HARNESS_RUN_QUEUE = f"{HARNESS_REDIS_PREFIX}.runs"

# --- Limits on what a run may store ---------------------------------------------
# Every stored text (tool output, text deltas, messages, run output, session items,
# span data) is cut at this many characters with a `truncated` marker; a longer run
# output is kept whole as an artifact (`output.txt`).
HARNESS_MAX_STORED_CHARS = env_int("HARNESS_MAX_STORED_CHARS", 65_536, minimum=1024)
# What a tool's result may give back to the model, in characters.
HARNESS_TOOL_OUTPUT_MAX_CHARS = env_int("HARNESS_TOOL_OUTPUT_MAX_CHARS", 16_000, minimum=256)
# What the worker keeps of one sandbox command's stdout and stderr, in bytes (the rest is
# read and dropped, so a command that prints gigabytes costs no memory).
HARNESS_SANDBOX_OUTPUT_MAX_BYTES = env_int("HARNESS_SANDBOX_OUTPUT_MAX_BYTES", 1_048_576, minimum=4096)

# --- The operator console (the admin's run and session pages) -----------------
# Rows of each kind (events, spans, audit entries, a session's runs) one page shows: a run
# with more says how many were left out, so a page costs the same queries and stays bounded.
HARNESS_CONSOLE_MAX_ROWS = env_int("HARNESS_CONSOLE_MAX_ROWS", 1000, minimum=10)
# Characters of one span input/output, tool result or message shown inline; the whole
# span is a link away (its JSON).
HARNESS_CONSOLE_PREVIEW_CHARS = env_int("HARNESS_CONSOLE_PREVIEW_CHARS", 4000, minimum=200)
Q_CLUSTER = {
    "name": HARNESS_REDIS_PREFIX,
    "workers": HARNESS_JOB_WORKERS,
    # A task is killed only well after the run's own timeout has failed it
    # cleanly; retries are the reaper's decision (leases), never the broker's.
    "timeout": int(HARNESS_RUN_TIMEOUT_SECONDS + 60),
    "retry": int(HARNESS_RUN_TIMEOUT_SECONDS + 120),
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": 1000,
    "poll": env_float("HARNESS_QUEUE_POLL_SECONDS", 0.05, minimum=0.01),
    "label": "Task queue",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = redis_url_with_timeouts(REDIS_URL, HARNESS_REDIS_TIMEOUT_SECONDS)
else:
    Q_CLUSTER["orm"] = "default"

# --- Limits per API key -----------------------------------------------------------
# Requests per minute (0: no limit) and open streams, SSE and WebSocket (0: no cap), per API
# key. The counts live in the cache: Redis with REDIS_URL, shared by every web process;
# otherwise this process's memory (one web process).
HARNESS_API_RATE_LIMIT = env_int("HARNESS_API_RATE_LIMIT", 600, minimum=0)
HARNESS_MAX_STREAMS_PER_KEY = env_int("HARNESS_MAX_STREAMS_PER_KEY", 20, minimum=0)
CACHES: dict[str, dict[str, Any]] = {
    "default": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": HARNESS_REDIS_PREFIX,
            # A Redis that stops answering costs a request seconds, not forever.
            "OPTIONS": {
                "socket_connect_timeout": HARNESS_REDIS_TIMEOUT_SECONDS,
                "socket_timeout": HARNESS_REDIS_TIMEOUT_SECONDS,
            },
        }
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "harness"}
    )
}

# --- Logging: JSON lines on stdout ---------------------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "harness_site.logs.JsonFormatter"}},
    "handlers": {
        "stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "json"},
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}
