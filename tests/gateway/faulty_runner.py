"""A runner-protocol peer with faults the real runner no longer has, for the gateway's blame tests.

It answers ``/healthz`` like a runner and serves two apps: ``test/crash`` closes the session with
1011 at its first frame (a runner bug met by one client's input), and ``test/chatter`` answers every
frame with a stream of ``x-fal-error`` text messages (so a client that leaves meets a relay in flight).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

APPS = ("test/crash", "test/chatter")


def _health(connection: ServerConnection, request: Request) -> Response | None:
    if request.path.split("?")[0] != "/healthz":
        return None
    apps = [{"id": app, "state": "ready", "reason": None, "paths": ["realtime"]} for app in APPS]
    body = json.dumps({"status": "ok", "apps": apps, "connections": 0}).encode()
    return Response(
        200, "OK", Headers([("Content-Type", "application/json"), ("Content-Length", str(len(body)))]), body
    )


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
    loop = asyncio.new_event_loop()
    ready: list[int] = []
    started, stop = threading.Event(), asyncio.Event()

    async def main() -> None:
        async with serve(_session, "127.0.0.1", 0, process_request=_health, compression=None) as server:
            ready.append(server.sockets[0].getsockname()[1])
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10), "the faulty runner did not start"
    try:
        yield f"ws://127.0.0.1:{ready[0]}"
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
