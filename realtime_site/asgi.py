"""The gateway's ASGI application (``realtime_site.asgi:application``, run by daphne).

HTTP goes to Django, but for the apps' calls with a token or a key (``app_calls``); daphne refuses
bodies over the frame cap as they arrive (``daphne_bodies``). WebSockets get cookies
and the lazy session (read only when a connection brings neither token nor key), then the realtime
consumer; Origin is checked by admission for session connections, the only ones a foreign page
could ride on.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "realtime_site.settings")
django_application = get_asgi_application()  # set Django up before importing consumers

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.sessions import SessionMiddlewareStack  # noqa: E402

from realtime_site.gateway import checks, lifecycle  # noqa: E402
from realtime_site.gateway.app_calls import AppCalls  # noqa: E402
from realtime_site.memory import return_large_buffers_to_the_os  # noqa: E402
from realtime_site.routing import websocket_urlpatterns  # noqa: E402

lifecycle.install()
return_large_buffers_to_the_os()
checks.refuse_to_start_when_broken()

application = ProtocolTypeRouter(
    {
        "http": AppCalls(django_application),  # the apps' calls with a token or key, below Django
        "websocket": SessionMiddlewareStack(URLRouter(websocket_urlpatterns)),
    }
)
