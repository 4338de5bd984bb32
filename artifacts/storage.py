"""The artifact store and its one helper for scoped, short-lived URLs.

`presigned_url` issues a GET or PUT URL for exactly one object key. On R2/S3 it is a
SigV4 presigned URL (a PUT is bound to its content type and length: both are signed
headers). On the local-disk default it is a harness-signed URL served by
`/artifacts/blob/<token>`, which enforces the same rules: one key, one method, an
expiry, the bound content type and length, and any tampering rejected.
"""

from __future__ import annotations

import re
import socket
import time
import unicodedata
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from django.conf import settings
from django.core import signing
from django.core.files.storage import Storage, storages
from django.urls import reverse

TOKEN_SALT = "artifacts.blob"  # noqa: S105 (a signing namespace, not a secret)
# Longest stored name: in characters, and in UTF-8 bytes (a file system allows 255 per component).
MAX_NAME_CHARS, MAX_NAME_BYTES = 120, 200
_DOTS = re.compile(r"\.{2,}")
_REPLACED = "\x00"  # stands for a replaced character while a name is built


class InvalidName(ValueError):
    pass


def artifact_storage() -> Storage:
    return storages["artifacts"]


def uses_object_store() -> bool:
    return bool(settings.R2_BUCKET)


def _name_char(char: str) -> str:
    """A character of a stored name: letters, digits and combining marks of any script, '.', '_', '-'."""
    if char in "._-" or unicodedata.category(char)[0] in "LNM":
        return char
    return "_"


def sanitize_name(name: str) -> str:
    """A safe file name, or InvalidName. Refuses paths, traversal, NUL and control characters.

    The name is NFC-normalized; Unicode letters, digits and combining marks are kept, every
    other character (spaces, symbols, format characters such as bidi overrides) becomes '_'.
    Leading dots and underscores go, runs of dots become one (no '..'), and the name is cut
    to MAX_NAME_CHARS characters and MAX_NAME_BYTES UTF-8 bytes, keeping a short extension."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidName("name must not be empty")
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in name):
        raise InvalidName("name must not contain NUL, control characters or lone surrogates")
    if "/" in name or "\\" in name or name.strip() in (".", "..") or name.startswith("~"):
        raise InvalidName("name must be a file name, not a path (no '/', '\\', '..')")
    kept: list[str] = []
    for char in unicodedata.normalize("NFC", name.strip()):
        safe = _name_char(char)
        if safe != char and kept and kept[-1] == _REPLACED:
            continue  # a run of unsafe characters becomes one '_'
        kept.append(_REPLACED if safe != char else char)
    cleaned = _DOTS.sub(".", "".join(kept).replace(_REPLACED, "_"))
    stem, dot, ext = cleaned.rpartition(".")
    if dot and stem and not stem.strip("._"):
        cleaned = "file." + ext  # a stem of symbols only ("✓.txt"): keep the extension
    return _bounded(cleaned.strip("._") or "file")


def _bounded(name: str) -> str:
    def fits(text: str) -> bool:
        return len(text) <= MAX_NAME_CHARS and len(text.encode()) <= MAX_NAME_BYTES

    if fits(name):
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext) > 16:
        stem, ext = name, ""
    suffix = f".{ext}" if ext else ""
    while stem and not fits(stem + suffix):
        stem = stem[:-1]
    return (stem.rstrip("._") or "file") + suffix


def store_location() -> str:
    """Where the object store is, without credentials: scheme://host[:port] and the bucket."""
    storage: Any = artifact_storage()
    endpoint = getattr(storage, "endpoint_url", None) or settings.S3_ENDPOINT_URL or ""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    where = f"{parts.scheme}://{host}" if parts.scheme and host else "the default S3 endpoint"
    return f"{where} (bucket {getattr(storage, 'bucket_name', '') or settings.R2_BUCKET})"


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception, what it wraps (botocore keeps it in kwargs["error"]) and its chain."""
    seen: list[BaseException] = []
    todo: list[object] = [exc]
    while todo and len(seen) < 20:
        current = todo.pop(0)
        if not isinstance(current, BaseException) or any(current is done for done in seen):
            continue
        seen.append(current)
        kwargs = getattr(current, "kwargs", None)
        todo += [kwargs.get("error") if isinstance(kwargs, dict) else None, current.__cause__, current.__context__]
    return seen


def store_failure(exc: BaseException) -> str | None:
    """Why the object store could not be used, in words (no credentials), or None when `exc`
    is not a failure of the store (a bug is left to surface as itself)."""
    if not uses_object_store():
        return None
    from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, ReadTimeoutError

    causes = _causes(exc)
    text = " ".join(str(cause) for cause in causes).lower()
    where = store_location()
    client_error = next((cause for cause in causes if isinstance(cause, ClientError)), None)
    if client_error is not None:
        error = client_error.response.get("Error", {})
        code = error.get("Code") or "error"
        return f"object store at {where} refused the request: {code} {error.get('Message') or ''}".strip()
    if not any(isinstance(cause, BotoCoreError | OSError) for cause in causes):
        return None
    if any(isinstance(cause, ConnectionRefusedError) for cause in causes) or "connection refused" in text:
        reason = "connection refused"
    elif any(isinstance(cause, socket.gaierror) for cause in causes) or "name or service not known" in text:
        reason = "host name not found"
    elif any(isinstance(cause, ConnectTimeoutError | ReadTimeoutError | TimeoutError) for cause in causes):
        reason = "timed out"
    else:
        first = causes[0]
        reason = f"{type(first).__name__}: {first}"
    return f"object store unreachable at {where}: {reason}"


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
