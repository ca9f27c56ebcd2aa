"""fal's test apps, served behind our real gateway: what the fakes in fal-client's realtime tests answer,
answered by a real WebSocket app instead (the real runner serves image apps only, and these tests
read before they send). Each app speaks as soon as its session opens, on every path it declares."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import msgpack
from websockets.asyncio.server import ServerConnection

from tests.gateway.peer import runner_peer

# App id -> (its paths, what it sends when a session opens). "1234-test" in fal's tests is 1234/test.
APPS: dict[str, tuple[tuple[str, ...], list[bytes | str]]] = {
    "1234/test": (("realtime", "custom", "chat"), [msgpack.packb({"ok": True}, use_bin_type=True)]),
    "1234/decodes": (
        ("realtime",),
        [json.dumps({"type": "x-fal-message", "action": "ping"}), msgpack.packb({"foo": "bar"}, use_bin_type=True)],
    ),
    "1234/refuses": (("realtime",), [json.dumps({"type": "x-fal-error", "error": "BAD_REQUEST", "reason": "nope"})]),
}


async def _session(ws: ServerConnection) -> None:
    app = "/".join((ws.request.path if ws.request else "").split("?")[0].strip("/").split("/")[:2])
    for message in APPS[app][1]:
        await ws.send(message)
    async for _ in ws:  # inputs are not part of these tests
        pass


@contextmanager
def fal_test_apps() -> Iterator[str]:
    """Serve fal's test apps; yields the runner address for the gateway's ``RUNNER_URLS``."""
    with runner_peer({app: paths for app, (paths, _) in APPS.items()}, _session) as url:
        yield url
