from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.roles import ROLES, RoleError, role_assign
from audit.services import Actor


class Command(BaseCommand):
    help = (
        "Give USERNAME the console role ROLE (viewer, operator or admin; `none` takes every role away). "
        "A user with a role is made staff, so the admin lets them in; set their password in the admin "
        "or with `manage.py changepassword`."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("role", choices=[*ROLES, "none"])

    def handle(self, *args: Any, username: str, role: str, **options: Any) -> None:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(
                f"no user {username!r}: create it in the admin (Users) or with manage.py createsuperuser"
            )
        try:
            before = role_assign(user=user, role=role, actor=Actor.system("manage.py setrole"))
        except RoleError as exc:
            raise CommandError(str(exc)) from None
        was = ", ".join(before) or "no role"
        self.stdout.write(f"{username}: {role} (was {was}).")
