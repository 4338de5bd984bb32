from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.services import apikey_create, user_get_or_create
from audit.services import Actor


class Command(BaseCommand):
    help = "Create an API key for USERNAME (creating the user if needed). The key is printed once, as the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="A label to recognise the key by in the admin.")

    def handle(self, *args: Any, username: str, name: str, **options: Any) -> None:
        username = username.strip()
        if not username or len(username) > 150:
            raise CommandError("USERNAME must be 1 to 150 characters.")
        user, created = user_get_or_create(username=username)
        if created:
            self.stderr.write(f"Created user {username!r}.")
        api_key, raw_key = apikey_create(user=user, name=name, actor=Actor.system("manage.py createapikey"))
        self.stderr.write(
            f"API key {api_key.prefix}… for {username!r}. It is shown once and stored hashed; revoke it in the admin."
        )
        self.stdout.write(raw_key)
