"""`Idempotency-Key` for creating requests: a client that retries a request whose answer it
never saw (a timeout, a dropped connection) gets the resource the first attempt created,
not a second one.

The key is recorded in the creating transaction, unique per principal: of two concurrent
requests with one key, one creates and the other, refused by the constraint, answers with
what the first made. The same key with another request (method, path or body) is 422.
Keys are kept HARNESS_IDEMPOTENCY_HOURS; older ones are forgotten (and purged hourly).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import IdempotencyKey

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


class IdempotencyError(Exception):
    status_code = 422


def idempotency_key_of(headers: Any) -> str | None:
    """The request's key, checked: 1-255 visible ASCII characters."""
    key = headers.get(HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(33 <= ord(char) <= 126 for char in key):
        raise IdempotencyError(f"{HEADER}: 1 to {MAX_KEY_LENGTH} visible ASCII characters (a UUID, say)")
    return key


def request_hash(method: str, path: str, body: Any) -> str:
    canonical = json.dumps([method, path, body], sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _window_start() -> Any:
    return timezone.now() - timedelta(hours=settings.HARNESS_IDEMPOTENCY_HOURS)


def _earlier(owner_id: int, key: str, fingerprint: str) -> IdempotencyKey | None:
    row = IdempotencyKey.objects.filter(owner_id=owner_id, key=key).first()
    if row is None:
        return None
    if row.created_at < _window_start():
        row.delete()  # expired: the key is free again
        return None
    if row.request_hash != fingerprint:
        raise IdempotencyError(
            f"{HEADER} {key!r} was used for a different request (another body or path) in the last "
            f"{settings.HARNESS_IDEMPOTENCY_HOURS} h; use a new key for a new request"
        )
    return row


def idempotent_create[R](
    *,
    owner_id: int,
    key: str | None,
    fingerprint: str,
    resource_type: str,
    create: Callable[[], R],
    resource_id: Callable[[R], str],
    load: Callable[[str], R],
) -> tuple[R, bool]:
    """`create()` once per key: (the resource, whether this call replayed an earlier one)."""
    if key is None:
        return create(), False
    earlier = _earlier(owner_id, key, fingerprint)
    if earlier is not None:
        return load(earlier.resource_id), True
    try:
        with transaction.atomic():
            made = create()
            IdempotencyKey.objects.create(
                owner_id=owner_id,
                key=key,
                request_hash=fingerprint,
                resource_type=resource_type,
                resource_id=resource_id(made),
            )
    except IntegrityError:
        # A concurrent request with this key committed first: answer with what it made.
        earlier = _earlier(owner_id, key, fingerprint)
        if earlier is None:
            raise
        return load(earlier.resource_id), True
    return made, False


def idempotency_purge() -> int:
    """Forget keys older than HARNESS_IDEMPOTENCY_HOURS (an hourly job)."""
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=_window_start()).delete()
    return deleted
