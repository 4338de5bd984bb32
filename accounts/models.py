from __future__ import annotations

import hashlib

from django.conf import settings
from django.db import models

from harness_site.ids import id_field_length, new_id

KEY_PREFIX = "hk_"


def hash_key(raw_key: str) -> str:
    # Keys are 256 random bits: a fast hash is enough (there is nothing to brute-force),
    # and it lets every request find its key with one indexed lookup.
    return hashlib.sha256(raw_key.encode()).hexdigest()


def new_apikey_id() -> str:
    return new_id("key")


class ApiKey(models.Model):
    id = models.CharField(primary_key=True, max_length=id_field_length("key"), default=new_apikey_id, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(
        max_length=12, editable=False, help_text="The first characters of the key, to recognise it."
    )
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name or self.user})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class IdempotencyKey(models.Model):
    """What a creating request with an `Idempotency-Key` made, kept HARNESS_IDEMPOTENCY_HOURS
    per principal: the same key and request give back the same resource."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    # sha256 of the method, path and canonical body: the same key with another request is refused.
    request_hash = models.CharField(max_length=64)
    resource_type = models.CharField(max_length=32)
    resource_id = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "key"], name="idempotency_key_unique")]

    def __str__(self) -> str:
        return f"{self.owner_id}:{self.key} -> {self.resource_type} {self.resource_id}"
