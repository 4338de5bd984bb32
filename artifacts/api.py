from __future__ import annotations

from datetime import datetime

from django.http import HttpRequest
from ninja import Field, Router, Schema, Status
from ninja.errors import HttpError

from artifacts import services
from artifacts.models import Artifact
from artifacts.storage import InvalidName
from audit.services import Actor
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
    name: str = Field(description="A file name (no path).", max_length=200)
    content_type: str = Field("application/octet-stream", max_length=150)
    size: int = Field(description="Exact length in bytes; the PUT URL is bound to it.")
    sha256: str = Field(description="Hex SHA-256 of the bytes; checked on confirm.")


class UploadOut(Schema):
    artifact: ArtifactOut
    upload_url: str = Field(description="PUT the bytes here with the same Content-Type and Content-Length.")
    expires_in: int


def _artifact_or_404(request: HttpRequest, artifact_id: str) -> Artifact:
    artifact = Artifact.objects.filter(pk=artifact_id, run__owner=request.auth).first()  # type: ignore[attr-defined]
    if artifact is None:
        raise HttpError(404, f"artifact {artifact_id!r} not found")
    return artifact


def _raise(exc: services.ArtifactError | InvalidName) -> None:
    if isinstance(exc, InvalidName):
        raise HttpError(422, f"name: {exc}") from None
    raise HttpError(exc.status_code, str(exc)) from None


@router.get("/runs/{run_id}/artifacts", response={200: list[ArtifactOut], 404: ErrorOut}, summary="A run's artifacts")
def list_run_artifacts(request: HttpRequest, run_id: str) -> list[Artifact]:
    run = get_run_or_404(request, run_id)
    return list(run.artifacts.order_by("id"))


@router.post(
    "/runs/{run_id}/artifacts",
    response={201: UploadOut, 404: ErrorOut, 413: ErrorOut, 422: ErrorOut},
    summary="Start an upload",
)
def start_upload(request: HttpRequest, run_id: str, payload: UploadIn) -> Status:
    run = get_run_or_404(request, run_id)
    try:
        grant = services.artifact_upload_begin(
            run=run,
            name=payload.name,
            content_type=payload.content_type,
            size=payload.size,
            sha256=payload.sha256,
            actor=Actor.for_api_key(request.api_key),  # type: ignore[attr-defined]
        )
    except (services.ArtifactError, InvalidName) as exc:
        _raise(exc)
    return Status(201, {"artifact": grant.artifact, "upload_url": grant.upload_url, "expires_in": grant.expires_in})


@router.post(
    "/artifacts/{artifact_id}/confirm",
    response={200: ArtifactOut, 404: ErrorOut, 409: ErrorOut, 422: ErrorOut},
    summary="Confirm an upload",
)
def confirm_upload(request: HttpRequest, artifact_id: str) -> Artifact:
    artifact = _artifact_or_404(request, artifact_id)
    try:
        return services.artifact_upload_confirm(artifact=artifact, actor=Actor.for_api_key(request.api_key))  # type: ignore[attr-defined]
    except services.ArtifactError as exc:
        _raise(exc)
        raise


@router.get(
    "/artifacts/{artifact_id}",
    response={200: ArtifactWithUrlOut, 404: ErrorOut},
    summary="An artifact and a download URL",
)
def get_artifact(request: HttpRequest, artifact_id: str) -> dict[str, object]:
    artifact = _artifact_or_404(request, artifact_id)
    url = services.artifact_download_url(artifact=artifact) if artifact.status == Artifact.Status.READY else None
    return {**ArtifactOut.from_orm(artifact).dict(), "download_url": url}
