"""Every write to artifacts: the object in the store and its metadata move together."""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, Any

from django.conf import settings
from django.core.files import File
from django.db import transaction
from django.utils import timezone

from artifacts.models import Artifact, new_artifact_id
from artifacts.storage import (
    artifact_storage,
    copy_object,
    object_key,
    presigned_url,
    sanitize_name,
    store_failure,
)
from audit.services import Actor, audit_record
from runs.models import Run

logger = logging.getLogger(__name__)
CHUNK = 1024 * 1024


class ArtifactError(Exception):
    status_code = 422

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ArtifactStoreUnavailable(ArtifactError):
    """The object store cannot be reached or refused the request (the message says which, and where)."""

    status_code = 503


@contextmanager
def store_errors() -> Iterator[None]:
    """Turn a failure of the object store into ArtifactStoreUnavailable with the real reason
    (e.g. "object store unreachable at http://127.0.0.1:9000 (bucket b): connection refused")."""
    try:
        yield
    except ArtifactError:
        raise
    except Exception as exc:
        reason = store_failure(exc)
        if reason is None:
            raise
        logger.warning("object store failed", extra={"reason": reason})
        raise ArtifactStoreUnavailable(reason, field="store") from exc


class ArtifactTooLarge(ArtifactError):
    status_code = 413


class ArtifactNotPending(ArtifactError):
    status_code = 409


# A media type as HTTP writes it (RFC 9110 section 8.3.1): type "/" subtype, then
# parameters `; name=value` with token or quoted-string values. ASCII only: it becomes the
# Content-Type a PUT URL is bound to.
_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # an RFC 9110 token
_QUOTED = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e]|\\[\t\x20-\x7e])*"'
_MEDIA_TYPE = re.compile(rf"{_TCHARS}/{_TCHARS}(?:[ \t]*;[ \t]*(?:{_TCHARS}=(?:{_TCHARS}|{_QUOTED}))?)*")
MAX_CONTENT_TYPE_CHARS = 150


def check_content_type(content_type: str) -> str:
    """`content_type` if it is a media type (`type/subtype[; name=value]...`, at most
    MAX_CONTENT_TYPE_CHARS), else ArtifactError."""
    if len(content_type) > MAX_CONTENT_TYPE_CHARS:
        raise ArtifactError(
            f"content_type: {len(content_type)} characters is over the limit of {MAX_CONTENT_TYPE_CHARS}",
            field="content_type",
        )
    if not _MEDIA_TYPE.fullmatch(content_type):
        raise ArtifactError(
            "content_type: not a media type; expected type/subtype[; name=value]... in visible ASCII "
            "(for example text/plain; charset=utf-8)",
            field="content_type",
        )
    return content_type


def _retention_deadline() -> datetime | None:
    days = settings.ARTIFACTS_RETENTION_DAYS
    return timezone.now() + timedelta(days=days) if days else None


def _check_size(size: int) -> None:
    if size > settings.ARTIFACTS_MAX_BYTES:
        raise ArtifactTooLarge(f"size: {size} bytes is over the limit of {settings.ARTIFACTS_MAX_BYTES}", field="size")


def _audit(action: str, artifact: Artifact, actor: Actor, **data: Any) -> None:
    audit_record(
        action=action,
        actor=actor,
        target_type="artifact",
        target_id=artifact.pk,
        run_id=artifact.run_id,
        data={"name": artifact.name, "object_key": artifact.object_key, "size": artifact.size, **data},
    )


def artifact_save(*, run: Run, name: str, content: bytes, content_type: str, actor: Actor) -> Artifact:
    """Store bytes the harness holds (e.g. from an agent's tool) and record them, ready."""
    safe = sanitize_name(name)
    content_type = check_content_type(content_type or "application/octet-stream")
    _check_size(len(content))
    artifact_id = new_artifact_id()
    key = object_key(run_id=run.pk, artifact_id=artifact_id, name=safe)
    storage = artifact_storage()
    with tempfile.SpooledTemporaryFile(max_size=CHUNK) as buffer, store_errors():
        buffer.write(content)
        buffer.seek(0)
        storage.save(key, File(buffer, name=safe))
    try:
        with transaction.atomic():
            artifact = Artifact.objects.create(
                id=artifact_id,
                run=run,
                name=safe,
                object_key=key,
                content_type=content_type,
                size=len(content),
                sha256=hashlib.sha256(content).hexdigest(),
                status=Artifact.Status.READY,
                ready_at=timezone.now(),
                expires_at=_retention_deadline(),
            )
            _audit("artifact.created", artifact, actor, sha256=artifact.sha256)
    except Exception:
        storage.delete(key)  # no object without its metadata
        raise
    return artifact


@dataclass
class UploadGrant:
    artifact: Artifact
    upload_url: str
    expires_in: int


@transaction.atomic
def artifact_upload_begin(
    *, run: Run, name: str, content_type: str, size: int, sha256: str, actor: Actor
) -> UploadGrant:
    """Reserve an artifact and hand out a PUT URL bound to its key, content type and length."""
    safe = sanitize_name(name)
    check_content_type(content_type)
    if size < 0:
        raise ArtifactError("size: must not be negative", field="size")
    _check_size(size)
    sha256 = sha256.lower()
    if len(sha256) != 64 or any(ch not in "0123456789abcdef" for ch in sha256):
        raise ArtifactError("sha256: expected 64 hex characters", field="sha256")
    artifact_id = new_artifact_id()
    artifact = Artifact.objects.create(
        id=artifact_id,
        run=run,
        name=safe,
        object_key=object_key(run_id=run.pk, artifact_id=artifact_id, name=safe),
        content_type=content_type,
        size=size,
        sha256=sha256,
        status=Artifact.Status.PENDING,
        expires_at=timezone.now() + timedelta(seconds=settings.ARTIFACTS_UPLOAD_WINDOW_SECONDS),
    )
    _audit("artifact.upload_started", artifact, actor)
    expires_in = min(settings.ARTIFACTS_URL_EXPIRY_SECONDS, settings.ARTIFACTS_UPLOAD_WINDOW_SECONDS)
    url = presigned_url(
        key=artifact.upload_key, method="PUT", expires_in=expires_in, content_type=content_type, content_length=size
    )
    return UploadGrant(artifact, url, expires_in)


def artifact_upload_regrant(*, artifact_id: str) -> UploadGrant:
    """A fresh PUT URL for an upload reserved earlier (an `Idempotency-Key` replay of its
    begin); ArtifactNotPending once that upload is over (confirmed, rejected or abandoned)."""
    artifact = Artifact.objects.filter(pk=artifact_id).first()
    if artifact is None:
        raise ArtifactNotPending(
            f"artifact {artifact_id}, reserved by this Idempotency-Key, no longer exists "
            "(rejected or abandoned); use a new key to start a new upload"
        )
    left = int((artifact.expires_at - timezone.now()).total_seconds()) if artifact.expires_at else 0
    if artifact.status != Artifact.Status.PENDING or left <= 0:
        state = artifact.status if artifact.status != Artifact.Status.PENDING else "past its upload window"
        raise ArtifactNotPending(
            f"artifact {artifact_id}, reserved by this Idempotency-Key, is {state}: its upload is over"
        )
    expires_in = min(settings.ARTIFACTS_URL_EXPIRY_SECONDS, left)
    url = presigned_url(
        key=artifact.upload_key,
        method="PUT",
        expires_in=expires_in,
        content_type=artifact.content_type,
        content_length=artifact.size,
    )
    return UploadGrant(artifact, url, expires_in)


def _digest(handle: IO[bytes], limit: int) -> tuple[int, str]:
    digest, total = hashlib.sha256(), 0
    while chunk := handle.read(CHUNK):
        total += len(chunk)
        if total > limit:
            break
        digest.update(chunk)
    return total, digest.hexdigest()


def artifact_upload_confirm(*, artifact: Artifact, actor: Actor) -> Artifact:
    """Check the uploaded object against what was declared; only then is it `ready`.

    1. Copy the upload to the artifact's own key, which no URL can write, and drop the upload.
    2. Hash that copy: what is checked is exactly what will be served.
    3. A mismatch deletes the object and the pending row (nothing half-written is kept)."""
    if artifact.status != Artifact.Status.PENDING:
        raise ArtifactNotPending(f"artifact {artifact.pk} is {artifact.status}, not pending")
    storage = artifact_storage()
    with store_errors():
        if not storage.exists(artifact.upload_key):
            raise ArtifactError("no object has been uploaded to this artifact's URL yet", field="upload")
        copy_object(artifact.upload_key, artifact.object_key)
        storage.delete(artifact.upload_key)
        with storage.open(artifact.object_key, "rb") as handle:
            size, sha256 = _digest(handle, artifact.size)
    problem = None
    if size != artifact.size:
        problem = f"size: uploaded {size}{'+' if size > artifact.size else ''} bytes, declared {artifact.size}"
    elif sha256 != artifact.sha256:
        problem = f"sha256: the uploaded object hashes to {sha256}, declared {artifact.sha256}"
    if problem:
        with store_errors():
            storage.delete(artifact.object_key)
        with transaction.atomic():
            _audit("artifact.rejected", artifact, actor, reason=problem)
            Artifact.objects.filter(pk=artifact.pk).delete()
        raise ArtifactError(f"upload rejected and deleted: {problem}", field=problem.split(":")[0])
    with transaction.atomic():
        updated = Artifact.objects.filter(pk=artifact.pk, status=Artifact.Status.PENDING).update(
            status=Artifact.Status.READY, ready_at=timezone.now(), expires_at=_retention_deadline()
        )
        if updated != 1:
            raise ArtifactNotPending(f"artifact {artifact.pk} is no longer pending")
        artifact.refresh_from_db()
        _audit("artifact.confirmed", artifact, actor, sha256=sha256)
    return artifact


def artifact_download_url(*, artifact: Artifact, expires_in: int | None = None) -> str:
    return presigned_url(key=artifact.object_key, method="GET", expires_in=expires_in)


def artifact_delete(*, artifact: Artifact, actor: Actor) -> None:
    """Remove the object and its metadata, with an audit row."""
    with store_errors():
        artifact_storage().delete(artifact.object_key)
    with transaction.atomic():
        _audit("artifact.deleted", artifact, actor)
        Artifact.objects.filter(pk=artifact.pk).delete()


def artifacts_expire(*, now: datetime | None = None) -> dict[str, int]:
    """Retention: delete the objects of expired artifacts and mark their metadata.

    Ready artifacts past `expires_at` become `expired` (the row stays, the bytes go);
    pending uploads never confirmed by their deadline are removed with their object."""
    now = now or timezone.now()
    storage = artifact_storage()
    actor = Actor.system("retention")
    expired = abandoned = 0
    for artifact in Artifact.objects.filter(status=Artifact.Status.READY, expires_at__lt=now)[:1000]:
        storage.delete(artifact.object_key)
        with transaction.atomic():
            if Artifact.objects.filter(pk=artifact.pk, status=Artifact.Status.READY).update(
                status=Artifact.Status.EXPIRED, expired_at=now
            ):
                _audit("artifact.expired", artifact, actor)
                expired += 1
    for artifact in Artifact.objects.filter(status=Artifact.Status.PENDING, expires_at__lt=now)[:1000]:
        storage.delete(artifact.upload_key)
        storage.delete(artifact.object_key)
        with transaction.atomic():
            _audit("artifact.abandoned", artifact, actor)
            Artifact.objects.filter(pk=artifact.pk, status=Artifact.Status.PENDING).delete()
            abandoned += 1
    if expired or abandoned:
        logger.info("artifact retention", extra={"expired": expired, "abandoned": abandoned})
    return {"expired": expired, "abandoned": abandoned}
