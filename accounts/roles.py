"""The console's roles: three groups whose permissions are kept equal to the lists below.

| role | may |
|---|---|
| `viewer` | see everything in the console (every `view_*` permission of the harness's apps) |
| `operator` | what a viewer may, and act on runs: cancel, retry, approve or reject tool calls, clean up
  sandboxes, promote runs to golden cases (and edit those cases), run evals, annotate feedback |
| `admin` | every permission, users and groups included |

`roles_sync` sets each group's permissions from these lists. It runs in the data migration that
creates the groups and again after every `migrate` (a post_migrate handler in accounts/apps.py):
a permission whose app or model does not exist yet is skipped and picked up by a later migrate.
The groups are defined here, not in the admin: a change made to them by hand is undone by the next
migrate (make another group for a custom role).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Q

from audit.services import Actor, audit_record

VIEWER, OPERATOR, ADMIN = "viewer", "operator", "admin"
ROLES = (VIEWER, OPERATOR, ADMIN)

# The apps whose records the console shows: a viewer may see every one of their models.
VIEW_APPS = (
    "accounts",
    "audit",
    "runs",
    "execution",
    "artifacts",
    "sandboxes",
    "evals",
    "billing",
    "approvals",
    "feedback",
    "django_q",  # the task queue: queued, done and failed jobs, schedules
)

# What an operator may do on top of viewing ("app_label.codename").
OPERATOR_PERMISSIONS = (
    "runs.change_run",  # cancel (every field of a run stays read-only)
    "runs.retry_run",
    "approvals.decide_approval",
    "sandboxes.cleanup_sandbox",
    "evals.promote_run",
    # A promoted case is a draft an operator finishes: its expectations are edited afterwards.
    "evals.add_goldencase",
    "evals.change_goldencase",
    "evals.run_eval",
    "feedback.add_feedback",
    "feedback.change_feedback",
)


def _view_filter() -> Q:
    return Q(content_type__app_label__in=VIEW_APPS, codename__startswith="view_")


def _named_filter(names: tuple[str, ...]) -> Q:
    query = Q(pk__in=[])
    for name in names:
        app_label, _, codename = name.partition(".")
        query |= Q(content_type__app_label=app_label, codename=codename)
    return query


def role_filter(role: str) -> Q:
    """The permissions of `role`, as a filter on Permission."""
    if role == VIEWER:
        return _view_filter()
    if role == OPERATOR:
        return _view_filter() | _named_filter(OPERATOR_PERMISSIONS)
    if role == ADMIN:
        return Q()
    raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")


def roles_sync(*, group_model: Any = None, permission_model: Any = None, using: str = "default") -> dict[str, Any]:
    """Create the role groups if missing and set each one's permissions to what `role_filter` says.

    Takes the models from the caller when it has its own (a migration's historical models, the
    post_migrate handler's); returns, per role, the codenames added and removed.
    """
    if group_model is None or permission_model is None:
        from django.contrib.auth.models import Group, Permission

        group_model, permission_model = Group, Permission
    changes: dict[str, Any] = {}
    with transaction.atomic(using=using):
        for role in ROLES:
            group, _ = group_model.objects.using(using).get_or_create(name=role)
            wanted = set(permission_model.objects.using(using).filter(role_filter(role)).values_list("pk", flat=True))
            current = set(group.permissions.values_list("pk", flat=True))
            if wanted != current:
                group.permissions.set(wanted)
                changes[role] = {"added": len(wanted - current), "removed": len(current - wanted)}
    return changes


class RoleError(ValueError):
    pass


@transaction.atomic(durable=True)
def role_assign(*, user: Any, role: str, actor: Actor) -> list[str]:
    """Make `user` a member of the one role group `role` (and staff, so the admin lets them in),
    or of none with role "none" (staff status is left as it is). Returns the roles they had.
    """
    from django.contrib.auth.models import Group

    if role not in (*ROLES, "none"):
        raise RoleError(f"unknown role {role!r}: one of {', '.join(ROLES)}, or none")
    if role != "none" and not Group.objects.filter(name=role).exists():
        roles_sync()
    before = sorted(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
    user.groups.remove(*Group.objects.filter(name__in=ROLES).exclude(name=role))
    if role != "none":
        user.groups.add(Group.objects.get(name=role))
        if not user.is_staff:
            user.is_staff = True
            user.save(update_fields=["is_staff"])
    audit_record(
        action="user.role_set",
        actor=actor,
        target_type="user",
        target_id=str(user.pk),
        data={"username": user.get_username(), "role": role, "before": before, "is_staff": user.is_staff},
    )
    return before
