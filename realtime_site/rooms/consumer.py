"""A member's WebSocket in a room (``/rooms/<slug>/ws``; docs/rooms.md, "Messages").

Admitted by the session cookie from this site's pages only (the Origin is checked), for a member
the room lets in, within the address's connection rate and the user's connection limit. The
member's messages are checked (``ops``) and rate-limited here, on this connection alone: a bad one
is answered with a named error to this member and goes nowhere else, and a member who floods is
slowed without slowing the others. Checked ops go to the room's group, where the other members and
the driver get them; what the group says (others' ops and cursors, the canvas, results, members)
comes back to this member as msgpack, flow-controlled like a realtime client's results.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from dataclasses import asdict
from typing import Any

import msgpack
from channels.auth import get_user
from channels.db import database_sync_to_async
from django.conf import settings

from realtime_site.gateway import lifecycle
from realtime_site.gateway.admission import header, origin_allowed
from realtime_site.gateway.backpressure import ResultOutbox
from realtime_site.gateway.connect_rate import connect_rate
from realtime_site.gateway.groups import user_group
from realtime_site.gateway.limits import limiter, load_limits
from realtime_site.gateway.staff_reach import StaffReachableConsumer
from realtime_site.protocol import CloseCode, ErrorCode, Refusal, ValidationError
from realtime_site.rooms import drivers
from realtime_site.rooms.groups import room_group
from realtime_site.rooms.membership import admit
from realtime_site.rooms.ops import Cursor, Down, Fill, Move, Params, Simple, Up, parse_message
from realtime_site.rooms.rates import MemberRates

__all__ = ["RoomConsumer"]

log = logging.getLogger("realtime_site.rooms")

MAX_MESSAGE_BYTES = 16 * 1024
MAX_NUMBER = 2**53 - 1  # a member's running message number (exact in JavaScript)
PING_SECONDS = 10.0


class RoomConsumer(StaffReachableConsumer):
    user: Any = None
    slug = ""
    connection = ""  # this connection's name in the room
    admitted = False

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        await self.accept()
        self.slug = self.scope["url_route"]["kwargs"]["slug"]
        self.connection = uuid.uuid4().hex[:12]
        try:
            await self._admit()
        except Refusal as refusal:
            await self._error(refusal.code, refusal.reason)
            await self.close(int(refusal.close_code))
            return
        self.rates = MemberRates()
        self.admitted = True
        lifecycle.register(self)
        self.outbox = ResultOutbox(self.scope, self._send_now, capacity=2, on_drop=_nothing,
                                   stall_limit=settings.REALTIME_STALLED_CLIENT_SECONDS,
                                   on_stall=self._stalled)  # fmt: skip
        await self.join_staff_groups((room_group(self.slug), user_group(self.user.pk)))
        await self.send_bytes({"t": "welcome", "connection": self.connection, "user": self.user.pk,
                               "username": self.user.get_username(), "color": self.color,
                               "owner": self.owner})  # fmt: skip
        await self._presence("join")
        await drivers.connected(self.slug)
        await self.channel_layer.group_send(
            room_group(self.slug), {"type": "room.hello", "reply_to": self.channel_name}
        )
        self.pinger = asyncio.ensure_future(self._ping())

    async def _admit(self) -> None:
        refused = connect_rate().refusal(str((self.scope.get("client") or ("",))[0]))
        if refused is not None:  # before any database work, as for realtime connections
            raise refused
        if not origin_allowed(header(self.scope, b"origin"), self.scope):
            raise Refusal(ErrorCode.FORBIDDEN, "rooms may only be joined from this site's pages", CloseCode.FORBIDDEN)
        self.user = await get_user(self.scope)
        if not self.user.is_authenticated:
            raise Refusal(ErrorCode.UNAUTHORIZED, "log in to join a room", CloseCode.UNAUTHORIZED)
        room, member, limits = await database_sync_to_async(_admit_with_limits)(self.slug, self.user)
        over = limiter.connect(self.user.pk, limits)
        if over is not None:
            raise Refusal(ErrorCode.RATE_LIMITED, over, CloseCode.TOO_MANY)
        self.color, self.owner = member.color, room.owner_id == self.user.pk

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        if not self.admitted:
            return
        raw = message.get("bytes") or message.get("text") or ""
        if len(raw) > MAX_MESSAGE_BYTES:
            await self._error(ErrorCode.PAYLOAD_TOO_LARGE, f"a room message is at most {MAX_MESSAGE_BYTES} bytes")
            return
        try:
            data = msgpack.unpackb(raw) if isinstance(raw, bytes) else json.loads(raw)
            op = parse_message(data)
        except ValidationError as exc:
            await self._error(exc.code, exc.reason)
            return
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, RecursionError):
            await self._error(ErrorCode.VALIDATION_ERROR, "message: not msgpack (binary) or JSON (text)")
            return
        number = data.get("n", 0)
        if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number <= MAX_NUMBER:
            await self._error(ErrorCode.VALIDATION_ERROR, f"n: must be the message's number, 0 to {MAX_NUMBER}")
            return  # (a huge one would not even pack for the others)
        refusal = self.rates.refusal(op)
        if refusal is not None:
            if refusal:  # said once a second at most
                await self._error(ErrorCode.RATE_LIMITED, refusal)
            return
        group = room_group(self.slug)
        if isinstance(op, Cursor):
            await self.channel_layer.group_send(group, {"type": "room.cursor", "connection": self.connection,
                                                        "user": self.user.pk, "x": op.x, "y": op.y})  # fmt: skip
            return
        await self.channel_layer.group_send(group, {"type": "room.op", "op": _wire(op), "n": number,
                                                    "connection": self.connection, "user": self.user.pk})  # fmt: skip

    # -- what the group says ---------------------------------------------------------------------

    # A member who does not read is sent no live ops or cursors (the next canvas has them all), and
    # only the newest two canvases and results; one who reads nothing for long is closed (4408).

    async def room_op(self, event: dict[str, Any]) -> None:
        if event["connection"] != self.connection:
            await self.send_bytes({"t": "op", "m": event["connection"], "u": event["user"], "n": event["n"],
                                   "op": event["op"]}, kind="live")  # fmt: skip

    async def room_cursor(self, event: dict[str, Any]) -> None:
        if event["connection"] != self.connection:
            await self.send_bytes({"t": "cursor", "m": event["connection"], "u": event["user"], "x": event["x"],
                                   "y": event["y"]}, kind="live")  # fmt: skip

    async def room_canvas(self, event: dict[str, Any]) -> None:
        await self.send_bytes({"t": "canvas", "png": event["png"], "version": event["version"],
                               "acked": event["acked"], "background": event["background"]}, kind="latest")  # fmt: skip

    async def room_state(self, event: dict[str, Any]) -> None:
        await self.send_bytes({"t": "state", "png": event["png"], "version": event["version"],
                               "acked": event["acked"], "background": event["background"], "params": event["params"],
                               "members": event["members"], "result": event["result"]}, kind="latest")  # fmt: skip

    async def room_result(self, event: dict[str, Any]) -> None:
        await self.send_bytes({"t": "result", **event["result"]}, kind="latest")

    async def room_members(self, event: dict[str, Any]) -> None:
        await self.send_bytes({"t": "members", "members": event["members"]})

    async def room_error(self, event: dict[str, Any]) -> None:
        if event.get("user") in (None, self.user.pk):
            await self._error(event["error"], event["reason"])

    async def room_kick(self, event: dict[str, Any]) -> None:
        if event["user"] == self.user.pk:
            await self._error(ErrorCode.FORBIDDEN, event["reason"])
            await self.close(int(CloseCode.FORBIDDEN))

    async def room_closed(self, event: dict[str, Any]) -> None:
        await self._error(ErrorCode.FORBIDDEN, event["reason"])
        await self.close(int(CloseCode.NORMAL))

    async def room_hello(self, event: dict[str, Any]) -> None:
        """A joiner's hello, meant for the driver."""

    async def room_roll_call(self, event: dict[str, Any]) -> None:
        """A driver has started: say who is here."""
        with contextlib.suppress(Exception):
            await self._presence("join")

    async def room_presence(self, event: dict[str, Any]) -> None:
        """Presence, meant for the driver (members hear of it in ``members``)."""

    async def realtime_kick(self, event: dict[str, Any]) -> None:
        """Staff closed the user's sessions, or deactivated them."""
        await self._error(ErrorCode(event.get("error", ErrorCode.FORBIDDEN.value)), str(event.get("reason", "")))
        await self.close(int(event.get("close_code", CloseCode.FORBIDDEN)))

    # -- the end ---------------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """The server is stopping: tell the member (1001), who comes back to another process."""
        with contextlib.suppress(Exception):
            await self.close(int(CloseCode.GOING_AWAY))

    async def ended(self) -> None:
        if not self.admitted:
            return
        self.admitted = False
        self.pinger.cancel()
        self.outbox.close()
        limiter.disconnect(self.user.pk)
        drivers.disconnected(self.slug)
        with contextlib.suppress(Exception):
            await self._presence("leave")
        await self.leave_staff_groups()

    async def send_bytes(self, message: dict[str, Any], kind: str = "message") -> None:
        """``live`` (skipped while the client is not reading), ``latest`` (the newest two kept), or a
        ``message`` (errors, members: the newest sixteen kept)."""
        data = msgpack.packb(message)
        outbox = getattr(self, "outbox", None)
        if outbox is None:  # before admission: nothing is flow-controlled yet
            await self._send_now(data)
        elif kind == "live":
            await outbox.preview(data)
        elif kind == "latest":
            await outbox.result(data)
        else:
            await outbox.message(data)

    async def _send_now(self, data: bytes | str) -> None:
        with contextlib.suppress(Exception):  # the client is gone: its end comes on its own
            await self.send(bytes_data=data if isinstance(data, bytes) else data.encode())

    async def _stalled(self) -> None:
        limit = settings.REALTIME_STALLED_CLIENT_SECONDS
        log.info("room %s: closing a member that read nothing for %g s", self.slug, limit)
        await self._send_now(
            msgpack.packb({"t": "error", "error": "TIMEOUT", "reason": f"nothing read for {limit:g} s"})
        )
        with contextlib.suppress(Exception):
            await self.close(int(CloseCode.STALLED))

    async def _error(self, code: ErrorCode | str, reason: str) -> None:
        await self.send_bytes({"t": "error", "error": str(code), "reason": reason})

    async def _presence(self, event: str) -> None:
        await self.channel_layer.group_send(room_group(self.slug), {"type": "room.presence", "event": event,
                                                                    "connection": self.connection, "user": self.user.pk,
                                                                    "username": self.user.get_username(),
                                                                    "color": self.color})  # fmt: skip

    async def _ping(self) -> None:
        while True:
            await asyncio.sleep(PING_SECONDS)
            with contextlib.suppress(Exception):
                await self._presence("ping")


def _nothing() -> None:
    """A canvas or result displaced for a slow reader: the newer one says it all."""


def _admit_with_limits(slug: str, user: Any) -> tuple[Any, Any, Any]:
    room, member = admit(slug, user)
    return room, member, load_limits(user)


def _wire(op: Down | Move | Up | Fill | Simple | Params) -> dict[str, Any]:
    """The op as the others and the driver get it: only its checked fields."""
    if isinstance(op, Down):
        return {"t": "down", "k": op.stroke, "c": op.color, "w": op.width, "e": op.erase, "p": list(op.points)}
    if isinstance(op, Move):
        return {"t": "move", "k": op.stroke, "p": list(op.points)}
    if isinstance(op, Up):
        return {"t": "up", "k": op.stroke}
    if isinstance(op, Fill):
        return {"t": "fill", "c": op.color}
    if isinstance(op, Params):
        return {"t": "params", "values": asdict(op)["values"]}
    return {"t": op.kind}
