"""``python manage.py demo_user``: make sure the user ``demo`` exists; its password is printed once."""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

DEMO_USER = "demo"


def ensure_demo_user() -> str:
    """How to log in as the demo user (with the password only when it was just made)."""
    users = get_user_model().objects
    if users.filter(username=DEMO_USER).exists():
        return f"{DEMO_USER!r} (password printed when it was made; `manage.py changepassword demo` sets one)"
    password = secrets.token_urlsafe(9)
    users.create_user(DEMO_USER, password=password)
    return f"{DEMO_USER!r} with password {password!r} (shown this once)"


class Command(BaseCommand):
    help = "Create the demo user if it does not exist, printing its password once."

    def handle(self, *args, **options) -> None:
        self.stdout.write(f"log in as {ensure_demo_user()}")
