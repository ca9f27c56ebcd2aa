"""Frames per minute across reconnects and across two real daphne processes sharing Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.conftest import drawing, encode
from tests.gateway.stack import GatewayStack, another_gateway, start_stack
from tests.runner.wsclient import open_ws, pack, recv_result

REDIS_DB = 12
PER_MINUTE = 20
JPEG = encode(drawing(64, 64))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayStack, GatewayStack]]:
    prefix = f"test-limits-cluster:{uuid.uuid4().hex}"
    a = start_stack(
        tmp_path_factory.mktemp("limits"),
        [["--apps", "local/echo"]],
        {
            "REDIS_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
            "REALTIME_LIMITS_PREFIX": prefix,
            "REALTIME_FRAMES_PER_MINUTE": str(PER_MINUTE),
        },
    )
    try:
        b = another_gateway(a)
    except Exception:
        a.close()
        raise
    a.prefix = prefix  # type: ignore[attr-defined]
    make = "; ".join(f"U.objects.create_user({n!r}, password='pw-{n}-1234567')" for n in ("mallory", "vic"))
    a.manage("shell", "-c", f"from django.contrib.auth import get_user_model; U = get_user_model(); {make}")
    a.keys = {n: a.manage("create_api_key", n).strip() for n in ("mallory", "vic")}  # type: ignore[attr-defined]
    yield a, b
    b.close()
    a.close()
    with redis.Redis(db=REDIS_DB) as client:
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)


async def session(stack: GatewayStack, key: str):
    return await open_ws(f"{stack.ws}/local/echo/realtime", additional_headers={"Authorization": f"Key {key}"})


async def send(ws, request_id: object) -> dict:
    await ws.send(pack(prompt="x", image_bytes=JPEG, width=64, height=64, request_id=request_id))
    return await recv_result(ws)


def user_id(stack: GatewayStack, username: str) -> int:
    auth = "__import__('django.contrib.auth', fromlist=['x'])"
    return int(stack.query(f"{auth}.get_user_model().objects.get(username={username!r}).pk"))  # type: ignore[arg-type]


def shared_frames(prefix: str, uid: int) -> int:
    """The user's frames in Redis, every gateway's pushes together."""
    with redis.Redis(db=REDIS_DB) as client:
        keys = list(client.scan_iter(f"{prefix}:w:{uid}:*"))
        return sum(int(v or 0) for v in client.mget(keys)) if keys else 0


async def pushed(prefix: str, uid: int, timeout: float = 30.0) -> int:
    """The user's frames in Redis once they reach a minute's worth (or the deadline passes)."""
    deadline = time.monotonic() + timeout
    while (count := await asyncio.to_thread(shared_frames, prefix, uid)) < PER_MINUTE:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    return count


async def test_limits_hold_across_reconnects_and_gateways(cluster) -> None:
    a, b = cluster
    keys, prefix = a.keys, a.prefix  # type: ignore[attr-defined]
    victim = await session(b, keys["vic"])
    assert (await send(victim, "v0"))["request_id"] == "v0"

    attacker = await session(a, keys["mallory"])
    for rid in range(PER_MINUTE):  # the whole minute's frames through gateway A
        assert (await send(attacker, rid))["request_id"] == rid
    refused = await send(attacker, "over")
    assert refused["type"] == "x-fal-error" and refused["error"] == "RATE_LIMITED", refused
    await attacker.close()

    attacker = await session(a, keys["mallory"])  # a reconnect to the same gateway: the same window
    refused = await send(attacker, "again")
    assert refused.get("error") == "RATE_LIMITED", refused
    await attacker.close()

    mallory = await asyncio.to_thread(user_id, a, "mallory")
    assert await pushed(prefix, mallory) == PER_MINUTE  # gateway A pushes its counts every quarter second

    attacker = await session(b, keys["mallory"])  # then through gateway B: no fresh window
    results = 0
    for rid in range(PER_MINUTE):
        reply = await send(attacker, f"b{rid}")
        if reply.get("type") == "x-fal-error":
            break
        results += 1
    assert reply.get("error") == "RATE_LIMITED", reply
    # B reads the user's window at connect; frames before that read are decided locally (documented).
    assert results < PER_MINUTE, f"gateway B gave a fresh window ({results} results)"
    await attacker.close()

    for rid in ("v1", "v2"):  # the victim, open throughout on B, is untouched
        assert (await send(victim, rid))["request_id"] == rid
    await victim.close()
