"""``/admin/live``: the dashboard's WebSocket. Staff with the dashboard's permission only, from this
site's pages; it relays every gateway process's live usage (the channel layer group ``usage-live``)."""

from __future__ import annotations

import json
from typing import Any

from channels.auth import get_user
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from realtime_site.gateway.admission import origin_allowed
from realtime_site.protocol import CloseCode
from realtime_site.staff.dashboard import RECORDS_PERMISSION
from realtime_site.usage.recorder import LIVE_GROUP


class LiveUsageConsumer(AsyncWebsocketConsumer):
    joined = False

    async def connect(self) -> None:
        user = await get_user(self.scope)
        origin = dict(self.scope.get("headers", [])).get(b"origin", b"").decode("latin-1")
        allowed = user.is_authenticated and user.is_staff
        allowed = allowed and await database_sync_to_async(user.has_perm)(RECORDS_PERMISSION)
        await self.accept()
        if not allowed or not origin_allowed(origin, self.scope):
            await self.close(int(CloseCode.FORBIDDEN))  # autobahn takes plain ints only
            return
        await self.channel_layer.group_add(LIVE_GROUP, self.channel_name)
        self.joined = True

    async def disconnect(self, code: int) -> None:
        if self.joined:
            await self.channel_layer.group_discard(LIVE_GROUP, self.channel_name)

    async def usage_live(self, event: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps({k: v for k, v in event.items() if k != "type"}))
