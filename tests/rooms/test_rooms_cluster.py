"""A room across two real daphne processes on Redis (channel layer and the driver's lease): members on
either gateway see each other's strokes and the same results, exactly one process drives the room,
and when that process stops, the other takes the room over and its members go on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import closing

import httpx
import pytest

from tests.gateway.stack import GatewayStack, another_gateway, start_stack
from tests.rooms.live import join, logged_in, make_room, make_users, pixels

REDIS_DB = 13


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayStack, GatewayStack]]:
    a = start_stack(tmp_path_factory.mktemp("rooms-cluster"), [["--apps", "local/echo"]],
                    {"REDIS_URL": f"redis://127.0.0.1:6379/{REDIS_DB}"})  # fmt: skip
    try:
        b = another_gateway(a)
    except Exception:
        a.close()
        raise
    make_users(a, "ada", "bea")
    yield a, b
    b.close()
    a.close()


def driving(stack: GatewayStack, slug: str) -> int:
    return stack.log_path.read_text().count(f"room {slug}: driving it")


def test_members_on_two_gateways_share_one_room_and_one_driver(cluster: tuple[GatewayStack, GatewayStack]) -> None:
    a_gateway, b_gateway = cluster
    with closing(logged_in(a_gateway, "ada")) as ada, closing(logged_in(b_gateway, "bea")) as bea:
        slug = make_room(ada)

        async def scenario() -> None:
            a = await join(a_gateway, ada, slug)
            b = await join(b_gateway, bea, slug)
            await a.next("state")
            await b.next("state")
            await a.send({"t": "down", "k": 1, "c": "#ff0000", "w": 9, "p": [30, 30]})
            await a.send({"t": "move", "k": 1, "p": [90, 90]})
            await a.send({"t": "up", "k": 1})
            op = await b.next("op", where=lambda m: m["op"]["t"] == "move")
            assert op["op"]["p"] == [90, 90]
            await b.send({"t": "down", "k": 1, "c": "#0000ff", "w": 9, "p": [300, 30]})
            await b.send({"t": "up", "k": 1})
            await a.next("op", where=lambda m: m["op"]["t"] == "down" and m["op"]["c"] == "#0000ff")
            canvases = [await m.next("canvas", where=lambda c: c["version"] >= 3) for m in (a, b)]
            assert pixels(canvases[0]["png"]) == pixels(canvases[1]["png"])
            results = [await m.next("result", where=lambda r: r["request_id"] >= 3) for m in (a, b)]
            assert results[0]["images"][0]["content"] == results[1]["images"][0]["content"]
            await a.ws.close()
            await b.ws.close()

        asyncio.run(scenario())
        assert driving(a_gateway, slug) + driving(b_gateway, slug) == 1


def test_the_other_gateway_takes_the_room_over(cluster: tuple[GatewayStack, GatewayStack]) -> None:
    a_gateway, b_gateway = cluster
    with closing(logged_in(a_gateway, "ada")) as ada, closing(logged_in(b_gateway, "bea")) as bea:
        slug = make_room(ada)

        async def first() -> None:
            a = await join(a_gateway, ada, slug)  # gateway a drives the room: its member came first
            await a.next("state")
            b = await join(b_gateway, bea, slug)
            await b.next("state")
            await a.ws.close()
            await b.ws.close()

        asyncio.run(first())
        assert driving(a_gateway, slug) == 1 and driving(b_gateway, slug) == 0
        a_gateway.daphne.kill()  # no shutdown, no release: the lease has to lapse  # type: ignore[union-attr]
        a_gateway.daphne.wait()  # type: ignore[union-attr]
        try:

            async def after() -> None:
                b = await join(b_gateway, bea, slug)
                state = await b.next("state", timeout=30)  # once the lease lapsed and b took it
                await b.send({"t": "down", "k": 5, "c": "#00ff00", "w": 9, "p": [200, 200]})
                await b.send({"t": "up", "k": 5})
                await b.next("result", where=lambda r: r["request_id"] > state["version"], timeout=30)
                await b.ws.close()

            started = time.monotonic()
            asyncio.run(after())
            assert driving(b_gateway, slug) == 1
            assert time.monotonic() - started < 30
        finally:
            a_gateway.start_gateway()
            ada.base_url = httpx.URL(a_gateway.http)


def test_idle_connections_never_saw_the_layer_as_away(cluster: tuple[GatewayStack, GatewayStack]) -> None:
    """redis-py 8 read timeouts (5 s) used to end every idle receive of channels_redis (a 5 s pop)."""
    a_gateway, b_gateway = cluster
    with closing(logged_in(b_gateway, "bea")) as bea:
        slug = make_room(bea)

        async def idle() -> None:
            member = await join(b_gateway, bea, slug)
            await member.next("state")
            await asyncio.sleep(7)  # longer than a read timeout of 5 s, idle
            await member.send({"t": "fill", "c": "#336699"})
            await member.next("canvas", where=lambda c: c["version"] >= 1)
            await member.ws.close()

        asyncio.run(idle())
    for stack in (a_gateway, b_gateway):
        assert "channel layer unavailable" not in stack.log_path.read_text()
