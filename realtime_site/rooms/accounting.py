"""What a room's frames cost, and to whom: each frame is counted to the room and to the member whose
change started it, in that member's usage record (mode ``room``; one from their first frame until
they have no connection left in the room) and against their frame limits."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async

from realtime_site.gateway.limits import limiter
from realtime_site.protocol import ErrorCode
from realtime_site.rooms.storage import limits_of
from realtime_site.usage import metrics
from realtime_site.usage.models import AuthMethod, Mode
from realtime_site.usage.recorder import GATEWAY_NAME, Usage, recorder

__all__ = ["RoomAccount"]

KEEP_SENT = 64  # frame numbers remembered to credit their results


class RoomAccount:
    def __init__(self, app: str):
        self.app = app
        self.runner = ""
        self.usage: dict[int, Usage] = {}
        self._limits: dict[int, Any] = {}
        self.frames: dict[int, int] = {}  # not saved yet, by user
        self._sent_by: dict[int, int] = {}  # frame number -> user

    async def refusal(self, user: int) -> tuple[str, str] | None:
        """Why ``user``'s change may not start a frame now (their limits), or None."""
        if user not in self._limits:
            self._limits[user] = await database_sync_to_async(limits_of)(user)
        limits = self._limits[user]
        if limits is None:
            return "FORBIDDEN", "the user is inactive or gone"
        refused = limiter.frame(user, limits)
        return None if refused is None else (str(refused[0]), refused[1])

    def sent(self, user: int, username: str, number: int, size: int) -> None:
        self._sent_by[number] = user
        while len(self._sent_by) > KEEP_SENT:
            self._sent_by.pop(next(iter(self._sent_by)))
        self.frames[user] = self.frames.get(user, 0) + 1
        usage = self.usage.get(user)
        if usage is None:
            usage = Usage(user_id=user, app=self.app, auth_method=AuthMethod.SESSION, mode=Mode.ROOM,
                          username=username, gateway=GATEWAY_NAME, runner=self.runner)  # fmt: skip
            self.usage[user] = usage
            recorder.open(usage)
            metrics.SESSIONS.labels(self.app, Mode.ROOM).inc()
        usage.frames_in += 1
        usage.bytes_in += size
        metrics.FRAMES.labels(self.app).inc()

    def answered(self, number: object, size: int, inference: float) -> None:
        user = self._sent_by.pop(number, None) if isinstance(number, int) else None
        usage = self.usage.get(user) if user is not None else None
        if usage is not None:
            usage.results_out += 1
            usage.bytes_out += size
            usage.inference_seconds += inference
        metrics.RESULTS.labels(self.app).inc()

    def error(self, code: str) -> None:
        metrics.ERRORS.labels(self.app, code if code in ErrorCode.__members__ else "OTHER").inc()
        for usage in self.usage.values():
            usage.errors[code] += 1
            break

    def on_runner(self, url: str) -> None:
        self.runner = url
        for usage in self.usage.values():
            usage.runner = url

    def take_frames(self) -> dict[int, int]:
        frames, self.frames = self.frames, {}
        return frames

    def give_back_frames(self, frames: dict[int, int]) -> None:
        for user, count in frames.items():
            self.frames[user] = self.frames.get(user, 0) + count

    def user_left(self, user: int) -> None:
        """The user has no connection left in the room: their record ends (a return opens another)."""
        usage = self.usage.pop(user, None)
        if usage is not None:
            recorder.close_soon(usage, 1000)
        self._limits.pop(user, None)

    def close(self) -> None:
        for usage in self.usage.values():
            recorder.close_soon(usage, 1000)
        self.usage.clear()
