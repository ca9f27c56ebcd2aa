"""A WebSocket consumer that staff can reach through the channel layer, and that outlives the layer.

Channels' own loop waits on the client and the layer together, and a layer error ends the
connection. Here the client's messages come on their own; the layer is followed beside them, and
while it is away (Redis down) the connection goes on without staff actions, joins its groups again
when the layer is back, and then asks ``layer_back`` (whether a close sent meanwhile was lost).
Messages also skip Channels' per-message trip to the database thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer

__all__ = ["StaffReachableConsumer"]

log = logging.getLogger("realtime_site.gateway")


class StaffReachableConsumer(AsyncWebsocketConsumer):
    # Not `groups`: Channels discards those itself at disconnect, raising when the layer is away.
    staff_groups: tuple[str, ...] = ()

    async def __call__(self, scope, receive, send) -> None:
        self.scope = scope
        self.base_send = send
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        layer_task = None
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()
            layer_task = asyncio.get_running_loop().create_task(self._follow_channel_layer())
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        finally:
            if layer_task is not None:
                layer_task.cancel()
            await asyncio.shield(self.ended())  # also when the server cancels this task at shutdown

    async def ended(self) -> None:
        """The connection is over, however it ended (runs once the loop stops, shielded)."""

    async def layer_back(self) -> None:
        """The channel layer is back after an outage, and this connection in its groups again."""

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels would first close stale database connections in the database thread: one thread
        # hop per message, the connect's included. These consumers reach the database only through
        # ``database_sync_to_async``, which does that in the thread itself, so they skip it.
        if message["type"] == "websocket.receive":
            await self.websocket_receive(message)
            return
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)

    async def join_staff_groups(self, groups: tuple[str, ...]) -> None:
        """Join ``groups`` now, or once the layer is back."""
        self.staff_groups = groups
        try:
            await self._add_to_groups()
        except Exception as exc:  # the layer loop joins them once the layer is back
            log.warning("could not join staff groups yet (%s)", type(exc).__name__)

    async def leave_staff_groups(self) -> None:
        for group in self.staff_groups:
            with contextlib.suppress(Exception):  # the layer is away: its groups expire on their own
                await self.channel_layer.group_discard(group, self.channel_name)

    async def _add_to_groups(self) -> None:
        if self.channel_layer is not None:
            for group in self.staff_groups:
                await self.channel_layer.group_add(group, self.channel_name)

    async def _follow_channel_layer(self) -> None:
        """Staff messages for this connection; after a layer outage, join the groups again."""
        delay, rejoin = 0.5, False
        while True:
            try:
                if rejoin:
                    await self._add_to_groups()
                    rejoin, delay = False, 0.5
                    log.info("channel layer back; %s rejoined its groups", self.channel_name)
                    await self.layer_back()
                await self.dispatch(await self.channel_layer.receive(self.channel_name))
            except asyncio.CancelledError:
                raise
            except StopConsumer:
                return
            except Exception as exc:  # Redis away: the relay goes on without staff actions
                if not rejoin:
                    log.warning("channel layer unavailable (%s); retrying", type(exc).__name__)
                rejoin = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
