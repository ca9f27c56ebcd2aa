from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "realtime_site.gateway"
    label = "gateway"
    verbose_name = "Realtime gateway"

    def ready(self) -> None:
        from realtime_site.accounts.revocation import credentials_revoked
        from realtime_site.gateway import checks  # noqa: F401  (registers the system checks)
        from realtime_site.gateway.actions import close_revoked

        credentials_revoked.connect(close_revoked, dispatch_uid="gateway.close_revoked")
