from django.apps import AppConfig


class UsageConfig(AppConfig):
    name = "realtime_site.usage"
    label = "usage"
    verbose_name = "Usage"
    default_auto_field = "django.db.models.BigAutoField"
