"""A plain Channels group echo: the baseline for the rooms' relay in ``bench/rooms.py``.

A WebSocket at ``/<name>`` joins the group ``echo.<name>``; every binary message it sends goes to that
group (``group_send``), and each other member of the group gets it as it was sent. The in-memory
channel layer, no database, no session, no checks: what Channels itself costs to fan a message out.
Any HTTP request is answered 200 (for the readiness check).

``python -m daphne group_echo:application`` with ``bench/`` on ``PYTHONPATH``.
"""

from __future__ import annotations

import re
from typing import Any

import django
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        INSTALLED_APPS=["channels"],
        CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
    )
    django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # after the settings
from channels.routing import ProtocolTypeRouter

__all__ = ["application"]

NAME = re.compile(r"[^A-Za-z0-9_.-]")


class GroupEcho(AsyncWebsocketConsumer):
    group = ""

    async def connect(self) -> None:
        self.group = "echo." + NAME.sub("-", self.scope["path"].strip("/"))[:80]
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if bytes_data is not None:
            message = {"type": "echo.message", "bytes": bytes_data, "sender": self.channel_name}
            await self.channel_layer.group_send(self.group, message)

    async def echo_message(self, event: dict[str, Any]) -> None:
        if event["sender"] != self.channel_name:
            await self.send(bytes_data=event["bytes"])


async def ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Any HTTP request: 200 ``ok``."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


application = ProtocolTypeRouter({"http": ok, "websocket": GroupEcho.as_asgi()})
