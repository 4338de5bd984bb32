"""The artifact store and its one helper for scoped, short-lived URLs.

`presigned_url` issues a GET or PUT URL for exactly one object key. On R2/S3 it is a
SigV4 presigned URL (a PUT is bound to its content type and length: both are signed
headers). On the local-disk default it is a harness-signed URL served by
`/artifacts/blob/<token>`, which enforces the same rules: one key, one method, an
expiry, the bound content type and length, and any tampering rejected.
"""

from __future__ import annotations

import re
import time
import unicodedata
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

from django.conf import settings
from django.core import signing
from django.core.files.storage import Storage, storages
from django.urls import reverse

TOKEN_SALT = "artifacts.blob"  # noqa: S105 (a signing namespace, not a secret)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class InvalidName(ValueError):
    pass


def artifact_storage() -> Storage:
    return storages["artifacts"]


def uses_object_store() -> bool:
    return bool(settings.R2_BUCKET)


def sanitize_name(name: str) -> str:
    """A safe file name, or InvalidName. Refuses paths, traversal, NUL and control characters."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidName("name must not be empty")
    if "\x00" in name or any(unicodedata.category(ch) == "Cc" for ch in name):
        raise InvalidName("name must not contain NUL or control characters")
    if "/" in name or "\\" in name or name.strip() in (".", "..") or name.startswith("~"):
        raise InvalidName("name must be a file name, not a path (no '/', '\\', '..')")
    cleaned = _UNSAFE.sub("_", unicodedata.normalize("NFKC", name.strip())).strip("._") or "file"
    if len(cleaned) > 120:
        stem, dot, ext = cleaned.rpartition(".")
        cleaned = (stem[: 120 - len(ext) - 1] + dot + ext) if dot and len(ext) <= 16 else cleaned[:120]
    return cleaned


def object_key(*, run_id: str, artifact_id: str, name: str) -> str:
    return f"runs/{run_id}/{artifact_id}/{name}"


def clamp_expiry(expires_in: int | None) -> int:
    wanted = expires_in or settings.ARTIFACTS_URL_EXPIRY_SECONDS
    return max(1, min(int(wanted), settings.ARTIFACTS_URL_MAX_EXPIRY_SECONDS))


def presigned_url(
    *,
    key: str,
    method: str,
    expires_in: int | None = None,
    content_type: str | None = None,
    content_length: int | None = None,
) -> str:
    """A URL that allows `method` on `key` only, until it expires."""
    if method not in ("GET", "PUT"):
        raise ValueError(f"unsupported method {method!r}")
    seconds = clamp_expiry(expires_in)
    if uses_object_store():
        storage: Any = artifact_storage()
        client = storage.connection.meta.client
        params: dict[str, Any] = {"Bucket": storage.bucket_name, "Key": key}
        if method == "PUT":
            params["ContentType"] = content_type or "application/octet-stream"
            if content_length is not None:
                params["ContentLength"] = content_length
        operation = "get_object" if method == "GET" else "put_object"
        return client.generate_presigned_url(operation, Params=params, ExpiresIn=seconds, HttpMethod=method)
    payload = {"k": key, "m": method, "e": int(time.time()) + seconds}
    if method == "PUT":
        payload["ct"] = content_type or "application/octet-stream"
        payload["n"] = content_length
    token = signing.dumps(payload, salt=TOKEN_SALT, compress=True)
    return urljoin(settings.SITE_URL + "/", reverse("artifact-blob", args=[token]).lstrip("/"))


def copy_object(source: str, target: str) -> None:
    """Copy inside the store (server-side on S3)."""
    storage: Any = artifact_storage()
    if uses_object_store():
        storage.connection.meta.client.copy_object(
            Bucket=storage.bucket_name, Key=target, CopySource={"Bucket": storage.bucket_name, "Key": source}
        )
        return
    with storage.open(source, "rb") as handle:
        storage.save(target, handle)


@dataclass(frozen=True)
class BlobGrant:
    key: str
    method: str
    content_type: str | None
    content_length: int | None


def blob_grant_read(token: str) -> BlobGrant | None:
    """What a harness-signed URL allows, or None if it is tampered with or expired."""
    try:
        payload = signing.loads(token, salt=TOKEN_SALT)
    except signing.BadSignature:
        return None
    if not isinstance(payload, dict) or payload.get("e", 0) < time.time():
        return None
    return BlobGrant(payload["k"], payload["m"], payload.get("ct"), payload.get("n"))
