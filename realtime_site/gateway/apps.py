from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "realtime_site.gateway"
    label = "gateway"
    verbose_name = "Realtime gateway"
