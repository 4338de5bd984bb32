from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Give a newcomer an admin login: create superuser USERNAME (default admin) with a generated password if no superuser exists yet."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin")
        parser.add_argument("--reset", action="store_true", help="Set a new generated password for USERNAME.")

    def handle(self, *args: Any, username: str, reset: bool, **options: Any) -> None:
        User = get_user_model()
        existing = list(User.objects.filter(is_superuser=True).values_list("username", flat=True))
        if existing and not reset:
            self.stdout.write(
                f"Admin login: superuser(s) {', '.join(existing)} exist. "
                f"Forgot the password? uv run python manage.py ensureadmin --reset --username {existing[0]}"
            )
            return
        password = secrets.token_urlsafe(12)
        user = User.objects.filter(username=username).first()
        if user is None:
            user = User.objects.create_superuser(username=username, email="", password=password)
        else:
            user.is_superuser = user.is_staff = user.is_active = True
            user.set_password(password)
            user.save()
        self.stdout.write(f"Admin login: user {username!r}, password {password!r} (shown once; stored hashed).")
