from __future__ import annotations

from django.contrib import admin

from audit.models import AuditLog
from common.admin import ReadOnlyAdmin


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdmin[AuditLog]):
    list_display = ("created_at", "action", "actor_type", "actor_label", "target_type", "target_id", "run_id")
    list_filter = ("action", "actor_type", "target_type", ("created_at", admin.DateFieldListFilter))
    search_fields = ("=target_id", "=run_id", "actor_label", "action")
    readonly_fields = [f.name for f in AuditLog._meta.fields]
    date_hierarchy = "created_at"
