"""Caps on stored text: whatever an agent prints, what the harness keeps is bounded.

A cut text ends with a marker that says how much there was, so a reader never takes
a truncated text for the whole of it.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings


def truncation_marker(total: int, kept: int) -> str:
    return f"\n[truncated: {total} characters, kept the first {kept}]"


def clip_text(text: str, limit: int | None = None) -> tuple[str, bool]:
    """`text` cut to at most `limit` characters (HARNESS_MAX_STORED_CHARS), marker included."""
    limit = settings.HARNESS_MAX_STORED_CHARS if limit is None else limit
    if len(text) <= limit:
        return text, False
    marker = truncation_marker(len(text), 0)
    keep = max(0, limit - len(marker) - 8)
    return text[:keep] + truncation_marker(len(text), keep), True


def clip(text: str, limit: int | None = None) -> str:
    return clip_text(text, limit)[0]


def clip_data(value: Any, limit: int | None = None) -> Any:
    """A JSON-like value with every string in it cut to `limit` characters."""
    if isinstance(value, str):
        return clip(value, limit)
    if isinstance(value, dict):
        return {key: clip_data(item, limit) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [clip_data(item, limit) for item in value]
    return value
