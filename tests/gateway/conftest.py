"""Gateway fixtures: a runner pool pointed at real runner processes, users, credentials."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model

from realtime_site.accounts.failures import failures
from realtime_site.accounts.keys import create_api_key
from realtime_site.asgi import application
from realtime_site.gateway import runners
from realtime_site.gateway.admission_cache import reset_admission_cache
from realtime_site.gateway.admission_feed import admission_feed
from realtime_site.gateway.connect_rate import reset_connect_rate
from realtime_site.gateway.limits import limiter
from realtime_site.gateway.warm_upstreams import warm_upstreams
from tests.conftest import RunnerProcess, drawing, encode

JPEG = encode(drawing(64, 64))


@pytest.fixture
async def pool(shared_runner: RunnerProcess) -> AsyncIterator[runners.RunnerPool]:
    """A fresh pool (per test) over the shared runner; what the test's connections left behind on this
    loop (runner sessions opened ahead, the admission feed) is closed with it."""
    runners._pool = runners.RunnerPool([shared_runner.ws_base], interval=0.5)
    yield runners._pool
    await warm_upstreams().close_all()
    await admission_feed().stop()
    runners._pool = None
    reset_admission_cache()
    limiter._users.clear()
    failures.clear()
    reset_connect_rate()


@pytest.fixture
def user(transactional_db):
    return get_user_model().objects.create_user("carol", password="pw-carol-123")


@pytest.fixture
def api_key(user) -> str:
    return create_api_key(user)[1]


def communicator(
    path: str, headers: list[tuple[bytes, bytes]] | None = None, *, client: str = "127.0.0.1"
) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(application, path, headers=headers or [])
    comm.scope["client"] = (client, 50000)
    return comm


def frame(**fields: Any) -> bytes:
    return msgpack.packb({"prompt": "x", "image_bytes": JPEG, "width": 64, "height": 64, **fields}, use_bin_type=True)


async def receive(comm: WebsocketCommunicator, timeout: float = 20) -> dict[str, Any]:
    message = await comm.receive_output(timeout)
    if message["type"] == "websocket.close":
        return {"closed": message.get("code")}
    if message.get("bytes") is not None:
        return msgpack.unpackb(message["bytes"], raw=False)
    return json.loads(message["text"])
