from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.apps import apps as global_apps
from django.db.models.signals import post_migrate


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "API access"

    def ready(self) -> None:
        post_migrate.connect(sync_roles, dispatch_uid="accounts.roles.sync")


def sync_roles(*, app_config: AppConfig, using: str, apps: Any = global_apps, **kwargs: Any) -> None:
    """After every migrate (and flush): the role groups get the permissions accounts.roles lists.

    post_migrate is sent once per app, and each app's permissions are created on its own turn:
    the roles are synced on the last app's, when every permission exists.
    """
    last = [config for config in global_apps.get_app_configs() if config.models_module is not None][-1]
    if app_config.label != last.label:
        return
    try:
        group_model = apps.get_model("auth", "Group")
        permission_model = apps.get_model("auth", "Permission")
    except LookupError:
        return  # auth is not migrated (a partial migrate): the next full migrate syncs
    from accounts.roles import roles_sync

    roles_sync(group_model=group_model, permission_model=permission_model, using=using)
