from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from audit.models import AuditLog


@admin.register(AuditLog)
class AuditLogAdmin(admin.ModelAdmin[AuditLog]):
    list_display = ("created_at", "action", "actor_type", "actor_label", "target_type", "target_id", "run_id")
    list_filter = ("action", "actor_type", "target_type", ("created_at", admin.DateFieldListFilter))
    search_fields = ("=target_id", "=run_id", "actor_label", "action")
    readonly_fields = [f.name for f in AuditLog._meta.fields]
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditLog | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditLog | None = None) -> bool:
        return False
