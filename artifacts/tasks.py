"""django-q2 entry points (ids in, a service call, safe to run twice)."""

from __future__ import annotations


def expire_artifacts() -> dict[str, int]:
    from artifacts.services import artifacts_expire

    return artifacts_expire()
