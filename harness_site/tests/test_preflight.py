"""manage.py preflight: the production checklist, as an operator runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from harness_site.preflight import _key_strength, _shown, _sslmode

ROOT = Path(settings.BASE_DIR)
CANARY = "sk-preflight-canary-5b2f0e"


def preflight(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "HARNESS_IGNORE_ENV_FILE": "1",
        "HARNESS_VAR_DIR": str(tmp_path),
    }
    return subprocess.run(
        [sys.executable, "manage.py", "preflight", *args],
        cwd=ROOT,
        env=base | env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_default_env_fails_with_a_hint_for_each_check(tmp_path):
    # What `make run` writes to .env: DEBUG=true, nothing else.
    done = preflight(tmp_path, DEBUG="true", OPENAI_API_KEY=CANARY)
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    for line in (
        "FAIL  DEBUG is off: DEBUG=True",
        "FAIL  SECRET_KEY is strong: it looks like a placeholder or development key",
        "FAIL  the database is Postgres: sqlite3",
        "FAIL  TLS is required to the database",
        "FAIL  migrations are applied:",
        "FAIL  artifacts go to R2 (an S3 bucket): local files",
        "FAIL  traces are exported (OpenTelemetry): OTEL_EXPORTER_OTLP_ENDPOINT unset",
        "FAIL  backups are acknowledged: not acknowledged",
        "PASS  artifact URLs expire in time: 900 s (maximum 3600 s)",
        "PASS  the eval workflow is present: .github/workflows/evals.yml",
    ):
        assert line in out, out
    assert out.count("hint: ") == out.count("FAIL  ")
    assert "checks failed: not ready for production." in out
    assert CANARY not in out + done.stderr


def test_a_production_shaped_security_and_database_config_passes_those_checks(tmp_path):
    key = "k7Qx2pV9wLm3Rt8Zs1Nb6Yc4Hd0Jf5Ga-Ue_Ko2Wi7Xq9Ep3Tr6Yu1Io8Pa4Sd0"
    database = settings.DATABASES["default"]
    if not database["ENGINE"].endswith("postgresql"):
        pytest.skip("needs the Postgres server the suite runs against")
    url = f"postgres://{database['USER']}:db-pass-canary@{database['HOST'] or '127.0.0.1'}:{database['PORT'] or 5432}/x"
    done = preflight(
        tmp_path,
        "--backups-acknowledged",
        SECRET_KEY=key,
        ALLOWED_HOSTS="harness.example.com",
        CSRF_TRUSTED_ORIGINS="https://harness.example.com",
        DATABASE_URL=url + "?sslmode=require",
        DIRECT_DATABASE_URL=url.replace(":5432", ":5433") + "?sslmode=require",
        HARNESS_RUN_MAX_COST_USD="0.50",
        DATABASE_POOL_TIMEOUT_SECONDS="1",
    )
    out = done.stdout
    for line in (
        "PASS  DEBUG is off",
        "PASS  SECRET_KEY is strong: 63 characters",
        "PASS  ALLOWED_HOSTS names the public host: harness.example.com",
        "PASS  CSRF_TRUSTED_ORIGINS is set (https): https://harness.example.com",
        "PASS  the database is Postgres: postgresql",
        "PASS  DIRECT_DATABASE_URL is set apart from the pooled DATABASE_URL",
        "PASS  TLS is required to the database: DATABASE_URL: sslmode=require, DIRECT_DATABASE_URL: sslmode=require",
        "PASS  backups are acknowledged",
    ):
        assert line in out, out
    assert "db-pass-canary" not in out + done.stderr and key not in out + done.stderr
    assert done.returncode == 1  # no R2, E2B, OTLP or Redis here


@pytest.mark.parametrize(
    ("key", "strong"),
    [
        ("insecure-local-development-key-only-used-when-DEBUG-is-on", False),
        ("a" * 64, False),
        ("short-but-random-Xq9Ep3Tr6", False),
        ("k7Qx2pV9wLm3Rt8Zs1Nb6Yc4Hd0Jf5Ga-Ue_Ko2Wi7Xq9Ep3Tr6Yu1Io8Pa4Sd0", True),
    ],
)
def test_key_strength(key, strong):
    assert _key_strength(key)[0] is strong


def test_urls_are_shown_without_credentials():
    url = "postgres://app:s3cret@ep-x-pooler.neon.tech:5432/db?sslmode=require&channel_binding=require"
    assert _shown(url) == "postgres://ep-x-pooler.neon.tech:5432/db"
    assert _sslmode(url) == "require" and _sslmode("postgres://h/db") == ""
