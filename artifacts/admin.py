from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat
from django.utils.html import format_html

from artifacts.models import Artifact
from artifacts.services import artifact_delete, artifact_download_url
from audit.services import Actor


def download_link(obj: Artifact) -> str:
    if obj.status != Artifact.Status.READY:
        return "-"
    # A fresh short-lived URL each time the page is shown.
    return format_html('<a href="{}">download</a>', artifact_download_url(artifact=obj))


@admin.register(Artifact)
class ArtifactAdmin(admin.ModelAdmin[Artifact]):
    list_display = ("id", "name", "run", "content_type", "human_size", "status", "created_at", "expires_at", "download")
    list_filter = ("status", "content_type", ("created_at", admin.DateFieldListFilter))
    list_select_related = ("run",)
    search_fields = ("=id", "=run__id", "name", "=sha256")
    readonly_fields = (
        "id",
        "run",
        "name",
        "object_key",
        "content_type",
        "size",
        "sha256",
        "status",
        "created_at",
        "ready_at",
        "expires_at",
        "expired_at",
        "download",
    )
    actions = ["delete_artifacts"]

    @admin.display(description="size", ordering="size")
    def human_size(self, obj: Artifact) -> str:
        return filesizeformat(obj.size)

    @admin.display(description="download")
    def download(self, obj: Artifact) -> str:
        return download_link(obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_actions(self, request: HttpRequest) -> Any:  # type: ignore[override]
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # deletion goes through the service (object + row + audit)
        return actions

    def delete_model(self, request: HttpRequest, obj: Artifact) -> None:
        artifact_delete(artifact=obj, actor=Actor.for_user(request.user))

    def log_deletion(self, request: HttpRequest, obj: Any, object_repr: str) -> None:
        pass  # the service wrote the audit row

    @admin.action(description="Delete selected artifacts (object and metadata)", permissions=["delete"])
    def delete_artifacts(self, request: HttpRequest, queryset: QuerySet[Artifact]) -> None:
        actor = Actor.for_user(request.user)
        count = 0
        for artifact in queryset:
            artifact_delete(artifact=artifact, actor=actor)
            count += 1
        self.message_user(request, f"Deleted {count} artifact(s) and their objects.", messages.SUCCESS)


class ArtifactInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Artifact
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ("name", "content_type", "size", "sha256", "status", "download")
    readonly_fields = fields

    @admin.display(description="download")
    def download(self, obj: Artifact) -> str:
        return download_link(obj)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
