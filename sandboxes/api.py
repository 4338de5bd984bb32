"""GET /api/sandbox/status: which provider runs commands here and whether it works right now.

This is where the local (bubblewrap) provider is reported; /health's `sandbox`
stays about the remote provider only.
"""

from __future__ import annotations

import subprocess
from datetime import datetime
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from ninja import Router, Schema

from runs.api import get_run_or_404
from runs.schemas import ErrorOut
from sandboxes import providers
from sandboxes.bwrap import bwrap_path, bwrap_self_test, host_uid_for_sandbox
from sandboxes.cgroups import cgroup_support, process_memory_mb
from sandboxes.models import Sandbox
from sandboxes.policy import SandboxPolicy
from sandboxes.quota import quota_self_test

router = Router(tags=["sandboxes"])


class SandboxOut(Schema):
    id: str
    run_id: str
    provider: str
    status: str
    cleanup_state: str
    manifest: dict[str, Any]
    exit_info: dict[str, Any]
    created_at: datetime
    stopped_at: datetime | None
    cleaned_at: datetime | None


def _bwrap_version(path: str) -> str:
    try:
        done = subprocess.run([path, "--version"], capture_output=True, timeout=5, check=False)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({type(exc).__name__})"
    return done.stdout.decode(errors="replace").strip()


def _local_status(policy: SandboxPolicy) -> dict[str, Any]:
    path = bwrap_path()
    status: dict[str, Any] = {
        "bwrap": path,
        "version": _bwrap_version(path) if path else None,
        "runs_as_host_uid": host_uid_for_sandbox(settings.HARNESS_SANDBOX_UID),
        "workspace_root": str(settings.HARNESS_SANDBOX_ROOT),
    }
    if path:
        ok, detail = bwrap_self_test(policy, drop_to_uid=status["runs_as_host_uid"], root=providers.sandbox_root())
        status["self_test"] = {"ok": ok, "detail": detail}
    else:
        status["self_test"] = {"ok": False, "detail": "bwrap is not installed (apt-get install bubblewrap)"}
    status["limits"] = _enforced_limits(policy, self_test_ok=status["self_test"]["ok"])
    return status


def _enforced_limits(policy: SandboxPolicy, *, self_test_ok: bool) -> dict[str, Any]:
    """What the kernel enforces for local sandboxes on this host, and what falls back (and why)."""
    cgroups = cgroup_support()
    memory: dict[str, Any] = {
        "total_memory_mb": policy.total_memory_mb,
        "process_memory_mb": process_memory_mb(policy, cgroup=cgroups.available),
        "max_processes": policy.max_processes,
    }
    if cgroups.available:
        memory["enforced_by"] = "cgroup v2 per sandbox (memory.max, pids.max)"
    else:
        memory["enforced_by"] = (
            "per-process limits only: each process's address space is at most total_memory_mb / max_processes, "
            "and the process count is the kernel's per-uid limit"
        )
    return {
        "disk_quota": quota_self_test(providers.sandbox_root(), size_mb=policy.disk_mb),
        "cgroup": cgroups.as_dict(),
        "memory": memory,
        # The self-test runs `unshare -U` inside, which the filter must refuse.
        "seccomp": {"enabled": True, "checked": self_test_ok},
    }


def _e2b_status() -> dict[str, Any]:
    if not settings.E2B_API_KEY:
        return {"configured": False, "live": False}
    from sandboxes.health import sandbox_live

    try:
        return {"configured": True, "live": sandbox_live()}
    except Exception as exc:
        return {"configured": True, "live": False, "error": type(exc).__name__}


@router.get("/sandbox/status", summary="The sandbox provider in use and a live check of each")
def sandbox_status(request: HttpRequest) -> dict[str, Any]:
    policy = SandboxPolicy.from_settings()
    try:
        provider: str | None = providers.provider_choose()
        error = None
    except providers.SandboxUnavailable as exc:
        provider, error = None, str(exc)
    local = _local_status(policy)
    available = provider is not None and (provider != providers.LOCAL or local["self_test"]["ok"])
    if provider == providers.LOCAL and not local["self_test"]["ok"]:
        error = f"bubblewrap is installed but cannot confine here: {local['self_test']['detail']}"
    return {
        "provider": provider,
        "available": available,
        "confined": provider in (providers.LOCAL, providers.E2B),
        "error": error,
        "configured_provider": settings.SANDBOX_PROVIDER or "auto",
        "local": local,
        "e2b": _e2b_status(),
        "policy": policy.as_dict(),
        "sandboxes": {
            "live": Sandbox.objects.filter(status__in=Sandbox.LIVE_STATUSES).count(),
            "cleanup_failed": Sandbox.objects.filter(cleanup_state=Sandbox.Cleanup.FAILED).count(),
        },
    }


@router.get(
    "/runs/{run_id}/sandboxes", response={200: list[SandboxOut], 404: ErrorOut}, summary="The sandboxes a run used"
)
def run_sandboxes(request: HttpRequest, run_id: str) -> Any:
    run = get_run_or_404(request, run_id)
    return Sandbox.objects.filter(run=run).order_by("id")
