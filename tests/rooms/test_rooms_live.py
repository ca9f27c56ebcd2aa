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
from tests.rooms.live import Member, frames_counted, join, logged_in, make_room, make_users, manage, pixels

APPS = "local/echo,local/stylize"
People = Callable[..., list[httpx.Client]]
MOST_ROOMS = 12
METRICS = "rooms-metrics-bearer"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    stack = start_stack(
        tmp_path_factory.mktemp("rooms"),
        [["--apps", APPS]],
        {"REALTIME_MAX_OPEN_ROOMS": str(MOST_ROOMS), "REALTIME_METRICS_TOKEN": METRICS},
    )
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
        figures = httpx.get(f"{stack.http}/metrics", headers={"Authorization": f"Bearer {METRICS}"}).text
        assert 'realtime_sessions_total{app="local/echo",mode="room"}' in figures
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


def stroke(k: int, color: str, x: float, y: float) -> list[dict]:
    return [
        {"t": "down", "k": k, "c": color, "w": 16, "p": [x, y]},
        {"t": "move", "k": k, "p": [x + 40, y + 10, x + 80, y + 30]},
        {"t": "up", "k": k},
    ]


async def draw(member: Member, *messages: dict) -> int:
    for message in messages:
        await member.send(message)
    return member.sent


def test_a_late_joiner_gets_the_canvas_and_the_latest_result(stack: GatewayStack, people: People) -> None:
    ada, bea = people("ada", "bea")
    slug = make_room(ada)

    async def scenario() -> None:
        a = await join(stack, ada, slug)
        await a.next("state")
        await draw(a, *stroke(1, "#0000ff", 50, 50))
        canvas = await a.next("canvas", where=lambda c: c["version"] >= 2)
        result = await a.next("result", where=lambda r: r["request_id"] >= 2)
        b = await join(stack, bea, slug)
        state = await b.next("state")
        assert pixels(state["png"]) == pixels(canvas["png"]) and state["version"] == canvas["version"]
        assert state["result"]["images"][0]["content"] == result["images"][0]["content"]
        assert {
            m["username"] for m in (await b.next("members", where=lambda m: len(m["members"]) == 2))["members"]
        } == {
            "ada",
            "bea",
        }
        await a.ws.close()
        await b.ws.close()

    run(scenario())


def test_undo_takes_back_only_the_members_own_stroke(stack: GatewayStack, people: People) -> None:
    ada, bea = people("ada", "bea")
    slug = make_room(ada, picture="")

    async def scenario() -> None:
        a = await join(stack, ada, slug)
        b = await join(stack, bea, slug)
        blank = (await a.next("state"))["png"]
        await b.next("state")
        await draw(b, *stroke(1, "#00aa00", 300, 300))
        only_bea = await b.next("canvas", where=lambda c: c["version"] >= 2)
        await draw(a, *stroke(1, "#aa0000", 60, 60))
        both = await a.next("canvas", where=lambda c: c["version"] >= 4)
        assert pixels(both["png"]) != pixels(only_bea["png"])
        await a.send({"t": "undo"})
        undone = await b.next("canvas", where=lambda c: c["version"] >= 5)
        assert pixels(undone["png"]) == pixels(only_bea["png"]) != pixels(blank)
        await a.send({"t": "redo"})
        redone = await b.next("canvas", where=lambda c: c["version"] >= 6)
        assert pixels(redone["png"]) == pixels(both["png"])
        await a.ws.close()
        await b.ws.close()

    run(scenario())


def test_a_flooding_member_is_slowed_and_the_others_go_on(stack: GatewayStack, people: People) -> None:
    ada, bea = people("ada", "bea")
    slug = make_room(ada)

    async def scenario() -> None:
        a = await join(stack, ada, slug)
        victim = await join(stack, bea, slug)
        await a.next("state")
        await victim.next("state")
        a.errors_expected = True
        flood = [msgpack.packb({"t": "move", "k": 1, "p": [10.0, 10.0] * 128, "n": i}) for i in range(3000)]
        await a.send({"t": "down", "k": 1, "c": "#000000", "w": 3, "p": [5, 5]})

        async def flooding() -> None:
            for frame in flood:
                await a.ws.send(frame)

        flooder = asyncio.ensure_future(flooding())
        error = await a.next("error", timeout=30)
        assert error["error"] == "RATE_LIMITED" and "a second" in error["reason"]
        # The victim's own stroke goes through, and the room still answers it, while the flood goes on.
        await draw(victim, *stroke(7, "#ff00ff", 200, 200))
        mine = await victim.next("canvas", where=lambda c: c["acked"].get(_connection(victim), 0) >= 3, timeout=30)
        assert mine["version"] > 0
        await victim.next("result", where=lambda r: r["request_id"] >= mine["version"] - 1, timeout=30)
        await flooder
        relayed = [m for m in victim.seen if m["t"] == "op" and m["op"]["t"] == "move" and m["u"] != _user(victim)]
        assert len(relayed) < 400  # the burst and the rate, not the 3000 sent
        await a.ws.close()
        await victim.ws.close()

    run(scenario())


def _connection(member: Member) -> str:
    return next(m["connection"] for m in member.seen if m["t"] == "welcome")


def _user(member: Member) -> int:
    return next(m["user"] for m in member.seen if m["t"] == "welcome")


def test_the_owner_removes_a_member_and_closes_the_room(stack: GatewayStack, people: People) -> None:
    ada, bea, cai = people("ada", "bea", "cai")
    slug = make_room(ada)

    async def scenario() -> None:
        a = await join(stack, ada, slug)
        b = await join(stack, bea, slug)
        c = await join(stack, cai, slug)
        for member in (a, b, c):
            await member.next("state")
        bea_id = _user(b)
        assert manage(bea, slug, action="remove", user=str(_user(c))).status_code == 403  # only the owner
        assert manage(ada, slug, action="remove", user=str(bea_id)).json() == {"ok": True}
        b.errors_expected = True
        told = await b.next("error")
        assert "removed" in told["reason"]
        await b.ws.wait_closed()
        assert b.ws.close_code == 4403
        assert bea.get(f"/rooms/{slug}/").status_code == 403
        again = await join(stack, bea, slug)
        again.errors_expected = True
        assert "removed" in (await again.next("error"))["reason"]
        await again.ws.wait_closed()
        await a.next("members", where=lambda m: {m["username"] for m in m["members"]} == {"ada", "cai"})
        assert manage(ada, slug, action="close").json() == {"ok": True}
        for member in (a, c):
            member.errors_expected = True
            assert "closed" in (await member.next("error"))["reason"]
            await member.ws.wait_closed()
        assert cai.get(f"/rooms/{slug}/").status_code == 403

    run(scenario())


def test_invited_users_only(stack: GatewayStack, people: People) -> None:
    ada, bea, dan = people("ada", "bea", "dan")
    slug = make_room(ada)
    assert bea.get(f"/rooms/{slug}/").status_code == 200  # bea joined before: she stays in
    assert manage(ada, slug, action="invited_only", value="on").json() == {"ok": True}
    assert dan.get(f"/rooms/{slug}/").status_code == 403
    assert bea.get(f"/rooms/{slug}/").status_code == 200
    assert manage(ada, slug, action="invite", username="nobody-here").status_code == 400
    assert manage(ada, slug, action="invite", username="dan").json() == {"ok": True}
    assert dan.get(f"/rooms/{slug}/").status_code == 200


def test_who_may_connect(stack: GatewayStack, people: People) -> None:
    (ada,) = people("ada")
    slug = make_room(ada)

    async def refused(client: httpx.Client, path_slug: str, origin: str | None = None) -> tuple[int, str]:
        member = await join(stack, client, path_slug, origin=origin)
        member.errors_expected = True
        reason = (await member.next("error"))["reason"]
        await member.ws.wait_closed()
        return member.ws.close_code or 0, reason

    async def scenario() -> None:
        with httpx.Client(base_url=stack.http) as stranger:
            assert (await refused(stranger, slug))[0] == 4401
        assert (await refused(ada, slug, origin="https://evil.example"))[0] == 4403
        assert (await refused(ada, "no-such-room"))[0] == 4404

    run(scenario())


def test_the_room_outlives_its_gateway_and_counts_its_frames(stack: GatewayStack, people: People) -> None:
    ada, bea = people("ada", "bea")
    slug = make_room(ada)

    async def draw_some() -> bytes:
        a = await join(stack, ada, slug)
        await a.next("state")
        await draw(a, *stroke(1, "#123456", 100, 400))
        canvas = await a.next("canvas", where=lambda c: c["version"] >= 2)
        await a.next("result", where=lambda r: r["request_id"] >= 2)
        await a.ws.close()
        return canvas["png"]

    before = run(draw_some())
    stack.stop_gateway()  # SIGTERM: the driver saves the room on its way out
    stack.start_gateway()
    for client in (ada, bea):
        client.base_url = httpx.URL(stack.http)

    async def look() -> bytes:
        b = await join(stack, bea, slug)
        state = await b.next("state")
        await b.ws.close()
        return state["png"]

    assert pixels(run(look())) == pixels(before)  # type: ignore[arg-type]
    room_frames, ada_frames, recorded = frames_counted(stack, slug, "ada")
    assert room_frames >= 1 and ada_frames == room_frames and recorded >= room_frames


def test_bad_room_forms_are_named_and_one_owns_only_so_many_open_rooms(stack: GatewayStack, people: People) -> None:
    (dan,) = people("dan")
    for fields, problem in [
        ({"app": "not an app"}, "app"),
        ({"app": "local/echo", "picture": "data:text/html;base64,PGI+"}, "picture"),
        ({"app": "local/echo", "picture": "data:image/png;base64,%%%"}, "picture"),
        ({"app": "local/echo", "picture": "data:image/png;base64,aGVsbG8="}, "picture"),
        ({"app": "local/echo", "strength": "9"}, "strength"),
        ({"app": "local/echo", "seed": "1" * 400}, "seed"),
    ]:
        answer = dan.post("/rooms/", data={**fields, "csrfmiddlewaretoken": dan.cookies["csrftoken"]},
                          headers={"Referer": stack.http})  # fmt: skip
        assert answer.status_code == 400 and problem in answer.text, (fields, answer.text)
    made = [make_room(dan) for _ in range(MOST_ROOMS)]
    over = dan.post("/rooms/", data={"app": "local/echo", "csrfmiddlewaretoken": dan.cookies["csrftoken"]},
                    headers={"Referer": stack.http})  # fmt: skip
    assert over.status_code == 429 and "close one first" in over.text
    assert manage(dan, made[0], action="close").json() == {"ok": True}
    assert make_room(dan) not in made


def test_a_new_room_paints_its_drawing_before_any_stroke(stack: GatewayStack, people: People) -> None:
    (ada,) = people("ada")
    slug = make_room(ada)

    async def scenario() -> None:
        a = await join(stack, ada, slug)
        state = await a.next("state")
        result = await a.next("result")  # nobody drew yet: the shared drawing itself is painted
        assert result["request_id"] == state["version"] == 0
        await a.ws.close()

    run(scenario())
