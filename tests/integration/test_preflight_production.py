"""manage.py preflight passes on a production-shaped deployment: Postgres over TLS through a
transaction-mode pooler with the direct endpoint for migrations, an S3 bucket with its lifecycle
rules, E2B, OpenTelemetry, Redis, a passed nightly eval and acknowledged backups."""

from __future__ import annotations

import pytest

from tests.integration.harness import Harness
from tests.integration.pgtls import NeonLike, available
from tests.integration.servers import MotoS3

pytestmark = [pytest.mark.integration, pytest.mark.own_services]

SECRET = "k7Qx2pV9wLm3Rt8Zs1Nb6Yc4Hd0Jf5Ga-Ue_Ko2Wi7Xq9Ep3Tr6Yu1Io8Pa4Sd0Zz"
E2B_KEY = "e2b_preflight_canary_51c7"


def test_preflight_passes_on_a_production_shaped_environment(tmp_path):
    why = available()
    if why:
        pytest.skip(why)
    neon, s3 = NeonLike().start(), MotoS3().start()
    try:
        s3.create_bucket("harness-artifacts")
        harness = Harness(
            tmp_path,  # migrates through DIRECT_DATABASE_URL
            SECRET_KEY=SECRET,
            DATABASE_URL=neon.url(pooled=True),
            DIRECT_DATABASE_URL=neon.url(pooled=False),
            R2_BUCKET="harness-artifacts",
            S3_ENDPOINT_URL=s3.endpoint,
            R2_ACCESS_KEY_ID=s3.access_key,
            R2_SECRET_ACCESS_KEY=s3.secret_key,
        )
        # The nightly eval (the starter dataset, replayed) runs before E2B is configured: its
        # coder case needs a sandbox, and there is no E2B to reach from here.
        nightly = harness.manage("shell", "-c", "from evals.tasks import nightly_eval; print(nightly_eval())")
        assert "passed" in nightly.stdout, nightly.stdout + nightly.stderr
        harness.env.update(
            ALLOWED_HOSTS="harness.example.com",
            CSRF_TRUSTED_ORIGINS="https://harness.example.com",
            E2B_API_KEY=E2B_KEY,
            SANDBOX_PROVIDER="e2b",
            OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318",
            OTEL_SDK_DISABLED="false",
            REDIS_URL="redis://127.0.0.1:6379/0",
            HARNESS_BACKUPS_ACKNOWLEDGED="true",
            HARNESS_API_RATE_LIMIT="600",
            HARNESS_MAX_STREAMS_PER_KEY="20",
        )
        before = harness.manage("preflight", check=False)
        assert before.returncode == 1
        assert "FAIL  the bucket's lifecycle rule is set: missing: harness-" in before.stdout, before.stdout
        harness.manage("artifacts_lifecycle", "--apply")  # what its hint says to run

        done = harness.manage("preflight", check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "FAIL" not in done.stdout and "checks passed." in done.stdout
        for secret in (SECRET, E2B_KEY, s3.secret_key, "pooled-Pa55word-0d1e"):
            assert secret not in done.stdout + done.stderr
    finally:
        s3.stop()
        neon.stop()
