from django.apps import AppConfig


class GalleryConfig(AppConfig):
    name = "realtime_site.gallery"
    label = "gallery"
    verbose_name = "Gallery"

    def ready(self) -> None:
        from realtime_site.gallery import signals  # noqa: F401  (a creation's files go with it)
