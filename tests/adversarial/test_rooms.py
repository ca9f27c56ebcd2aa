"""Hostile members of shared rooms (docs/rooms.md): floods of strokes, of undos over a heavy history,
of parameters and of open strokes; messages too large, too deep or not msgpack; joining from another
site, without a session, or a room one may not enter; making rooms past the limit; another's room
managed. Each gets its named answer, and the four assertions of ``harness`` hold: the victim's
session (another user, open throughout) keeps getting results while the room's driver works on the
same event loop, memory comes back, and the attacker's room frames are in closed usage records."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.adversarial.attacks import Attack, http
from tests.adversarial.harness import RSS_SLACK, Case, Expect, Harness, Outcome, rss
from tests.conftest import header_only_png

ROOMS = "__import__('realtime_site.rooms.models', fromlist=['Room'])"
RATE = Expect(error="RATE_LIMITED", reason="a second", admitted=range(0, 2))
MEMBER = range(0, 2)  # a room connection has a usage record once its changes started frames


def room_of(h: Harness, owner: str = "attacker", *, invited_only: bool = False) -> str:
    """A room of ``owner`` on local/echo, made in the database (the form is a case of its own)."""
    code = (f"{ROOMS}.Room.objects.create(owner=User.objects.get(username={owner!r}), app='local/echo', "
            f"invited_only={invited_only!r}).slug")  # fmt: skip
    return h.shell(code)


@contextlib.asynccontextmanager
async def member(
    h: Harness, slug: str, *, user: str | None = "attacker", origin: str | None = None, **options: Any
) -> AsyncIterator[ClientConnection]:
    headers = {"Origin": origin or h.stack.http}
    if user is not None:
        headers["Cookie"] = h.session_cookie(user)
    async with connect(h.url(f"/rooms/{slug}/ws"), additional_headers=headers, max_size=None, **options) as ws:
        yield ws


def take(outcome: Outcome, raw: bytes | str) -> dict[str, Any]:
    message = msgpack.unpackb(raw) if isinstance(raw, bytes) else json.loads(raw)
    if message.get("t") == "error":
        outcome.errors.append({"type": "x-fal-error", "error": message["error"], "reason": message["reason"]})
    return message


async def drain(ws: ClientConnection, outcome: Outcome, until: str | None = None, timeout: float = 10) -> None:
    """Read what the room says for a while (or until a message of type ``until``); a close is noted."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                if take(outcome, await ws.recv()).get("t") == until:
                    return
    except TimeoutError:
        if until is not None:
            outcome.problems.append(f"no {until!r} within {timeout:g} s")
    except ConnectionClosed:
        outcome.close, outcome.close_reason = ws.close_code, ws.close_reason or ""


def sends(messages: list[Any], *, then: str | None = "canvas", raw: bool = False) -> Attack:
    """Join a new room of the attacker's, send ``messages`` as fast as they go, and read what comes back
    (at least until ``then``: the room still answers a good op afterwards)."""

    async def attack(h: Harness) -> Outcome:
        outcome = Outcome()
        async with member(h, room_of(h)) as ws:
            await drain(ws, outcome, until="state")
            for message in messages:
                await ws.send(message if raw else msgpack.packb(message))
            await asyncio.sleep(1.1)  # the buckets refill a little: the good op below is not refused
            await ws.send(msgpack.packb({"t": "fill", "c": "#123456", "n": 10**6}))
            if then:
                await drain(ws, outcome, until=then, timeout=15)
                outcome.lived = outcome.close is None and not any("no " in p for p in outcome.problems)
        return outcome

    return attack


def heavy_history_then_undos(strokes: int, undos: int) -> Attack:
    """Wide strokes (the most costly to draw again), then a storm of undos and redos: each would draw
    the whole canvas again; the rate and the stale picture keep that to a few redraws a second."""
    points = [float(v % 500) for v in range(256)]
    messages: list[Any] = []
    for k in range(strokes):
        messages += [{"t": "down", "k": k, "c": "#aa0000", "w": 128, "p": points[:2]},
                     {"t": "move", "k": k, "p": points}, {"t": "up", "k": k}]  # fmt: skip
    messages += [{"t": "undo" if i % 2 else "redo"} for i in range(undos)]
    return sends(messages)


def refused_member(*, user: str | None = "attacker", origin: str | None = None, own: str | None = "attacker",
                   invited_only: bool = False, slug: str | None = None) -> Attack:  # fmt: skip
    async def attack(h: Harness) -> Outcome:
        outcome = Outcome()
        room = slug or room_of(h, own or "attacker", invited_only=invited_only)
        async with member(h, room, user=user, origin=origin) as ws:
            await drain(ws, outcome)
        return outcome

    return attack


STALLED_LOG = "closing a member that read nothing"


async def a_member_never_reads(h: Harness) -> Outcome:
    """One member reads nothing (a tiny receive buffer) while another draws noisy strokes at the
    allowed rate: daphne holds no more than a couple of canvases and results for the silent one, and
    closes it as stalled (it cannot read why: the named outcome is the log line and the close)."""
    outcome = Outcome()
    slug, chance = room_of(h), random.Random(7)
    daphne = h.stack.daphne.pid  # type: ignore[union-attr]
    start, peak = rss(daphne), 0
    logged = h.stack.log_path.stat().st_size
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", h.stack.port))
    sock.setblocking(False)
    async with member(h, slug, sock=sock, max_queue=1), member(h, slug) as drawer:
        await drain(drawer, outcome, until="state")
        ends, k = time.monotonic() + 40, 0
        while time.monotonic() < ends and STALLED_LOG not in _log_since(h, logged):
            k += 1
            points = [chance.uniform(0, 512) for _ in range(64)]
            for message in ({"t": "down", "k": k, "c": f"#{chance.randrange(2**24):06x}", "w": 20, "p": points[:2]},
                            {"t": "move", "k": k, "p": points}, {"t": "up", "k": k}):  # fmt: skip
                await drawer.send(msgpack.packb(message))
            await asyncio.sleep(0.1)
            peak = max(peak, rss(daphne) - start)
    if STALLED_LOG in _log_since(h, logged):
        outcome.close = 4408
    if peak > 2 * RSS_SLACK:
        outcome.problems.append(f"daphne grew {peak / 2**20:.0f} MiB for a member that reads nothing")
    return outcome


def _log_since(h: Harness, offset: int) -> str:
    with h.stack.log_path.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


async def rooms_past_the_limit(h: Harness) -> Outcome:
    """The attacker owns the most open rooms one may; one more is refused (then they are all closed)."""
    owned = f"{ROOMS}.Room.objects.filter(owner__username='attacker', closed_at__isnull=True)"
    h.shell(f"[{ROOMS}.Room.objects.create(owner=User.objects.get(username='attacker'), app='local/echo') "
            f"for _ in range(max(0, 20 - {owned}.count()))] and None")  # fmt: skip
    outcome = await form_post("/rooms/", {"app": "local/echo"})(h)
    h.shell(f"{owned}.update(closed_at=__import__('django.utils.timezone', fromlist=['now']).now()) and None")
    return outcome


def form_post(path: str, data: dict[str, str], user: str = "attacker") -> Attack:
    """A form posted from the user's session, with its CSRF token, as the pages post it."""

    async def attack(h: Harness) -> Outcome:
        token = "adversarialcsrftoken0123456789ab"  # 32 characters: a cookie and a field that match pass
        headers = {"Cookie": f"{h.session_cookie(user)}; csrftoken={token}", "X-CSRFToken": token,
                   "Referer": h.stack.http, "Origin": h.stack.http}  # fmt: skip
        return await http("POST", path, headers=headers, data={**data, "csrfmiddlewaretoken": token})(h)

    return attack


async def closed_by_another(h: Harness) -> Outcome:
    return await form_post(f"/rooms/{room_of(h, 'victim')}/manage", {"action": "close"})(h)


def bomb_png(side: int = 20_000) -> str:
    """A PNG that says it is ``side`` pixels square (a header, no pixels): refused before decoding."""
    return "data:image/png;base64," + base64.b64encode(header_only_png(side)).decode()


DEEP = b"\x91" * 5000 + b"\xc0"
MOVE = {"t": "move", "k": 1, "p": [10.0, 10.0] * 128}
DOWN = {"t": "down", "k": 1, "c": "#000000", "w": 3, "p": [5, 5]}
CASES = [
    Case("room-flood-of-full-moves", sends([DOWN] + [MOVE] * 3000), RATE),
    Case("room-undo-storm-over-wide-strokes", heavy_history_then_undos(strokes=40, undos=600), RATE),
    Case("room-flood-of-params", sends([{"t": "params", "prompt": f"p{i}"} for i in range(2000)]), RATE),
    Case(
        "room-flood-of-open-strokes",
        sends([{"t": "down", "k": k, "c": "#00ff00", "w": 64, "p": [k % 500, 7.0]} for k in range(3000)]),
        RATE,
    ),
    Case(
        "room-message-of-300-kb",  # over the rooms cap, under the frame cap
        sends([b"\x00" * 300_000], raw=True),
        Expect(error="PAYLOAD_TOO_LARGE", reason="16384", admitted=MEMBER),
    ),
    Case(
        "room-msgpack-5000-deep",
        sends([DEEP], raw=True),
        Expect(error="VALIDATION_ERROR", reason="msgpack", admitted=MEMBER),
    ),
    Case("room-json-text-not-json", sends(["{not json"], raw=True), Expect(error="VALIDATION_ERROR", admitted=MEMBER)),
    Case(
        "room-stroke-far-off-the-canvas",
        sends([{**DOWN, "p": [1e300, 5]}]),
        Expect(error="VALIDATION_ERROR", reason="canvas", admitted=MEMBER),
    ),
    Case(
        "room-stroke-with-a-600-digit-coordinate",
        sends([json.dumps({**DOWN, "p": [int("9" * 600), 5]})], raw=True),
        Expect(error="VALIDATION_ERROR", admitted=MEMBER),
    ),
    Case(
        "room-message-number-of-600-digits",  # would not pack for the others: refused at the door
        sends([json.dumps({"t": "fill", "c": "#000000", "n": int("9" * 600)})], raw=True),
        Expect(error="VALIDATION_ERROR", reason="number", admitted=MEMBER),
    ),
    Case(
        "room-colour-with-a-newline",
        sends([{"t": "fill", "c": "#ffffff\n"}]),
        Expect(error="VALIDATION_ERROR", reason="colour", admitted=MEMBER),
    ),
    Case(
        "room-from-another-site",
        refused_member(origin="https://evil.example"),
        Expect(error="FORBIDDEN", reason="site", close=4403),
    ),
    Case("room-without-a-session", refused_member(user=None), Expect(error="UNAUTHORIZED", close=4401)),
    Case(
        "room-invited-only-not-invited",
        refused_member(own="victim", invited_only=True),
        Expect(error="FORBIDDEN", reason="invited", close=4403),
    ),
    Case("room-that-does-not-exist", refused_member(slug="x" * 16), Expect(error="FORBIDDEN", close=4404)),
    Case("room-past-the-open-rooms-limit", rooms_past_the_limit, Expect(status=429, detail="close one", json=False)),
    Case(
        "room-share-a-decompression-bomb",
        form_post("/rooms/", {"app": "local/echo", "picture": bomb_png()}),
        Expect(status=400, detail="picture", json=False),
    ),
    Case("room-closed-by-someone-not-its-owner", closed_by_another, Expect(status=403, detail="owner")),
    Case("room-member-that-never-reads", a_member_never_reads, Expect(close=4408, admitted=MEMBER)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_hostile_member_gets_a_named_answer_and_hurts_nobody(harness: Harness, case: Case) -> None:
    await harness.check(case)
