from django.apps import AppConfig


class GalleryConfig(AppConfig):
    name = "realtime_site.gallery"
    label = "gallery"
    verbose_name = "Gallery"
