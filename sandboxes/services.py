"""A sandbox's life: open it for a run, hand its outputs over as artifacts, destroy it, reap orphans.

The worker opens a sandbox before the agent runs and closes it when the run ends,
however it ends (success, failure, timeout, cancel): outputs under `outputs/` are
stored as artifacts first, then the provider session is destroyed and the row
says so. What a dead worker leaves behind, the reaper finds and destroys: rows
past their time budget or whose run is over, workspaces and E2B sandboxes no live
row accounts for. Every cleanup writes an audit row.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from asgiref.sync import sync_to_async
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from artifacts.models import Artifact
from audit.services import Actor, audit_record
from harness_site.redaction import redact
from runs.models import Run
from sandboxes import providers
from sandboxes.models import Sandbox
from sandboxes.policy import INPUTS_DIR, OUTPUTS_DIR, SandboxPolicy, sandbox_environment

logger = logging.getLogger(__name__)

# A workspace directory with no row is left alone this long (its row may be committing).
ORPHAN_DIR_MIN_AGE_SECONDS = 120


class SandboxError(Exception):
    pass


def _audit(action: str, sandbox: Sandbox, actor: Actor, **data: Any) -> None:
    audit_record(
        action=action,
        actor=actor,
        target_type="sandbox",
        target_id=sandbox.pk,
        run_id=sandbox.run_id,
        data={"provider": sandbox.provider, **data},
    )


# --- opening ---------------------------------------------------------------------


def _input_artifacts(run: Run) -> list[Artifact]:
    ids = list(run.input_files or [])
    if not ids:
        return []
    found = {
        a.pk: a for a in Artifact.objects.filter(pk__in=ids, status=Artifact.Status.READY, run__owner=run.owner_id)
    }
    missing = [artifact_id for artifact_id in ids if artifact_id not in found]
    if missing:
        raise SandboxError(f"input files are no longer available: {', '.join(missing)}")
    return [found[artifact_id] for artifact_id in ids]


def manifest_record(
    *, provider: str, policy: SandboxPolicy, inputs: list[Artifact], environment: dict[str, str], tools: list[str]
) -> dict[str, Any]:
    """The manifest as the row keeps it: what the sandbox was given, never how to reach storage."""
    return {
        "inputs": [
            {"artifact_id": a.pk, "path": f"{INPUTS_DIR}/{a.name}", "size": a.size, "sha256": a.sha256} for a in inputs
        ],
        "writable": ["."],
        "outputs": f"{OUTPUTS_DIR}/",
        "tools": tools,
        "time_budget_seconds": policy.time_budget_seconds,
        "limits": {
            "command_timeout_seconds": policy.command_timeout_seconds,
            "cpu_seconds": policy.cpu_seconds,
            "memory_mb": policy.memory_mb,
            "max_processes": policy.max_processes,
            "max_file_mb": policy.max_file_mb,
            "tmp_mb": policy.tmp_mb,
            # Local sandboxes only; what the kernel really enforces is added as "enforced" once started.
            **(
                {"total_memory_mb": policy.total_memory_mb, "disk_mb": policy.disk_mb}
                if provider in providers.HOST_PROVIDERS
                else {}
            ),
        },
        "network": policy.network if provider == providers.E2B else "deny",
        "environment": sorted(environment),
    }


@transaction.atomic
def sandbox_row_create(
    *, run: Run, provider: str, worker_id: str, manifest: dict[str, Any], policy: SandboxPolicy
) -> Sandbox:
    sandbox = Sandbox.objects.create(
        run=run,
        provider=provider,
        worker_id=worker_id,
        manifest=manifest,
        deadline=timezone.now() + timedelta(seconds=policy.time_budget_seconds),
    )
    _audit("sandbox.created", sandbox, Actor.worker(worker_id), manifest=manifest)
    return sandbox


def sandbox_row_update(sandbox_id: str, **fields: Any) -> None:
    Sandbox.objects.filter(pk=sandbox_id).update(**fields)


def _read_artifact(artifact: Artifact) -> bytes:
    from artifacts.storage import artifact_storage

    with artifact_storage().open(artifact.object_key, "rb") as handle:
        data: bytes = handle.read()
    return data


@dataclass
class OpenSandbox:
    """A started sandbox session, its SDK client and its row."""

    row: Sandbox
    session: Any
    client: Any
    worker_id: str
    notes: dict[str, Any] = field(default_factory=dict)


async def sandbox_open(*, run: Run, worker_id: str, tools: list[str], snapshot_key: str = "") -> OpenSandbox:
    """Create the run's sandbox with its manifest and start it. Raises SandboxError with a clear message.

    With `snapshot_key` (a run resumed after an approval) the workspace is restored from the
    snapshot `sandbox_suspend` kept, input files included, instead of fetching the inputs again."""
    from agents.sandbox import Manifest
    from agents.sandbox.entries import Dir, File
    from agents.sandbox.manifest import Environment

    try:
        provider = providers.provider_choose()
    except providers.SandboxUnavailable as exc:
        raise SandboxError(str(exc)) from None
    policy = SandboxPolicy.from_settings()
    if provider in providers.HOST_PROVIDERS and policy.network == "allow":
        raise SandboxError(
            "HARNESS_SANDBOX_NETWORK=allow is not available with the local provider, whose sandboxes "
            "have no network; use E2B or HARNESS_SANDBOX_NETWORK=deny."
        )
    inputs = [] if snapshot_key else await sync_to_async(_input_artifacts)(run)
    environment = {k: v for k, v in sandbox_environment(policy).items() if k in policy.environment_names}
    record = manifest_record(provider=provider, policy=policy, inputs=inputs, environment=environment, tools=tools)
    if snapshot_key:
        record["restored_from"] = snapshot_key
    row = await sync_to_async(sandbox_row_create)(
        run=run, provider=provider, worker_id=worker_id, manifest=record, policy=policy
    )
    if provider == providers.UNCONFINED:
        providers.warn_unconfined(row.pk)

    entries: dict[str | Path, Any] = {OUTPUTS_DIR: Dir()}
    for artifact in inputs:
        entries[f"{INPUTS_DIR}/{artifact.name}"] = File(content=await sync_to_async(_read_artifact)(artifact))
    client: Any
    session: Any = None
    try:
        if provider == providers.E2B:
            from sandboxes.remote import e2b_client, e2b_options

            client = e2b_client()
            manifest = Manifest(entries=entries, environment=Environment(value={**environment}))
            options = e2b_options(policy=policy, sandbox_id=row.pk, run_id=run.pk, environment=environment)
            session = await client.create(manifest=manifest, options=options)
            handle = str(session.state.sandbox_id)
        else:
            from sandboxes.local import ConfinedClient

            workspace = providers.sandbox_root() / row.pk
            client = ConfinedClient(policy=policy, confine=provider == providers.LOCAL)
            manifest = Manifest(root=str(workspace), entries=entries, environment=Environment(value={**environment}))
            handle = str(workspace)
            # Recorded before anything exists on disk, so the reaper can always find it.
            await sync_to_async(sandbox_row_update)(row.pk, provider_session_id=handle)
            session = await client.create(manifest=manifest)
        await sync_to_async(sandbox_row_update)(row.pk, provider_session_id=handle)
        row.provider_session_id = handle
        await session.start()
        if snapshot_key:
            await _restore_workspace(session, snapshot_key, host=provider in providers.HOST_PROVIDERS)
        if provider in providers.HOST_PROVIDERS:
            # What the kernel really enforces here (disk quota, cgroup or per-process memory, seccomp).
            record = {**record, "enforced": session._inner.limits_info()}
            await sync_to_async(sandbox_row_update)(row.pk, manifest=record)
            row.manifest = record
    except Exception as exc:
        message = redact(f"{type(exc).__name__}: {exc}")
        logger.exception("sandbox failed to start", extra={"sandbox_id": row.pk})
        opened = OpenSandbox(row=row, session=session, client=locals().get("client"), worker_id=worker_id)
        await _destroy_opened(opened, reason="start failed", status=Sandbox.Status.FAILED, error=message)
        raise SandboxError(f"the sandbox could not start: {message}") from None
    await sync_to_async(sandbox_row_update)(row.pk, status=Sandbox.Status.LIVE)
    row.status = Sandbox.Status.LIVE
    return OpenSandbox(row=row, session=session, client=client, worker_id=worker_id)


# --- waiting for approval: the workspace kept as a snapshot ---------------------------
# A run that waits for a person holds no sandbox: its workspace is archived (tar.gz) to the
# artifact store, the sandbox destroyed, and the run's next sandbox, on whichever worker or
# replica resumes it, starts from that archive. Running processes do not survive the wait.

SNAPSHOT_PREFIX = "snapshots"


def snapshot_save(key: str, data: bytes) -> None:
    from django.core.files.base import ContentFile

    from artifacts.storage import artifact_storage

    storage = artifact_storage()
    if storage.exists(key):
        storage.delete(key)
    stored = storage.save(key, ContentFile(data))
    if stored != key:  # the storage renamed it: the run could not find it again
        storage.delete(stored)
        raise SandboxError(f"the workspace snapshot could not be stored under {key}")


def snapshot_read(key: str) -> bytes:
    from artifacts.storage import artifact_storage

    with artifact_storage().open(key, "rb") as handle:
        data: bytes = handle.read()
    return data


def snapshot_delete(key: str) -> None:
    """Drop a snapshot (on commit of the change that made it useless); a failure is logged only."""
    from artifacts.storage import artifact_storage

    try:
        artifact_storage().delete(key)
    except Exception:
        logger.warning("a workspace snapshot could not be deleted", extra={"key": key}, exc_info=True)


def _gzip(archive: Any) -> bytes:
    import gzip

    return gzip.compress(archive.read(), compresslevel=6)


async def sandbox_suspend(opened: OpenSandbox, *, run: Run) -> dict[str, Any]:
    """Keep the workspace of a run that waits for approval, then destroy its sandbox.

    The workspace becomes a tar.gz in the artifact store (`snapshots/<run>/<sandbox>.tar.gz`,
    at most ARTIFACTS_MAX_BYTES); returns {"snapshot_key", "snapshot_bytes"}. However that
    goes, the sandbox is destroyed; a workspace that cannot be kept raises SandboxError.
    """
    from django.conf import settings

    try:
        await opened.session.pty_terminate_all()
    except Exception:
        logger.warning("sandbox processes could not be stopped before the snapshot", exc_info=True)
    key = f"{SNAPSHOT_PREFIX}/{run.pk}/{opened.row.pk}.tar.gz"
    problem = ""
    size = 0
    try:
        archive = await opened.session.persist_workspace()
        data = await asyncio.to_thread(_gzip, archive)
        size = len(data)
        if size > settings.ARTIFACTS_MAX_BYTES:
            problem = (
                f"the workspace ({size} bytes compressed) is larger than ARTIFACTS_MAX_BYTES "
                f"({settings.ARTIFACTS_MAX_BYTES}) and cannot be kept while the run waits for approval"
            )
        else:
            await sync_to_async(snapshot_save)(key, data)
    except Exception as exc:
        logger.exception("sandbox workspace could not be kept", extra={"sandbox_id": opened.row.pk})
        problem = redact(
            f"the workspace could not be kept while the run waits for approval: {type(exc).__name__}: {exc}"
        )
    snapshot: dict[str, Any] = {} if problem else {"snapshot_key": key, "snapshot_bytes": size}
    try:
        await _destroy_opened(
            opened,
            reason="run paused for approval" + ("" if problem else ": workspace kept as a snapshot"),
            status=Sandbox.Status.STOPPED,
            **snapshot,
        )
    except Exception:
        logger.exception("sandbox could not be destroyed; the reaper will retry", extra={"sandbox_id": opened.row.pk})
    if problem:
        raise SandboxError(problem)
    return snapshot


async def _restore_workspace(session: Any, key: str, *, host: bool) -> None:
    """Unpack a snapshot into a started sandbox (the SDK refuses members that leave the workspace);
    on a host its files go to the sandbox's uid, as everything the harness writes there does."""
    import gzip
    import io

    try:
        data = await sync_to_async(snapshot_read)(key)
    except Exception as exc:
        raise SandboxError(f"the workspace snapshot {key} is gone: {type(exc).__name__}") from None
    await session.hydrate_workspace(io.BytesIO(await asyncio.to_thread(gzip.decompress, data)))
    if host:
        inner = session._inner
        if getattr(inner, "host_uid", None) is not None:
            await asyncio.to_thread(_chown_tree, Path(inner.state.manifest.root), inner.host_uid)


def _chown_tree(root: Path, uid: int) -> None:
    import os

    for directory, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            os.lchown(Path(directory) / name, uid, uid)


# --- closing ---------------------------------------------------------------------


async def _collect_outputs(opened: OpenSandbox, run: Run, policy: SandboxPolicy) -> dict[str, Any]:
    """Store each regular file directly under outputs/ as an artifact of the run."""
    from agents.sandbox.files import EntryKind
    from django.conf import settings

    from artifacts.services import ArtifactError, artifact_save
    from artifacts.storage import InvalidName

    saved: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    try:
        entries = await opened.session.ls(OUTPUTS_DIR)
    except Exception as exc:
        return {"saved": [], "skipped": [{"path": OUTPUTS_DIR, "reason": f"cannot list: {type(exc).__name__}"}]}
    for entry in sorted(entries, key=lambda e: e.path):
        name = PurePosixPath(entry.path).name
        if name in (".", ".."):
            continue
        path = f"{OUTPUTS_DIR}/{name}"
        if entry.kind != EntryKind.FILE:
            skipped.append({"path": path, "reason": f"not a regular file ({entry.kind.value})"})
            continue
        if len(saved) >= policy.max_output_files:
            skipped.append(
                {"path": path, "reason": f"over HARNESS_SANDBOX_OUTPUT_MAX_FILES ({policy.max_output_files})"}
            )
            continue
        if entry.size > settings.ARTIFACTS_MAX_BYTES:
            skipped.append({"path": path, "reason": f"larger than ARTIFACTS_MAX_BYTES ({entry.size} bytes)"})
            continue
        try:
            handle = await opened.session.read(Path(path))
            content = handle.read(settings.ARTIFACTS_MAX_BYTES + 1)
            if isinstance(content, str):
                content = content.encode()
            artifact = await sync_to_async(artifact_save)(
                run=run,
                name=name,
                content=content,
                content_type=_guess_type(name),
                actor=Actor.system(f"sandbox {opened.row.pk}"),
            )
        except (ArtifactError, InvalidName) as exc:
            skipped.append({"path": path, "reason": str(exc)})
            continue
        except Exception as exc:
            skipped.append({"path": path, "reason": f"cannot read: {type(exc).__name__}"})
            continue
        saved.append({"artifact_id": artifact.pk, "name": artifact.name, "size": artifact.size})
    return {"saved": saved, "skipped": skipped}


def _guess_type(name: str) -> str:
    import mimetypes

    return mimetypes.guess_type(name)[0] or "application/octet-stream"


async def _destroy_opened(opened: OpenSandbox, *, reason: str, status: str, error: str = "", **info: Any) -> None:
    """Stop and delete the provider session; the row records how it went."""
    problems: list[str] = []
    if opened.session is not None:
        try:
            await opened.session.aclose()
        except Exception as exc:
            problems.append(f"stop: {type(exc).__name__}: {exc}")
        if opened.client is not None:
            try:
                await opened.client.delete(opened.session)
            except Exception as exc:
                problems.append(f"delete: {type(exc).__name__}: {exc}")
    row = opened.row
    if row.provider in providers.HOST_PROVIDERS and row.provider_session_id:
        # Whatever the SDK did, nothing of the workspace may remain.
        try:
            workspace = providers.workspace_path_checked(row.provider_session_id)
            info.update(await sync_to_async(providers.workspace_destroy)(workspace))
        except Exception as exc:
            problems.append(f"remove workspace: {type(exc).__name__}: {exc}")
    await sync_to_async(_record_cleanup)(
        row.pk,
        actor=Actor.worker(opened.worker_id),
        status=status,
        exit_info={"reason": reason, **({"error": error} if error else {}), **info},
        problems=problems,
    )


@transaction.atomic
def _record_cleanup(
    sandbox_id: str, *, actor: Actor, status: str | None, exit_info: dict[str, Any], problems: list[str]
) -> Sandbox:
    sandbox = Sandbox.objects.select_for_update().get(pk=sandbox_id)
    now = timezone.now()
    if status is not None and sandbox.is_live:
        sandbox.status = status
        sandbox.stopped_at = now
    if "reason" in sandbox.exit_info:
        # Already ended (an operator or the reaper got there first): the first account stands.
        sandbox.exit_info = {**exit_info, **sandbox.exit_info}
    else:
        sandbox.exit_info = {**sandbox.exit_info, **exit_info}
    if problems:
        sandbox.cleanup_state = Sandbox.Cleanup.FAILED
        sandbox.cleanup_error = redact("; ".join(problems))[:2000]
    else:
        sandbox.cleanup_state = Sandbox.Cleanup.DONE
        sandbox.cleanup_error = ""
        sandbox.cleaned_at = now
    sandbox.save()
    _audit(
        "sandbox.cleaned" if not problems else "sandbox.cleanup_failed",
        sandbox,
        actor,
        reason=exit_info.get("reason", ""),
        problems=problems,
    )
    return sandbox


async def sandbox_close(opened: OpenSandbox, *, run: Run, reason: str) -> dict[str, Any]:
    """Hand the outputs over as artifacts, then destroy the sandbox. Never raises."""
    policy = SandboxPolicy.from_settings()
    outputs: dict[str, Any] = {"saved": [], "skipped": []}
    try:
        # Nothing may still be writing while the outputs are read.
        await opened.session.pty_terminate_all()
    except Exception:
        logger.warning("sandbox processes could not be stopped before collecting outputs", exc_info=True)
    try:
        outputs = await _collect_outputs(opened, run, policy)
    except Exception as exc:
        logger.exception("sandbox outputs could not be collected", extra={"sandbox_id": opened.row.pk})
        outputs["skipped"].append({"path": OUTPUTS_DIR, "reason": f"{type(exc).__name__}"})
    try:
        await _destroy_opened(opened, reason=reason, status=Sandbox.Status.STOPPED, outputs=outputs)
    except Exception:
        logger.exception("sandbox could not be destroyed; the reaper will retry", extra={"sandbox_id": opened.row.pk})
    return outputs


# --- cleanup outside the worker: the reaper and the admin -------------------------------


def sandbox_destroy(*, sandbox: Sandbox, actor: Actor, reason: str) -> Sandbox:
    """Destroy a sandbox through its provider handle, from any process, and record it."""
    if sandbox.is_live:
        # Say why first, so a worker that notices its commands dying records this reason, not its own.
        _record_stop(sandbox.pk, reason=reason)
    problems: list[str] = []
    info: dict[str, Any] = {}
    if sandbox.provider_session_id:
        try:
            if sandbox.provider in providers.HOST_PROVIDERS:
                workspace = providers.workspace_path_checked(sandbox.provider_session_id)
                info = providers.workspace_destroy(workspace)
            elif sandbox.provider == providers.E2B:
                from sandboxes.remote import e2b_kill

                info = {"provider_found": e2b_kill(sandbox.provider_session_id)}
            else:
                problems.append(f"unknown provider {sandbox.provider!r}")
        except Exception as exc:
            problems.append(f"{type(exc).__name__}: {exc}")
    exit_info = {"reason": reason, **info} if sandbox.is_live else {"cleanup": reason, **info}
    return _record_cleanup(sandbox.pk, actor=actor, status=None, exit_info=exit_info, problems=problems)


@transaction.atomic
def _record_stop(sandbox_id: str, *, reason: str) -> None:
    sandbox = Sandbox.objects.select_for_update().get(pk=sandbox_id)
    if sandbox.is_live:
        sandbox.status = Sandbox.Status.STOPPED
        sandbox.stopped_at = timezone.now()
    sandbox.exit_info = {"reason": reason, **sandbox.exit_info}
    sandbox.save(update_fields=["status", "stopped_at", "exit_info"])


def sandboxes_cleanup(*, sandboxes: list[Sandbox], actor: Actor, reason: str) -> list[Sandbox]:
    return [sandbox_destroy(sandbox=sandbox, actor=actor, reason=reason) for sandbox in sandboxes]


def sandboxes_stale(now: datetime | None = None) -> list[Sandbox]:
    """Rows not yet cleaned up that no worker will clean: past budget, run over, or another attempt's."""
    from django.conf import settings

    now = now or timezone.now()
    grace = timedelta(seconds=settings.HARNESS_SANDBOX_CLOSE_GRACE_SECONDS)
    over = Q(run__finished_at__lt=now - grace) | Q(run__status__in=Run.FINISHED_STATUSES, run__finished_at=None)
    other_attempt = Q(run__status=Run.Status.RUNNING) & ~Q(worker_id=F("run__worker_id"))
    requeued = Q(run__status=Run.Status.QUEUED)
    # A workspace on a host lives under its instance's own root: another instance's (another
    # replica, or another harness on this host) is left to that instance's reaper.
    elsewhere = Q(provider__in=providers.HOST_PROVIDERS) & ~Q(
        provider_session_id__startswith=f"{providers.sandbox_root()}/"
    )
    stale = Sandbox.objects.uncleaned().filter(Q(deadline__lt=now) | over | other_attempt | requeued).exclude(elsewhere)
    return list(stale.select_related("run"))


@dataclass
class SandboxReapReport:
    cleaned: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    orphan_workspaces: list[str] = field(default_factory=list)
    orphan_remote: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def sandboxes_reap(*, now: datetime | None = None) -> SandboxReapReport:
    report = SandboxReapReport()
    actor = Actor.system("sandbox reaper")
    for sandbox in sandboxes_stale(now):
        done = sandbox_destroy(sandbox=sandbox, actor=actor, reason="reaped: " + _stale_reason(sandbox, now))
        (report.cleaned if done.cleanup_state == Sandbox.Cleanup.DONE else report.failed).append(sandbox.pk)
    _reap_orphan_workspaces(report, actor)
    if _e2b_configured():
        try:
            _reap_orphan_remote(report, actor)
        except Exception as exc:
            report.errors.append(redact(f"e2b: {type(exc).__name__}: {exc}"))
    return report


def _stale_reason(sandbox: Sandbox, now: datetime | None) -> str:
    if sandbox.deadline < (now or timezone.now()):
        return "past its time budget"
    if sandbox.run.status in Run.FINISHED_STATUSES:
        return f"run is {sandbox.run.status}"
    return "its worker no longer holds the run"


def _e2b_configured() -> bool:
    from django.conf import settings

    return bool(settings.E2B_API_KEY)


def _reap_orphan_workspaces(report: SandboxReapReport, actor: Actor) -> None:
    import time

    root = providers.sandbox_root()
    live = set(
        Sandbox.objects.uncleaned()
        .filter(provider__in=providers.HOST_PROVIDERS)
        .values_list("provider_session_id", flat=True)
    )
    for path in root.iterdir():
        if path.name.startswith(".") and path.name.endswith(".img") and path.is_file() and not path.is_symlink():
            # A workspace image a worker died making (a mounted one is unlinked at once).
            try:
                if time.time() - path.lstat().st_mtime >= ORPHAN_DIR_MIN_AGE_SECONDS:
                    path.unlink()
            except FileNotFoundError:
                pass
            continue
        if str(path) in live or not path.is_dir() or path.is_symlink():
            continue
        try:
            age = time.time() - path.lstat().st_mtime
        except FileNotFoundError:
            continue
        if age < ORPHAN_DIR_MIN_AGE_SECONDS:
            continue
        info = providers.workspace_destroy(path)
        report.orphan_workspaces.append(path.name)
        audit_record(
            action="sandbox.orphan_destroyed",
            actor=actor,
            target_type="sandbox",
            target_id=path.name[:64],
            data={"provider": "local", "workspace": path.name, **info},
        )


def _reap_orphan_remote(report: SandboxReapReport, actor: Actor) -> None:
    from sandboxes.remote import e2b_kill, e2b_list_harness_sandboxes

    listed = e2b_list_harness_sandboxes()
    if not listed:
        return
    rows = Sandbox.objects.filter(
        provider=providers.E2B, status__in=Sandbox.LIVE_STATUSES, run__status=Run.Status.RUNNING
    ).exclude(cleanup_state=Sandbox.Cleanup.DONE)
    live = {handle for pair in rows.values_list("pk", "provider_session_id") for handle in pair if handle}
    for sandbox_id, metadata in listed:
        if sandbox_id in live or metadata.get(providers.E2B_METADATA_SANDBOX) in live:
            continue
        e2b_kill(sandbox_id)
        report.orphan_remote.append(sandbox_id)
        audit_record(
            action="sandbox.orphan_destroyed",
            actor=actor,
            target_type="sandbox",
            target_id=str(metadata.get(providers.E2B_METADATA_SANDBOX, sandbox_id))[:64],
            run_id=str(metadata.get(providers.E2B_METADATA_RUN, ""))[:64],
            data={"provider": "e2b", "provider_session_id": sandbox_id},
        )
