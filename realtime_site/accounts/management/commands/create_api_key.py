"""``python manage.py create_api_key USERNAME [--name NAME]``: prints ``key_id:key_secret`` once."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from realtime_site.accounts.keys import create_api_key


class Command(BaseCommand):
    help = "Create an API key for a user and print it once (only a hash is stored)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="a label to recognise the key by")

    def handle(self, *args, username: str, name: str, **options) -> None:
        try:
            user = get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"no user named {username!r}") from None
        _, secret = create_api_key(user, name)
        self.stderr.write("API key created; this is the only time its secret is shown:")
        self.stdout.write(secret)
