"""Conversation memory for the SDK, kept in the database (survives restarts)."""

from __future__ import annotations

from typing import Any

from agents.memory import SessionABC
from asgiref.sync import sync_to_async
from django.db import transaction

from common.limits import clip_data
from runs.models import SessionItem
from runs.services import MemoryChanges


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


class RunMemory(SessionABC):
    """A run's view of its session's conversation, held in memory while the run executes.

    The worker reads the session's items with its claim (one transaction) and writes
    what the run changed with its outcome (`changes`, the same transaction as the final
    event): no database round trip per turn, and a lost attempt leaves nothing behind.
    Stored items are capped (HARNESS_MAX_STORED_CHARS per string, with a marker).
    """

    def __init__(self, session_id: str, *, history: list[tuple[int, Any]]) -> None:
        self.session_id = session_id
        self.session_settings = None
        self._items: list[tuple[int | None, Any]] = list(history)
        self.changes = MemoryChanges()

    async def get_items(self, limit: int | None = None) -> list[Any]:
        items = [item for _, item in self._items]
        if limit is None:
            return items
        return items[-limit:] if limit > 0 else []

    async def add_items(self, items: list[Any]) -> None:
        for item in items:
            stored = clip_data(item)
            self._items.append((None, stored))
            self.changes.added.append(stored)

    async def pop_item(self) -> Any:
        if not self._items:
            return None
        item_id, item = self._items.pop()
        if item_id is None:
            self.changes.added.pop()
        else:
            self.changes.removed_ids.append(item_id)
        return item

    async def clear_session(self) -> None:
        self._items.clear()
        self.changes = MemoryChanges(cleared=True)
