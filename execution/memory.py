"""Conversation memory for the SDK, kept in the database (survives restarts)."""

from __future__ import annotations

from typing import Any

from agents.memory import SessionABC
from asgiref.sync import sync_to_async
from django.db import transaction

from runs.models import SessionItem


class DjangoSession(SessionABC):
    """An `agents.memory.SessionABC` over the SessionItem table.

    Items added while `run_id` is set are tagged with that run, so a retried
    attempt can drop what its failed attempt left behind.
    """

    def __init__(self, session_id: str, *, run_id: str | None = None) -> None:
        self.session_id = session_id
        self.session_settings = None
        self.run_id = run_id

    def get_items_sync(self, limit: int | None = None) -> list[Any]:
        rows = SessionItem.objects.filter(session_id=self.session_id)
        if limit is None:
            return list(rows.order_by("id").values_list("data", flat=True))
        if limit <= 0:
            return []
        latest = list(rows.order_by("-id").values_list("data", flat=True)[:limit])
        latest.reverse()
        return latest

    def add_items_sync(self, items: list[Any]) -> None:
        SessionItem.objects.bulk_create(
            SessionItem(session_id=self.session_id, run_id=self.run_id, data=item) for item in items
        )

    @transaction.atomic
    def pop_item_sync(self) -> Any:
        row = SessionItem.objects.filter(session_id=self.session_id).order_by("-id").first()
        if row is None:
            return None
        row.delete()
        return row.data

    def clear_session_sync(self) -> None:
        SessionItem.objects.filter(session_id=self.session_id).delete()

    async def get_items(self, limit: int | None = None) -> list[Any]:
        return await sync_to_async(self.get_items_sync)(limit)

    async def add_items(self, items: list[Any]) -> None:
        if items:
            await sync_to_async(self.add_items_sync)(list(items))

    async def pop_item(self) -> Any:
        return await sync_to_async(self.pop_item_sync)()

    async def clear_session(self) -> None:
        await sync_to_async(self.clear_session_sync)()
