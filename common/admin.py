"""Admin building blocks shared by the apps' consoles."""

from __future__ import annotations

from typing import Any

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
