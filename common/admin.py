"""Admin building blocks shared by the apps' consoles."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest


class ObjectPageMixin:
    """For a ModelAdmin whose change page shows more than its form: `object_context(request, obj)`
    adds to the page's template context for an existing object (never on the add page)."""

    def object_context(self, request: HttpRequest, obj: Any) -> dict[str, Any]:
        return {}

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> Any:
        if obj is not None:
            context.update(self.object_context(request, obj))
        return super().render_change_form(request, context, add, change, form_url, obj)  # type: ignore[misc]


class ReadOnlyAdmin[M: Model](admin.ModelAdmin[M]):
    """A page of records: nothing is added, changed or deleted through the admin (actions and
    the apps' own views do what may be done to them)."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
