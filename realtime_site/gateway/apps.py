from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "realtime_site.gateway"
    label = "gateway"
    verbose_name = "Realtime gateway"

    def ready(self) -> None:
        from realtime_site.gateway import checks  # noqa: F401  (registers the system checks)
