"""Stands in for `python manage.py preflight` (PREFLIGHT_CMD) in deploy.sh's tests.

Appends one record to $FAKE_AZ_LOG, in order with the fake `az` calls: its argv, its working
directory, the plain values deploy.sh gives it, and a sha256 of each secret it can read
(never the value). Exits with $PREFLIGHT_STUB_EXIT (default 0).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

PLAIN: tuple[str, ...] = ("DEBUG", "HARNESS_IGNORE_ENV_FILE", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "SITE_URL")
PLAIN += ("SECURE_PROXY_SSL_HEADER", "SANDBOX_PROVIDER", "R2_BUCKET")
SECRETS = ("SECRET_KEY", "DATABASE_URL", "DIRECT_DATABASE_URL", "REDIS_URL", "E2B_API_KEY")


def main() -> int:
    record = {
        "preflight": sys.argv[1:],
        "cwd": os.getcwd(),
        "env": {name: os.environ.get(name) for name in PLAIN},
        "secrets": {
            name: hashlib.sha256(os.environ[name].encode()).hexdigest() for name in SECRETS if name in os.environ
        },
    }
    with open(os.environ["FAKE_AZ_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps(record) + "\n")
    return int(os.environ.get("PREFLIGHT_STUB_EXIT", "0"))


if __name__ == "__main__":
    sys.exit(main())
