from django.apps import AppConfig


class StaffConfig(AppConfig):
    name = "realtime_site.staff"
    label = "staff"
    verbose_name = "Staff"
