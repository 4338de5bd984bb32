"""The production checklist (`manage.py preflight`): each check, its result and a hint.

Checks read the settings and, where a fact lives elsewhere, ask it live: the database
(migrations applied), the bucket (its lifecycle rule), the last nightly eval. None of them
prints a secret: a URL is shown without its password, a key only as "set".
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.db import connections
from django.db.migrations.executor import MigrationExecutor

WEAK_KEY_MARKERS = ("insecure", "change-me", "changeme", "secret-key", "django-insecure", "example")
POOLED_HINT = "Neon: the pooled endpoint's host has '-pooler' in it; PgBouncer: its port."
TLS_MODES = {"require", "verify-ca", "verify-full"}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    hint: str = ""


def _check(name: str, ok: bool, detail: str, hint: str) -> Check:
    return Check(name, ok, detail, "" if ok else hint)


def _key_strength(key: str) -> tuple[bool, str]:
    if len(key) < 50:
        return False, f"{len(key)} characters"
    if len(set(key)) < 5:
        return False, f"only {len(set(key))} distinct characters"
    if any(marker in key.lower() for marker in WEAK_KEY_MARKERS):
        return False, "it looks like a placeholder or development key"
    counts = [key.count(char) for char in set(key)]
    bits = -sum(count / len(key) * math.log2(count / len(key)) for count in counts) * len(key)
    if bits < 200:
        return False, f"about {bits:.0f} bits of entropy"
    return True, f"{len(key)} characters"


def _sslmode(url: str) -> str:
    query = parse_qs(urlsplit(url).query)
    return (query.get("sslmode") or [""])[0]


def _shown(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def checks_security() -> Iterator[Check]:
    yield _check("DEBUG is off", not settings.DEBUG, f"DEBUG={settings.DEBUG}", "Unset DEBUG (or DEBUG=false).")
    strong, why = _key_strength(settings.SECRET_KEY)
    yield _check(
        "SECRET_KEY is strong",
        strong,
        why,
        "Generate one: python -c 'import secrets; print(secrets.token_urlsafe(64))' (the same in every process).",
    )
    local = {"localhost", "127.0.0.1", "[::1]", "*"}
    hosts = [host for host in settings.ALLOWED_HOSTS if host not in local]
    yield _check(
        "ALLOWED_HOSTS names the public host",
        bool(hosts) and "*" not in settings.ALLOWED_HOSTS,
        ", ".join(settings.ALLOWED_HOSTS) or "empty",
        "ALLOWED_HOSTS=<your app's host> (Azure: the container app's FQDN or your domain); never '*'.",
    )
    origins = [origin for origin in settings.CSRF_TRUSTED_ORIGINS if origin.startswith("https://")]
    yield _check(
        "CSRF_TRUSTED_ORIGINS is set (https)",
        bool(origins),
        ", ".join(settings.CSRF_TRUSTED_ORIGINS) or "unset",
        "CSRF_TRUSTED_ORIGINS=https://<your app's host> (the admin's forms post to it).",
    )


def checks_database() -> Iterator[Check]:
    engine = settings.DATABASES["default"]["ENGINE"]
    postgres = engine.endswith("postgresql")
    yield _check(
        "the database is Postgres",
        postgres,
        engine.rsplit(".", 1)[-1],
        "DATABASE_URL=postgres://... (Neon: the pooled endpoint, ?sslmode=require).",
    )
    url, direct = settings.DATABASE_URL, settings.DIRECT_DATABASE_URL
    yield _check(
        "DIRECT_DATABASE_URL is set apart from the pooled DATABASE_URL",
        bool(direct) and direct != url,
        f"app: {_shown(url)}; migrations: {_shown(direct) if direct else 'unset'}",
        f"Give the app the pooled endpoint and migrations the direct one. {POOLED_HINT}",
    )
    modes = {"DATABASE_URL": _sslmode(url), "DIRECT_DATABASE_URL": _sslmode(direct) if direct else "unset"}
    yield _check(
        "TLS is required to the database",
        postgres and all(mode in TLS_MODES for mode in modes.values()),
        ", ".join(f"{name}: sslmode={mode or 'unset'}" for name, mode in modes.items()),
        "Add ?sslmode=require (or verify-full) to both URLs.",
    )
    try:
        executor = MigrationExecutor(connections["default"])
        pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
        yield _check(
            "migrations are applied",
            not pending,
            f"{len(pending)} pending" if pending else "none pending",
            "Run: python manage.py migrate (it uses DIRECT_DATABASE_URL).",
        )
    except Exception as exc:
        yield Check("migrations are applied", False, f"the database did not answer: {type(exc).__name__}", "")


def checks_storage() -> Iterator[Check]:
    from artifacts.management.commands.artifacts_lifecycle import lifecycle_rules
    from artifacts.storage import uses_object_store

    configured = uses_object_store()
    yield _check(
        "artifacts go to R2 (an S3 bucket)",
        configured,
        f"bucket {settings.R2_BUCKET}" if configured else "local files",
        "Set R2_BUCKET, S3_ENDPOINT_URL (or R2_ACCOUNT_ID), R2_ACCESS_KEY_ID, R2_SECRET_ACCESS_KEY.",
    )
    if configured:
        yield _lifecycle_check({rule["ID"] for rule in lifecycle_rules()["Rules"]})
    yield _check(
        "artifact URLs expire in time",
        settings.ARTIFACTS_URL_EXPIRY_SECONDS <= settings.ARTIFACTS_URL_MAX_EXPIRY_SECONDS,
        f"{settings.ARTIFACTS_URL_EXPIRY_SECONDS} s (maximum {settings.ARTIFACTS_URL_MAX_EXPIRY_SECONDS} s)",
        "Lower ARTIFACTS_URL_EXPIRY_SECONDS to at most ARTIFACTS_URL_MAX_EXPIRY_SECONDS.",
    )


def _lifecycle_check(wanted: set[str]) -> Check:
    from artifacts.storage import artifact_storage

    name = "the bucket's lifecycle rule is set"
    hint = "Run: python manage.py artifacts_lifecycle --apply"
    try:
        storage: Any = artifact_storage()
        answer = storage.connection.meta.client.get_bucket_lifecycle_configuration(Bucket=storage.bucket_name)
    except Exception as exc:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
        if code != "NoSuchLifecycleConfiguration":
            return Check(name, False, f"the bucket answered {code}", hint)
        answer = {"Rules": []}  # none set yet
    present = {rule.get("ID") for rule in answer.get("Rules", []) if rule.get("Status") == "Enabled"}
    missing = sorted(wanted - present)
    return _check(name, not missing, f"missing: {', '.join(missing)}" if missing else "all rules enabled", hint)


def checks_sandbox() -> Iterator[Check]:
    from sandboxes.providers import E2B, SandboxUnavailable, provider_choose

    try:
        provider = provider_choose()
    except SandboxUnavailable as exc:
        yield Check("a confining sandbox provider", False, str(exc), "Set E2B_API_KEY (and SANDBOX_PROVIDER=e2b).")
        return
    yield _check(
        "sandboxes run on E2B",
        provider == E2B,
        provider,
        "Containers rarely allow the user namespaces bubblewrap needs: set E2B_API_KEY and SANDBOX_PROVIDER=e2b.",
    )
    allowed = settings.HARNESS_SANDBOX_ENV_ALLOWLIST
    yield Check(
        "the sandbox environment carries no secret",
        True,  # settings refuse credential-like names at boot
        f"allow-list: {', '.join(allowed) or 'the base environment only'}",
    )


def checks_operations() -> Iterator[Check]:
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", ""
    )
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        endpoint = ""
    yield _check(
        "traces are exported (OpenTelemetry)",
        bool(endpoint),
        _shown(endpoint) if endpoint else "OTEL_EXPORTER_OTLP_ENDPOINT unset",
        "Set OTEL_EXPORTER_OTLP_ENDPOINT (Phoenix: its URL) and PHOENIX_URL for the admin's trace links.",
    )
    workflow = Path(settings.BASE_DIR) / ".github" / "workflows" / "evals.yml"
    yield _check(
        "the eval workflow is present",
        workflow.is_file(),
        str(workflow.relative_to(settings.BASE_DIR)),
        "Keep .github/workflows/evals.yml: it gates every change on the golden dataset.",
    )
    yield _last_nightly_eval()
    yield _check(
        "spend per run is capped",
        settings.HARNESS_RUN_MAX_COST_USD is not None and settings.HARNESS_RUN_MAX_COST_USD > 0,
        f"HARNESS_RUN_MAX_COST_USD={settings.HARNESS_RUN_MAX_COST_USD}",
        "Set HARNESS_RUN_MAX_COST_USD; give principals daily/monthly limits in the admin (Budgets).",
    )
    yield _check(
        "API keys are rate limited",
        settings.HARNESS_API_RATE_LIMIT > 0 and settings.HARNESS_MAX_STREAMS_PER_KEY > 0,
        f"{settings.HARNESS_API_RATE_LIMIT}/min, {settings.HARNESS_MAX_STREAMS_PER_KEY} streams",
        "Set HARNESS_API_RATE_LIMIT and HARNESS_MAX_STREAMS_PER_KEY above 0.",
    )
    yield _check(
        "Redis carries the run queue and live streams",
        bool(settings.REDIS_URL),
        "REDIS_URL set" if settings.REDIS_URL else "REDIS_URL unset (the database queue and polling)",
        "Set REDIS_URL (Azure Cache for Redis: rediss://...).",
    )


def checks_agents() -> Iterator[Check]:
    """HARNESS_AGENT_MODULES loads, as the workers will load it (agents.E001-E003)."""
    from execution.catalog import CatalogError, catalog

    try:
        agents = catalog()
    except CatalogError as exc:
        yield Check("the agent modules load", False, str(exc)[:500], "Fix HARNESS_AGENT_MODULES (see agents.E00x).")
        return
    yield Check("the agent modules load", True, f"{len(agents)} agents: {', '.join(sorted(agents))}"[:500], "")


def _last_nightly_eval() -> Check:
    from evals.models import EvalRun

    name = "the last nightly eval passed"
    hint = "Look at the admin's Eval runs; run: python manage.py eval"
    try:
        last = EvalRun.objects.filter(triggered_by="nightly schedule").exclude(status=EvalRun.Status.RUNNING).first()
    except Exception as exc:
        return Check(name, False, f"the database did not answer: {type(exc).__name__}", hint)
    if last is None:
        return Check(name, False, "no nightly eval has finished yet", hint)
    return _check(name, last.status == EvalRun.Status.PASSED, f"{last.pk}: {last.status}", hint)


def checks_backups(*, acknowledged: bool) -> Iterator[Check]:
    yield _check(
        "backups are acknowledged",
        acknowledged,
        "acknowledged" if acknowledged else "not acknowledged",
        "Neon's point-in-time restore cannot be checked from here: confirm its retention window, then pass "
        "--backups-acknowledged (or set HARNESS_BACKUPS_ACKNOWLEDGED=true).",
    )


SECTIONS: list[tuple[str, Callable[..., Iterator[Check]]]] = [
    ("Security", checks_security),
    ("Database", checks_database),
    ("Artifacts", checks_storage),
    ("Sandboxes", checks_sandbox),
    ("Operations", checks_operations),
    ("Agents", checks_agents),
]


def preflight(*, backups_acknowledged: bool) -> list[tuple[str, list[Check]]]:
    report = [(title, list(section())) for title, section in SECTIONS]
    report.append(("Backups", list(checks_backups(acknowledged=backups_acknowledged))))
    return report
