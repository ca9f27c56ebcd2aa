"""WebSocket routes: the staff dashboard's live feed, a room's members, and every other path to the
realtime consumer, which admits ``/{owner}/{alias}/{path}``."""

from django.urls import re_path

from realtime_site.gateway.consumer import RealtimeConsumer
from realtime_site.rooms.consumer import RoomConsumer
from realtime_site.staff.live import LiveUsageConsumer

websocket_urlpatterns = [
    re_path(r"^admin/live$", LiveUsageConsumer.as_asgi()),
    re_path(r"^rooms/(?P<slug>[A-Za-z0-9_-]+)/ws$", RoomConsumer.as_asgi()),
    re_path(r"^.*$", RealtimeConsumer.as_asgi()),
]
