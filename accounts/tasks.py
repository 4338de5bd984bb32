"""Scheduled jobs of the accounts app (django-q2)."""

from __future__ import annotations


def purge_idempotency_keys() -> int:
    from accounts.idempotency import idempotency_purge

    return idempotency_purge()
