"""Keep secrets out of logs, run errors, events and audit payloads.

Two nets: the values of configured secrets (whatever their shape), literally and in
the encodings an upstream may echo them in, and patterns for credentials that arrive
from outside (API keys, bearer tokens, passwords inside URLs).

The encodings of a secret that are caught (`secret_forms`):
- base64, standard and URL-safe, with or without padding; and the secret base64-encoded
  inside a longer base64 text (`user:secret` in a Basic header, say) at any of the three
  byte offsets it can start at: the characters that encode only the secret's bytes are
  replaced (the one or two at each edge shared with the neighbouring bytes stay);
- percent-encoding (every reserved character encoded, or all but '/', or '+' for spaces;
  upper- or lower-case hex digits), and the percent-encoded base64 forms;
- hexadecimal, lower- and upper-case.
Encoded forms shorter than 8 characters are left alone (they would match ordinary text).
"""

from __future__ import annotations

import base64
import functools
import re
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

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


_MIN_ENCODED_CHARS = 8
_URLSAFE = str.maketrans("+/", "-_")
_PERCENT = re.compile(r"%[0-9A-F]{2}")


def _base64_forms(raw: bytes) -> set[str]:
    whole = base64.b64encode(raw).decode()
    forms = {whole, whole.rstrip("=")}
    for offset in range(3):
        # The secret's bytes starting `offset` bytes into a 3-byte group of a longer text:
        # keep only the characters whose 6 bits all come from the secret.
        encoded = base64.b64encode(b"\0" * offset + raw).decode().rstrip("=")
        start, end = -(-8 * offset // 6), 8 * (offset + len(raw)) // 6
        forms.add(encoded[start:end])
    return forms | {form.translate(_URLSAFE) for form in forms}


def _percent_forms(text: str) -> set[str]:
    forms = {quote(text, safe=""), quote(text), quote_plus(text, safe="")}
    forms |= {_PERCENT.sub(lambda match: match.group().lower(), form) for form in forms}
    return forms - {text}


def secret_forms(secret: str) -> set[str]:
    """The secret and the encodings of it that are redacted too (see the module's docstring)."""
    raw = secret.encode()
    encoded = _base64_forms(raw)
    encoded |= {form for b64 in list(encoded) for form in _percent_forms(b64)}
    encoded |= _percent_forms(secret) | {raw.hex(), raw.hex().upper()}
    return {secret} | {form for form in encoded if len(form) >= _MIN_ENCODED_CHARS}


@functools.cache
def _secret_forms() -> tuple[str, ...]:
    forms = {form for value in _secret_values() for form in secret_forms(value)}
    # Longest first so a form that contains another is replaced whole.
    return tuple(sorted(forms, key=len, reverse=True))


# What every one of _PATTERNS needs somewhere in a text to match: a text without any of these is
# left as it is without running them (every event, span and audit payload string passes here).
_PATTERN_ANCHORS = re.compile(r"(?i:bearer|basic)|hk_|sk-|e2b_|X-Amz-|/artifacts/blob/|token=|://")


@functools.cache
def _shortest_secret_form() -> int:
    return min((len(form) for form in _secret_forms()), default=0)


@receiver(setting_changed)
def _forget_secret_values(**kwargs: Any) -> None:
    _secret_values.cache_clear()
    _secret_forms.cache_clear()
    _shortest_secret_form.cache_clear()


def redact(text: str) -> str:
    if not text:
        return text
    forms = _secret_forms()
    if forms and len(text) >= _shortest_secret_form():
        for value in forms:
            if value in text:
                text = text.replace(value, REDACTED)
    if _PATTERN_ANCHORS.search(text):
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
