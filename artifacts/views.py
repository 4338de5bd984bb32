"""`/artifacts/blob/<token>`: the local-disk stand-in for presigned object-store URLs.

It enforces what an S3 presigned URL does: the token names one key and one method and
expires; a PUT must carry the bound content type and length and may not replace an
existing object. Nothing else is reachable: no listing, no other key, no other method.
"""

from __future__ import annotations

import tempfile

from django.conf import settings
from django.core.files import File
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from artifacts.storage import artifact_storage, blob_grant_read

CHUNK = 1024 * 1024


def _refuse(status: int, detail: str) -> JsonResponse:
    return JsonResponse({"detail": detail}, status=status)


@csrf_exempt  # the signed token is the credential; no cookie is involved
def artifact_blob(request: HttpRequest, token: str) -> HttpResponse | FileResponse:
    grant = blob_grant_read(token)
    if grant is None:
        return _refuse(403, "this URL is invalid or has expired")
    if request.method != grant.method:
        return _refuse(403, f"this URL allows {grant.method} only")
    storage = artifact_storage()
    if grant.method == "GET":
        if not storage.exists(grant.key):
            return _refuse(404, "no such object")
        return FileResponse(storage.open(grant.key, "rb"), as_attachment=True, filename=grant.key.rsplit("/", 1)[-1])
    content_type = request.headers.get("Content-Type", "")
    if content_type != grant.content_type:
        return _refuse(403, f"Content-Type must be {grant.content_type!r} for this URL")
    try:
        length = int(request.headers.get("Content-Length", ""))
    except ValueError:
        return _refuse(411, "Content-Length is required")
    if grant.content_length is not None and length != grant.content_length:
        return _refuse(403, f"Content-Length must be {grant.content_length} for this URL")
    if length > settings.ARTIFACTS_MAX_BYTES:
        return _refuse(413, "object over the size limit (ARTIFACTS_MAX_BYTES)")
    if storage.exists(grant.key):
        return _refuse(409, "an object already exists at this URL")
    with tempfile.TemporaryFile() as spool:
        received = 0
        while chunk := request.read(min(CHUNK, length - received)) if received < length else b"":
            received += len(chunk)
            spool.write(chunk)
        if received != length:
            return _refuse(400, f"body ended after {received} of {length} bytes; nothing was stored")
        spool.seek(0)
        storage.save(grant.key, File(spool, name=grant.key.rsplit("/", 1)[-1]))
    return HttpResponse(status=200)
