from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from ninja import Field, Router, Schema, Status
from ninja.errors import HttpError

from accounts.idempotency import idempotency_key_of, idempotent_create, request_hash
from artifacts import services
from artifacts.models import Artifact
from artifacts.storage import InvalidName
from audit.services import Actor
from common.text import SafeStr, text_problem
from runs.api import get_run_or_404
from runs.schemas import ErrorOut

router = Router(tags=["artifacts"])


class ArtifactOut(Schema):
    id: str
    run_id: str
    name: str
    object_key: str
    content_type: str
    size: int
    sha256: str
    status: str
    created_at: datetime
    ready_at: datetime | None
    expires_at: datetime | None


class ArtifactWithUrlOut(ArtifactOut):
    download_url: str | None = Field(description="Short-lived GET URL for this object only; null unless ready.")


class UploadIn(Schema):
    name: SafeStr = Field(description="A file name (no path).", max_length=200)
    content_type: SafeStr = Field("application/octet-stream", max_length=150)
    size: int = Field(
        description="Exact length in bytes; the PUT URL is bound to it. Over ARTIFACTS_MAX_BYTES: 413.",
        json_schema_extra={"minimum": 0, "maximum": settings.ARTIFACTS_MAX_BYTES},
    )
    sha256: SafeStr = Field(
        description="Hex SHA-256 of the bytes; checked on confirm.",
        json_schema_extra={"pattern": "^[0-9a-fA-F]{64}$"},
    )


class UploadOut(Schema):
    artifact: ArtifactOut
    upload_url: str = Field(description="PUT the bytes here with the same Content-Type and Content-Length.")
    expires_in: int


def _artifact_or_404(request: HttpRequest, artifact_id: str) -> Artifact:
    if text_problem(artifact_id):  # an id no artifact can have (and Postgres cannot even look up)
        raise HttpError(404, f"artifact {artifact_id!r} not found")
    artifact = Artifact.objects.filter(pk=artifact_id, run__owner=request.auth).first()  # type: ignore[attr-defined]
    if artifact is None:
        raise HttpError(404, f"artifact {artifact_id!r} not found")
    return artifact


def _raise(exc: services.ArtifactError | InvalidName) -> None:
    if isinstance(exc, InvalidName):
        raise HttpError(422, f"name: {exc}") from None
    raise HttpError(exc.status_code, str(exc)) from None


@router.get("/runs/{run_id}/artifacts", response={200: list[ArtifactOut], 404: ErrorOut}, summary="A run's artifacts")
def list_run_artifacts(request: HttpRequest, run_id: SafeStr) -> list[Artifact]:
    run = get_run_or_404(request, run_id)
    return list(run.artifacts.order_by("id"))


@router.post(
    "/runs/{run_id}/artifacts",
    response={201: UploadOut, 404: ErrorOut, 409: ErrorOut, 413: ErrorOut, 422: ErrorOut},
    summary="Start an upload",
)
def start_upload(request: HttpRequest, run_id: SafeStr, payload: UploadIn, response: HttpResponse) -> Status:
    """With an `Idempotency-Key` header, a repeat of the same request (within
    HARNESS_IDEMPOTENCY_HOURS) answers with the artifact the first one reserved and a fresh
    upload URL, and `Idempotent-Replayed: true` (`409` once that upload is over); the same
    key with another body is `422`."""
    key = idempotency_key_of(request.headers)
    run = get_run_or_404(request, run_id)
    actor = Actor.for_api_key(request.api_key)  # type: ignore[attr-defined]

    def create() -> services.UploadGrant:
        return services.artifact_upload_begin(
            run=run,
            name=payload.name,
            content_type=payload.content_type,
            size=payload.size,
            sha256=payload.sha256,
            actor=actor,
        )

    try:
        grant, replayed = idempotent_create(
            owner_id=request.auth.pk,  # type: ignore[attr-defined]
            key=key,
            fingerprint=request_hash("POST", f"/api/runs/{run.pk}/artifacts", payload.model_dump(mode="json")),
            resource_type="artifact",
            create=create,
            resource_id=lambda grant: grant.artifact.pk,
            load=lambda artifact_id: services.artifact_upload_regrant(artifact_id=artifact_id),
        )
    except (services.ArtifactError, InvalidName) as exc:
        _raise(exc)
    if replayed:
        response["Idempotent-Replayed"] = "true"
    return Status(201, {"artifact": grant.artifact, "upload_url": grant.upload_url, "expires_in": grant.expires_in})


class _NotRecorded(Exception):
    """No earlier request recorded this Idempotency-Key (the probe of `_replay` found nothing)."""


def _replay(owner_id: int, key: str, fingerprint: str) -> Artifact | None:
    """The artifact an earlier request with this key confirmed, or None (a 422 if the key was
    used for another request). Nothing is written."""

    def nothing_recorded() -> Artifact:
        raise _NotRecorded

    try:
        artifact, _ = idempotent_create(
            owner_id=owner_id,
            key=key,
            fingerprint=fingerprint,
            resource_type="artifact",
            create=nothing_recorded,
            resource_id=lambda artifact: artifact.pk,
            load=lambda artifact_id: Artifact.objects.get(pk=artifact_id),
        )
    except _NotRecorded:
        return None
    return artifact


@router.post(
    "/artifacts/{artifact_id}/confirm",
    response={200: ArtifactOut, 404: ErrorOut, 409: ErrorOut, 422: ErrorOut, 503: ErrorOut},
    summary="Confirm an upload",
)
def confirm_upload(request: HttpRequest, artifact_id: SafeStr, response: HttpResponse) -> Artifact:
    """With an `Idempotency-Key` header, a repeat of a confirm that succeeded answers with the
    artifact (`200`, `Idempotent-Replayed: true`) instead of `409`; the same key with another
    request is `422`. A confirm that failed records no key: its retry is checked again."""
    key = idempotency_key_of(request.headers)
    artifact = _artifact_or_404(request, artifact_id)
    owner_id = request.auth.pk  # type: ignore[attr-defined]
    fingerprint = request_hash("POST", f"/api/artifacts/{artifact.pk}/confirm", None)
    if key is not None and (earlier := _replay(owner_id, key, fingerprint)) is not None:
        response["Idempotent-Replayed"] = "true"
        return earlier
    try:
        # The check runs outside any transaction: a rejected upload is deleted for good.
        confirmed = services.artifact_upload_confirm(artifact=artifact, actor=Actor.for_api_key(request.api_key))  # type: ignore[attr-defined]
    except services.ArtifactError as exc:
        _raise(exc)
        raise
    if key is None:
        return confirmed
    confirmed, replayed = idempotent_create(
        owner_id=owner_id,
        key=key,
        fingerprint=fingerprint,
        resource_type="artifact",
        create=lambda: confirmed,
        resource_id=lambda artifact: artifact.pk,
        load=lambda artifact_id: Artifact.objects.get(pk=artifact_id),
    )
    if replayed:
        response["Idempotent-Replayed"] = "true"
    return confirmed


@router.get(
    "/artifacts/{artifact_id}",
    response={200: ArtifactWithUrlOut, 404: ErrorOut},
    summary="An artifact and a download URL",
)
def get_artifact(request: HttpRequest, artifact_id: SafeStr) -> dict[str, object]:
    artifact = _artifact_or_404(request, artifact_id)
    url = services.artifact_download_url(artifact=artifact) if artifact.status == Artifact.Status.READY else None
    return {**ArtifactOut.from_orm(artifact).dict(), "download_url": url}
