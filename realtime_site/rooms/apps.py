from django.apps import AppConfig


class RoomsConfig(AppConfig):
    name = "realtime_site.rooms"
    label = "rooms"
    verbose_name = "Shared rooms"
