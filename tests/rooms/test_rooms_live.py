"""Rooms against real daphne and a real runner: members' strokes reach the others as they are drawn,
one inference stream serves everyone, the settled canvas is pixel for pixel what the runner was sent,
late joiners get the canvas, bad messages are named and go nowhere, a flooding member is slowed
while the others go on, the owner's controls take effect, and the room outlives its gateway."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import httpx
import msgpack
import pytest

from tests.gateway.stack import GatewayStack, start_stack
from tests.rooms.live import Member, join, logged_in, make_room, make_users, pixels

APPS = "local/echo,local/stylize"
People = Callable[..., list[httpx.Client]]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    stack = start_stack(tmp_path_factory.mktemp("rooms"), [["--apps", APPS]])
    make_users(stack, "ada", "bea", "cai", "dan")
    yield stack
    stack.close()


@pytest.fixture
def people(stack: GatewayStack) -> Iterator[Callable[..., list[httpx.Client]]]:
    """Logged-in HTTP clients by name, closed after the test."""
    made: list[httpx.Client] = []

    def log_in(*names: str) -> list[httpx.Client]:
        clients = [logged_in(stack, name) for name in names]
        made.extend(clients)
        return clients

    yield log_in
    for client in made:
        client.close()


def run(coroutine) -> object:  # type: ignore[no-untyped-def]
    return asyncio.run(coroutine)


async def settle(*members: Member, version: int) -> list[dict]:
    return [await m.next("canvas", where=lambda c: c["version"] >= version) for m in members]


def test_strokes_reach_the_others_and_one_result_reaches_all(stack: GatewayStack, people: People) -> None:
    ada, bea = people("ada", "bea")
    slug = make_room(ada)

    async def scenario() -> None:
        a = await join(stack, ada, slug)
        b = await join(stack, bea, slug)
        await a.next("state")
        await b.next("state")
        await a.send({"t": "params", "output_format": "png", "image_size": 512})
        await a.send({"t": "down", "k": 1, "c": "#ff0000", "w": 12, "p": [100, 100]})
        await a.send({"t": "move", "k": 1, "p": [150, 120, 200, 160]})
        seen = await b.next("op", where=lambda m: m["op"]["t"] == "move")
        assert seen["op"] == {"t": "move", "k": 1, "p": [150, 120, 200, 160]}  # points as drawn, not at the end
        assert seen["u"] > 0 and seen["m"] and seen["n"] == 3
        await a.send({"t": "up", "k": 1})
        canvases = await settle(a, b, version=3)
        assert canvases[0]["png"] == canvases[1]["png"]
        results = [await m.next("result", where=lambda r: r["request_id"] >= 3) for m in (a, b)]
        assert results[0]["images"][0]["content"] == results[1]["images"][0]["content"]
        # local/echo gives back what it was sent: the members' canvas is pixel for pixel the runner's input
        assert pixels(results[0]["images"][0]["content"]) == pixels(canvases[0]["png"])
        await a.ws.close()
        await b.ws.close()

    run(scenario())


def test_bad_messages_are_named_to_their_sender_only(stack: GatewayStack, people: People) -> None:
    ada, bea = people("ada", "bea")
    slug = make_room(ada)

    async def scenario() -> None:
        a = await join(stack, ada, slug)
        b = await join(stack, bea, slug)
        await a.next("state")
        await b.next("state")
        a.errors_expected = True
        bad = [
            {"t": "down", "k": 1, "c": "red", "w": 5, "p": [1, 1]},
            {"t": "down", "k": 1, "c": "#ff0000", "w": 500, "p": [1, 1]},
            {"t": "move", "k": 1, "p": [1e9, 1]},
            {"t": "move", "k": 1, "p": [1] * 301},
            {"t": "params", "strength": "lots"},
            {"t": "teleport"},
        ]
        for message in bad:
            await a.send(message)
            error = await a.next("error")
            assert error["error"] == "VALIDATION_ERROR" and error["reason"], error
        await a.ws.send(b"\xc1 not msgpack")
        assert "not msgpack" in (await a.next("error"))["reason"]
        await a.ws.send(msgpack.packb({"t": "params", "prompt": "x" * 20_000}))
        assert (await a.next("error"))["error"] == "PAYLOAD_TOO_LARGE"
        await a.send({"t": "down", "k": 2, "c": "#00ff00", "w": 4, "p": [10, 10]})
        op = await b.next("op")
        assert op["op"]["k"] == 2  # the first op that reached bea is the first good one
        assert not [m for m in b.seen if m["t"] == "error"]
        await a.ws.close()
        await b.ws.close()

    run(scenario())
