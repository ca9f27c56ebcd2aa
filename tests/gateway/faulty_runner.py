"""A runner-protocol peer with faults the real runner no longer has, for the gateway's blame tests.

It serves two apps: ``test/crash`` closes the session with 1011 at its first frame (a runner bug met
by one client's input), and ``test/chatter`` answers every frame with a stream of ``x-fal-error`` text
messages (so a client that leaves meets a relay in flight).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from websockets.asyncio.server import ServerConnection

from tests.gateway.peer import runner_peer

APPS = {"test/crash": ("realtime",), "test/chatter": ("realtime",)}


async def _session(ws: ServerConnection) -> None:
    path = (ws.request.path if ws.request else "").split("?")[0]
    async for _ in ws:
        if path.startswith("/test/crash/"):
            await ws.close(1011, "internal error")
            return
        error = json.dumps({"type": "x-fal-error", "error": "TIMEOUT", "reason": "chatter"})
        for _ in range(2000):
            await ws.send(error)


@contextmanager
def faulty_runner() -> Iterator[str]:
    """Serve in a thread of its own; yields ``ws://127.0.0.1:PORT``."""
    with runner_peer(APPS, _session) as url:
        yield url
