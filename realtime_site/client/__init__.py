"""The Python client: fal's ``realtime``, ``stream`` and ``run`` APIs, pointed at a self-hosted server.
No Django.

from realtime_site.client import realtime

with realtime("local/stylize", base_url="http://localhost:8000", key="KEY_ID:KEY_SECRET") as connection:
    connection.send({"prompt": "starry night", "image_bytes": png, "image_size": "square"})
    result = connection.recv()
"""

from realtime_site.client.connection import (
    AsyncRealtimeConnection,
    RealtimeConnection,
    RealtimeError,
    realtime,
    realtime_async,
)
from realtime_site.client.http import run, run_async, stream, stream_async
from realtime_site.client.images import result_image, result_image_bytes

__all__ = [
    "AsyncRealtimeConnection",
    "RealtimeConnection",
    "RealtimeError",
    "realtime",
    "realtime_async",
    "result_image",
    "result_image_bytes",
    "run",
    "run_async",
    "stream",
    "stream_async",
]
