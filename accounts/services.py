from __future__ import annotations

import secrets
from datetime import timedelta
from functools import cache

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.utils import timezone

from accounts.models import KEY_PREFIX, ApiKey, hash_key
from audit.services import Actor, audit_record
from common.sql import columns, fetch_models

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
    """The active key matching `raw_key` (its user loaded with it), or None."""
    key_hash = key_hash_of(raw_key)
    if key_hash is None:
        return None
    found = fetch_models(active_key_sql("k.key_hash = %s"), [key_hash], ApiKey, User)
    return None if found is None else apikey_found(*found)


def key_hash_of(raw_key: str) -> str | None:
    """What a key is stored as, or None for text that cannot be one of our keys."""
    if not raw_key.startswith(KEY_PREFIX) or len(raw_key) > 200:
        return None
    return hash_key(raw_key)


@cache
def active_key_sql(where: str, *extra: str) -> str:
    """One statement for an active key (not revoked, its user active) and its user, the columns
    `fetch_models(sql, params, ApiKey, User)` reads, then `extra` columns; `k` is the key and
    `u` the user. Compiled once per shape: this runs on every API request."""
    quote = connection.ops.quote_name
    selected = ", ".join([columns(ApiKey, "k"), columns(User, "u"), *extra])
    return (
        f"SELECT {selected} FROM {quote(ApiKey._meta.db_table)} k "  # noqa: S608 (names are ours)
        f"INNER JOIN {quote(User._meta.db_table)} u ON u.id = k.user_id "
        f"WHERE {where} AND k.revoked_at IS NULL AND u.is_active"
    )


def apikey_found(api_key: ApiKey, user: User) -> ApiKey:
    """A key `active_key_sql` found: its user attached, its last use noted (at most every
    LAST_USED_RESOLUTION, so that reads stay reads)."""
    ApiKey.user.field.set_cached_value(api_key, user)
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    return api_key
