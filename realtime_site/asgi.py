"""The gateway's ASGI application (``realtime_site.asgi:application``, run by daphne)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "realtime_site.settings")

application = get_asgi_application()
