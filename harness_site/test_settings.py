"""Settings for the test suite: the real settings with a fixed, key-less environment."""

import os

os.environ["HARNESS_IGNORE_ENV_FILE"] = "1"
os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production-0123456789")
for name in (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "REDIS_URL",
    "HARNESS_MODEL",
    "DIRECT_DATABASE_URL",
    "R2_BUCKET",
    "R2_ACCOUNT_ID",
    "S3_ENDPOINT_URL",
    "R2_ACCESS_KEY_ID",
    "R2_SECRET_ACCESS_KEY",
    "E2B_API_KEY",
    "SANDBOX_PROVIDER",
    "HARNESS_SANDBOX_ALLOW_UNCONFINED",
):
    os.environ.pop(name, None)

from harness_site.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    # A file, not shared-cache memory: worker threads in the tests then get real
    # SQLite locking (WAL + busy timeout), as the web and worker processes do.
    import tempfile

    DATABASES["default"]["TEST"] = {"NAME": str(Path(tempfile.gettempdir()) / f"harness-test-{os.getpid()}.sqlite3")}  # noqa: F405
