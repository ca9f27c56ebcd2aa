"""Helpers for the rooms' tests on a real stack: users who log in, a room made the way the drawing
page makes one, and members' WebSockets that read the room's msgpack messages."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import httpx
import msgpack
from PIL import Image
from websockets.asyncio.client import ClientConnection, connect

from tests.accounts.live import csrf_of
from tests.gateway.stack import GatewayStack

PASSWORD = "pw-room-1234567"


def make_users(stack: GatewayStack, *names: str) -> None:
    made = ", ".join(f"get_user_model().objects.create_user({n!r}, password={PASSWORD!r})" for n in names)
    stack.manage("shell", "-c", f"from django.contrib.auth import get_user_model; {made}")


def logged_in(stack: GatewayStack, name: str) -> httpx.Client:
    client = httpx.Client(base_url=stack.http, timeout=30)
    login = client.get("/accounts/login/")
    answer = client.post("/accounts/login/", data={"username": name, "password": PASSWORD,
                                                   "csrfmiddlewaretoken": csrf_of(login)})  # fmt: skip
    assert answer.status_code == 302, answer.text[:300]
    return client


def csrf(client: httpx.Client) -> str:
    return client.cookies["csrftoken"]


def make_room(client: httpx.Client, app: str = "local/echo", **fields: str) -> str:
    answer = client.post("/rooms/", data={"app": app, "csrfmiddlewaretoken": csrf(client), **fields},
                         headers={"Referer": str(client.base_url)})  # fmt: skip
    assert answer.status_code == 302, answer.text[:300]
    return answer.headers["location"].split("/")[2]


def manage(client: httpx.Client, slug: str, **fields: str) -> httpx.Response:
    return client.post(f"/rooms/{slug}/manage", data=fields,
                       headers={"X-CSRFToken": csrf(client), "Referer": str(client.base_url)})  # fmt: skip


class Member:
    """A member's WebSocket: what it was told, kept by type, read as it comes."""

    def __init__(self, ws: ClientConnection):
        self.ws = ws
        self.seen: list[dict[str, Any]] = []
        self.sent = 0
        self.errors_expected = False
        self.unread: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> int:
        self.sent += 1
        await self.ws.send(msgpack.packb({**message, "n": self.sent}))
        return self.sent

    async def next(self, kind: str, timeout: float = 20, where: Any = None) -> dict[str, Any]:
        """The next message of ``kind`` (and matching ``where``), the ones read before included: others
        wait in ``unread`` for their own ``next`` (all are kept in ``seen``)."""

        def wanted(message: dict[str, Any]) -> bool:
            return message["t"] == kind and (where is None or where(message))

        async def read() -> dict[str, Any]:
            for message in self.unread:
                if wanted(message):
                    self.unread.remove(message)
                    return message
            while True:
                message = msgpack.unpackb(await self.ws.recv())
                self.seen.append(message)
                if message["t"] == "error" and kind != "error" and not self.errors_expected:
                    raise AssertionError(f"the room said: {message}")
                if wanted(message):
                    return message
                self.unread.append(message)

        return await asyncio.wait_for(read(), timeout)


async def join(stack: GatewayStack, client: httpx.Client, slug: str, origin: str | None = None) -> Member:
    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    headers = {"Cookie": cookie, "Origin": origin or stack.http}
    ws = await connect(f"{stack.ws}/rooms/{slug}/ws", additional_headers=headers, max_size=None)
    return Member(ws)


def pixels(png: bytes) -> bytes:
    with Image.open(io.BytesIO(png)) as image:
        return image.convert("RGB").tobytes()


def frames_counted(stack: GatewayStack, slug: str, username: str) -> tuple[int, int, int]:
    """(the room's frames, the member's frames, the frames in the member's usage records of mode room)."""
    rooms, usage = (
        "__import__('realtime_site.rooms.models', fromlist=['x'])",
        "__import__('realtime_site.usage.models', fromlist=['x'])",
    )
    room = f"{rooms}.Room.objects.get(slug={slug!r}).frames"
    member = f"{rooms}.RoomMember.objects.get(room__slug={slug!r}, user__username={username!r}).frames"
    mine = f"{usage}.ConnectionRecord.objects.filter(mode='room', username={username!r})"
    records = f"sum({mine}.values_list('frames_in', flat=True))"
    figures = stack.query(f"[{room}, {member}, {records}]")
    return tuple(figures)  # type: ignore[arg-type, return-value]
