from __future__ import annotations

import secrets
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from accounts.models import KEY_PREFIX, ApiKey, hash_key
from audit.services import Actor, audit_record
from common.db import unique_row

# Touching last_used_at on every request would turn reads into writes.
LAST_USED_RESOLUTION = timedelta(minutes=5)


@transaction.atomic
def apikey_create(*, user: User, name: str = "", actor: Actor) -> tuple[ApiKey, str]:
    """Create a key for `user`. Returns the row and the raw key, which is never stored."""
    raw_key = KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(user=user, name=name, prefix=raw_key[:10], key_hash=hash_key(raw_key))
    audit_record(
        action="api_key.created",
        actor=actor,
        target_type="api_key",
        target_id=api_key.pk,
        data={"user": user.get_username(), "name": name, "prefix": api_key.prefix},
    )
    return api_key, raw_key


@transaction.atomic
def apikey_revoke(*, api_key: ApiKey, actor: Actor) -> bool:
    """Revoke a key. Returns False when it was already revoked."""
    updated = ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    if updated != 1:
        return False
    api_key.refresh_from_db(fields=["revoked_at"])
    audit_record(
        action="api_key.revoked",
        actor=actor,
        target_type="api_key",
        target_id=api_key.pk,
        data={"user": api_key.user.get_username(), "prefix": api_key.prefix},
    )
    return True


def user_get_or_create(*, username: str) -> tuple[User, bool]:
    user, created = get_user_model().objects.get_or_create(username=username)
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user, created


def apikey_authenticate(*, raw_key: str) -> ApiKey | None:
    """The active key matching `raw_key`, or None."""
    if not raw_key.startswith(KEY_PREFIX) or len(raw_key) > 200:
        return None
    api_key = unique_row(
        ApiKey.objects.select_related("user").filter(
            key_hash=hash_key(raw_key), revoked_at__isnull=True, user__is_active=True
        )
    )
    if api_key is None:
        return None
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    return api_key
