"""Keep secrets out of logs, run errors, events and audit payloads.

Two nets: the literal values of configured secrets (whatever their shape), and
patterns for credentials that arrive from outside (API keys, bearer tokens,
passwords inside URLs).
"""

from __future__ import annotations

import functools
import re
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

REDACTED = "[REDACTED]"

_PATTERNS = [
    # This harness's own API keys.
    re.compile(r"hk_[A-Za-z0-9_-]{16,}"),
    # OpenAI-style and other provider keys.
    re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"),
    re.compile(r"\be2b_[A-Za-z0-9]{8,}"),
    # Authorization headers.
    re.compile(r"(?i)(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"),
    # Signatures of presigned object-store URLs and harness-signed blob URLs.
    re.compile(r"(?<=X-Amz-Signature=)[0-9a-fA-F]+"),
    re.compile(r"(?<=X-Amz-Credential=)[^&\s]+"),
    re.compile(r"(?<=/artifacts/blob/)[^\s/?\"']+"),
    # Stream tokens in a URL's query (?token=...): they open a run's stream for minutes.
    re.compile(r"(?<=[?&]token=)[^&\s\"']+"),
    # user:password@ in any URL.
    re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"),
]

_SECRET_SETTINGS = (
    "SECRET_KEY",
    "OPENAI_API_KEY",
    "REDIS_URL",
    "DATABASE_URL",
    "DIRECT_DATABASE_URL",
    "R2_SECRET_ACCESS_KEY",
    "R2_ACCESS_KEY_ID",
    "E2B_API_KEY",
)


@functools.cache
def _secret_values() -> tuple[str, ...]:
    values: set[str] = set()
    for name in _SECRET_SETTINGS:
        value = getattr(settings, name, "") or ""
        if len(value) >= 6:
            values.add(value)
    for alias in settings.DATABASES.values():
        password = alias.get("PASSWORD") or ""
        if len(password) >= 4:
            values.add(password)
    for name in ("REDIS_URL",):
        password = urlsplit(getattr(settings, name, "") or "").password
        if password and len(password) >= 4:
            values.add(password)
    # Longest first so a secret that contains another is replaced whole.
    return tuple(sorted(values, key=len, reverse=True))


@receiver(setting_changed)
def _forget_secret_values(**kwargs: Any) -> None:
    _secret_values.cache_clear()


def redact(text: str) -> str:
    if not text:
        return text
    for value in _secret_values():
        if value in text:
            text = text.replace(value, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


def redact_data(value: Any) -> Any:
    """Redact every string inside a JSON-like structure."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_data(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_data(item) for item in value]
    return value
