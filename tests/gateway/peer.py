"""A runner-protocol peer in a thread of its own: it answers ``/healthz`` like a runner for the apps it
is given, and runs ``session`` for every WebSocket the gateway opens. The tests' own apps (faults the
real runner no longer has, fal's test apps) are served through it, behind the real gateway."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

Session = Callable[[ServerConnection], Awaitable[None]]


def _health_of(apps: dict[str, tuple[str, ...]]) -> Callable[[ServerConnection, Request], Response | None]:
    entries = [{"id": app, "state": "ready", "reason": None, "paths": list(paths)} for app, paths in apps.items()]
    body = json.dumps({"status": "ok", "apps": entries, "connections": 0}).encode()

    def health(connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?")[0] != "/healthz":
            return None
        headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return Response(200, "OK", headers, body)

    return health


@contextmanager
def runner_peer(apps: dict[str, tuple[str, ...]], session: Session) -> Iterator[str]:
    """Serve ``apps`` with ``session``; yields ``ws://127.0.0.1:PORT``."""
    loop = asyncio.new_event_loop()
    ready: list[int] = []
    started, stop = threading.Event(), asyncio.Event()

    async def main() -> None:
        async with serve(session, "127.0.0.1", 0, process_request=_health_of(apps), compression=None) as server:
            ready.append(server.sockets[0].getsockname()[1])
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10), "the runner peer did not start"
    try:
        yield f"ws://127.0.0.1:{ready[0]}"
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
