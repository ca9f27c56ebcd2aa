from __future__ import annotations

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "realtime_site.accounts"
    label = "accounts"
    verbose_name = "API keys, tokens and limits"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from realtime_site.accounts import signals

        signals.connect()
