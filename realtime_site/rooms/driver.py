"""A room's driver: in exactly one gateway process (``election``), it holds the room's canvas,
applies the members' ops in the order they reach it, and drives the room's one inference stream
(docs/rooms.md, "The driver").

It is a member of the room's group on the channel layer. Ops come to it there, as they come to every
member; it answers a joiner's ``hello`` with the room's state; after a change it sends the canvas to
the runner (latest wins, at most one frame every ``FRAME_INTERVAL``) and, once the strokes settle
(or every ``SNAPSHOT_MAX_WAIT`` while they go on), the same canvas to the members, who replace theirs
with it: one truth. Results go to the whole group. The canvas and the parameters are saved every
``SAVE_INTERVAL`` while they change, never on the frame path. A frame is counted to the room, and to
the member whose change started it, against that member's own frame limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import msgpack
from channels.db import database_sync_to_async
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from realtime_site.gateway.runners import NoRunner, get_pool
from realtime_site.rooms import storage
from realtime_site.rooms.accounting import RoomAccount
from realtime_site.rooms.election import RENEW_SECONDS, Election
from realtime_site.rooms.groups import room_group
from realtime_site.rooms.raster import RoomCanvas

__all__ = ["DEFAULT_PARAMS", "RoomDriver"]

log = logging.getLogger("realtime_site.rooms")

FRAME_INTERVAL = 0.128  # seconds between frames to the runner, as the drawing page sends them
SNAPSHOT_SETTLE = 0.15  # the strokes have settled after this long without an op
SNAPSHOT_MAX_WAIT = 1.0  # ... or the canvas goes out anyway, while they go on
SAVE_INTERVAL = 2.0
PRESENCE_TIMEOUT = 30.0  # a connection not heard of for this long is gone (its process died)
IDLE_STOP = 30.0  # with no member for this long, the driver stops (the room stays stored)
RETRY_RUNNER = 2.0
DEFAULT_PARAMS = {"prompt": "", "strength": 0.8, "num_inference_steps": 2, "seed": 42, "image_size": 512,
                  "output_format": "jpeg"}  # fmt: skip


class RoomDriver:
    def __init__(self, slug: str, layer: Any, election: Election):
        self.slug = slug
        self.layer = layer
        self.election = election
        self.group = room_group(slug)
        self.canvas: RoomCanvas | None = None
        self.room_id = 0
        self.app = ""
        self.params: dict[str, Any] = dict(DEFAULT_PARAMS)
        self.version = 0
        self.acked: dict[str, int] = {}  # connection -> its last op applied
        self.members: dict[str, dict[str, Any]] = {}  # connection -> user, username, color, seen
        self.result: dict[str, Any] | None = None  # the latest, for joiners
        self.changed = asyncio.Event()  # a frame is due
        self.unsynced_since: float | None = None  # the first change the members' canvases lack
        self.last_op_at = 0.0
        self.trigger: int | None = None  # the user whose change is the latest
        self.dirty = False  # something to save
        self.account = RoomAccount("")
        self._tasks: set[asyncio.Future[Any]] = set()  # held until done: the loop keeps weak references
        self.stopping = asyncio.Event()
        self.stop_reason = ""
        self.channel = ""
        self._base_saved = 0

    # -- life ------------------------------------------------------------------------------------

    async def run(self) -> None:
        room = await database_sync_to_async(storage.load)(self.slug)
        if room is None or room.closed_at is not None:
            return
        self.room_id, self.app, self.version = room.pk, room.app, room.version
        self.account = RoomAccount(room.app)
        self.params.update(room.params or {})
        self.canvas = RoomCanvas.of_state(room.base, room.background, room.ops or [])
        self._base_saved = self.canvas.base_version
        self.trigger = room.owner_id  # the canvas as it stands is painted at once, on the owner's account
        self.changed.set()
        self.channel = await self.layer.new_channel()
        await self.layer.group_add(self.group, self.channel)
        log.info("room %s: driving it (app %s, version %d)", self.slug, self.app, self.version)
        await self.layer.group_send(self.group, {"type": "room.roll_call"})  # who is here already
        await self.layer.group_send(self.group, {"type": "room.state", **self._state()})  # members waiting
        tasks = [asyncio.ensure_future(t) for t in (self._receive(), self._lease(), self._frames(),
                                                      self._snapshots(), self._saves(), self._presence())]  # fmt: skip
        try:
            await self.stopping.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.shield(self._ended())

    def stop(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason
        self.stopping.set()

    async def _ended(self) -> None:
        with contextlib.suppress(Exception):
            await self._save()
        self.account.close()
        with contextlib.suppress(Exception):
            await self.layer.group_discard(self.group, self.channel)
        await self.election.release(self.slug)
        log.info("room %s: no longer driven here (%s)", self.slug, self.stop_reason)

    async def _lease(self) -> None:
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            if not await self.election.renew(self.slug):
                self.stop("the lease went to another process")

    # -- the group's messages --------------------------------------------------------------------

    async def _receive(self) -> None:
        delay = 0.5
        while True:
            try:
                message = await self.layer.receive(self.channel)
            except Exception as exc:  # the layer away (Redis): join the group again once it is back
                log.warning("room %s: channel layer unavailable (%s); retrying", self.slug, type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 10.0)
                with contextlib.suppress(Exception):
                    await self.layer.group_add(self.group, self.channel)
                continue
            delay = 0.5
            try:
                await self.handle(message)
            except Exception:  # one bad message must not stop the room
                log.exception("room %s: message %s failed", self.slug, message.get("type"))

    async def handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "room.op":
            self._apply(message)
        elif kind in ("room.roll_call", "room.cursor", "room.state", "room.canvas", "room.result",
                      "room.members", "room.error"):  # fmt: skip
            return  # for the members
        elif kind == "room.presence":
            self._presence_of(message)
        elif kind == "room.hello":
            await self.layer.send(message["reply_to"], {"type": "room.state", **self._state()})
        elif kind == "room.closed":
            self.stop("the room was closed")
        elif kind == "room.kick":
            for connection in [c for c, m in self.members.items() if m["user"] == message["user"]]:
                self._gone(connection)

    def _apply(self, message: dict[str, Any]) -> None:
        assert self.canvas is not None
        op, connection, user = message["op"], message["connection"], message["user"]
        self.acked[connection] = message["n"]
        kind = op["t"]
        if kind == "params":
            self.params.update(op["values"])
        elif kind == "down":
            self.canvas.down(connection, user, op["k"], op["c"], op["w"], op["e"], tuple(op["p"]))
        elif kind == "move":
            self.canvas.move(connection, op["k"], tuple(op["p"]))
        elif kind == "up":
            self.canvas.up(connection, op["k"])
        elif kind == "fill":
            self.canvas.fill(user, op["c"])
        elif kind == "clear":
            self.canvas.fill(user, "#ffffff")
        elif kind == "undo":
            self.canvas.undo(user)
        elif kind == "redo":
            self.canvas.redo(user)
        if kind != "up":
            self.version += 1
            self.trigger = user
            self.dirty = True
            self.last_op_at = time.monotonic()
            self.unsynced_since = self.unsynced_since or self.last_op_at
            self.changed.set()

    def _presence_of(self, message: dict[str, Any]) -> None:
        connection = message["connection"]
        if message["event"] == "leave":
            self._gone(connection)
            return
        known = connection in self.members
        self.members[connection] = {"user": message["user"], "username": message["username"],
                                    "color": message["color"], "seen": time.monotonic()}  # fmt: skip
        if not known:
            self._soon(self._tell_members())

    def _gone(self, connection: str) -> None:
        member = self.members.pop(connection, None)
        if member is not None:
            if self.canvas is not None:
                self.canvas.left(connection)
            self.acked.pop(connection, None)
            if not any(m["user"] == member["user"] for m in self.members.values()):
                self.account.user_left(member["user"])
            self._soon(self._tell_members())

    def _soon(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tell_members(self) -> None:
        await self.layer.group_send(self.group, {"type": "room.members", "members": self._member_list()})

    def _member_list(self) -> list[dict[str, Any]]:
        seen: dict[int, dict[str, Any]] = {}
        for connection, member in self.members.items():
            entry = seen.setdefault(member["user"], {"user": member["user"], "username": member["username"],
                                                     "color": member["color"], "connections": []})  # fmt: skip
            entry["connections"].append(connection)
        return sorted(seen.values(), key=lambda m: m["username"])

    def _state(self) -> dict[str, Any]:
        assert self.canvas is not None
        return {"png": self.canvas.png(), "version": self.version, "acked": dict(self.acked),
                "background": self.canvas.background, "params": self.params, "members": self._member_list(),
                "result": self.result}  # fmt: skip

    async def _presence(self) -> None:
        idle_since = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for connection in [c for c, m in self.members.items() if now - m["seen"] > PRESENCE_TIMEOUT]:
                self._gone(connection)
            if self.members:
                idle_since = now
            elif now - idle_since > IDLE_STOP:
                self.stop("no member for a while")

    # -- the canvas to the members ---------------------------------------------------------------

    async def _snapshots(self) -> None:
        while True:
            await asyncio.sleep(SNAPSHOT_SETTLE / 3)
            if self.unsynced_since is None or self.canvas is None:
                continue
            now = time.monotonic()
            if now - self.last_op_at < SNAPSHOT_SETTLE and now - self.unsynced_since < SNAPSHOT_MAX_WAIT:
                continue
            self.unsynced_since = None
            message = {"type": "room.canvas", "png": self.canvas.png(), "version": self.version,
                       "acked": dict(self.acked), "background": self.canvas.background}  # fmt: skip
            await self.layer.group_send(self.group, message)

    # -- the canvas to the runner ----------------------------------------------------------------

    async def _frames(self) -> None:
        ws: ClientConnection | None = None
        reader: asyncio.Task[None] | None = None
        try:
            while True:
                await self.changed.wait()
                self.changed.clear()
                if ws is None or ws.close_code is not None:
                    ws, reader = await self._open(reader)
                    if ws is None:
                        self.changed.set()  # try again later
                        await asyncio.sleep(RETRY_RUNNER)
                        continue
                user = self.trigger
                if user is not None and await self._refused(user):
                    continue
                assert self.canvas is not None
                frame = {**self._frame_params(), "image_bytes": self.canvas.png(), "request_id": self.version}
                try:
                    await ws.send(msgpack.packb(frame))
                except ConnectionClosed:  # the runner session ended: send it again on a new one
                    self.changed.set()
                    continue
                if user is not None:
                    self.account.sent(user, self._username(user), self.version, len(frame["image_bytes"]))
                await asyncio.sleep(FRAME_INTERVAL)
        finally:
            if reader is not None:
                reader.cancel()
            if ws is not None:
                await ws.close()

    def _frame_params(self) -> dict[str, Any]:
        size = int(self.params.get("image_size", 512))
        frame = {k: self.params[k] for k in ("prompt", "strength", "num_inference_steps", "seed", "output_format")
                 if k in self.params}  # fmt: skip
        frame["prompt"] = frame.get("prompt") or " "
        frame["image_size"] = {"width": size, "height": size}
        return frame

    async def _open(self, reader: asyncio.Task[None] | None) -> tuple[ClientConnection | None, Any]:
        if reader is not None:
            reader.cancel()
        try:
            pool = get_pool()
            await pool.ready()
            ws, runner = await pool.open_session(self.app, f"{self.app}/realtime?max_buffering=1")
        except NoRunner as exc:
            await self._tell_error(exc.code.value, exc.reason)
            return None, None
        self.account.on_runner(runner.url)
        return ws, asyncio.ensure_future(self._results(ws, runner))

    async def _results(self, ws: ClientConnection, runner: Any) -> None:
        try:
            async for message in ws:
                data = msgpack.unpackb(message) if isinstance(message, bytes) else _json(message)
                if not isinstance(data, dict):
                    continue
                if data.get("type") == "x-fal-error":
                    self.account.error(str(data.get("error")))
                    await self._tell_error(str(data.get("error")), str(data.get("reason")))
                    continue
                if data.get("type") or not data.get("images"):
                    continue  # meta messages
                inference = (data.get("timings") or {}).get("inference") or 0.0
                self.account.answered(data.get("request_id"), len(message), float(inference))
                self.result = data
                await self.layer.group_send(self.group, {"type": "room.result", "result": data})
        finally:
            runner.local_sessions -= 1  # counted by open_session

    async def _tell_error(self, code: str, reason: str) -> None:
        await self.layer.group_send(self.group, {"type": "room.error", "error": code, "reason": reason})

    async def _refused(self, user: int) -> bool:
        refused = await self.account.refusal(user)
        if refused is not None:
            reason = f"{refused[1]} (your changes reach the room, but start no frame)"
            await self.layer.group_send(self.group, {"type": "room.error", "error": refused[0], "reason": reason,
                                                     "user": user})  # fmt: skip
        return refused is not None

    def _username(self, user: int) -> str:
        return next((m["username"] for m in self.members.values() if m["user"] == user), "")

    # -- storage ---------------------------------------------------------------------------------

    async def _saves(self) -> None:
        while True:
            await asyncio.sleep(SAVE_INTERVAL)
            with contextlib.suppress(Exception):  # the database away: saved at the next round
                await self._save()

    async def _save(self) -> None:
        if not (self.dirty or self.account.frames) or self.canvas is None:
            return
        base_version = self.canvas.base_version
        state = self.canvas.state(with_base=False)
        base = self.canvas.base.copy() if base_version != self._base_saved else None  # encoded off the loop
        frames, self.dirty = self.account.take_frames(), False
        try:
            store = database_sync_to_async(storage.store)
            await store(self.room_id, state, base, dict(self.params), self.version, frames)
        except Exception:
            self.account.give_back_frames(frames)
            self.dirty = True
            raise
        self._base_saved = base_version


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None
