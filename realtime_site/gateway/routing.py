"""WebSocket routes: every path goes to the consumer, which admits ``/{owner}/{alias}/{path}``."""

from django.urls import re_path

from realtime_site.gateway.consumer import RealtimeConsumer

websocket_urlpatterns = [re_path(r"^.*$", RealtimeConsumer.as_asgi())]
