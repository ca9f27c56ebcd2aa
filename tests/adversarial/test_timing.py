"""Hostile behaviour over time: a client that never reads its results, connect storms, half-open
handshakes, clients that vanish mid-frame or while a result is on its way, ping floods, protocol
violations, and users over their limits. Its own stack, where a client that reads nothing is closed
after ``STALL_SECONDS``. The four assertions are described in ``harness``."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from websockets.exceptions import ConnectionClosed

from tests.adversarial.attacks import ECHO, Attack, connected, read_until_closed, refused, until_result
from tests.adversarial.harness import RSS_SLACK, Case, Expect, Harness, Outcome, live_harness, rss
from tests.adversarial.inputs import client_frame, good_frame, noisy_jpeg
from tests.runner.wsclient import decode

STALL_SECONDS = 3
FLOOD_SECONDS = 4
STORM = 30
STORM_LIMIT = 8  # REALTIME_MAX_CONNECTIONS of the stack


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    env = {"REALTIME_STALLED_CLIENT_SECONDS": str(STALL_SECONDS), "REALTIME_MAX_CONNECTIONS": str(STORM_LIMIT)}
    with live_harness(tmp_path_factory.mktemp("timing"), env) as live:
        for name, limits in USERS.items():
            live.add_user(name)
            if limits:
                live.set_limits(name, **limits)
        yield live


USERS = {
    "flooder": {"frames_per_minute": 1_000_000, "max_connections": 40},
    "storm": {},
    "metered": {"frames_per_minute": 5},
    "rationed": {"daily_frame_quota": 3},
    "single": {"max_connections": 1},
}


def never_reads() -> Attack:
    """Sends big frames as fast as it can and reads nothing. Daphne must hold a bounded number of
    results for it, then close it as stalled: such a client cannot read the reason, so the named
    outcome is its usage record (closed with 4408, a TIMEOUT error counted)."""

    async def attack(h: Harness) -> Outcome:
        outcome = Outcome()
        image = noisy_jpeg(384, 95)
        daphne = h.stack.daphne.pid  # type: ignore[union-attr]
        start, peak, sent = rss(daphne), 0, 0
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", h.stack.port))
        sock.setblocking(False)
        async with connected(h, user="flooder", sock=sock, max_queue=1) as ws:
            ends = time.monotonic() + FLOOD_SECONDS + STALL_SECONDS
            while time.monotonic() < ends:
                try:
                    await asyncio.wait_for(ws.send(good_frame(sent, image_bytes=image, width=384, height=384)), 5)
                except (ConnectionClosed, TimeoutError):
                    break
                sent += 1
                peak = max(peak, rss(daphne) - start)
            await read_until_closed(ws, outcome, timeout=30)
        record = await asyncio.to_thread(last_record, h, "flooder")
        if record["close_code"] != 4408 or not record["errors"].get("TIMEOUT"):
            outcome.problems.append(
                f"the stalled client was not closed as stalled: record close {record['close_code']}, "
                f"errors {record['errors']}, the client saw {outcome.close} after {sent} frames"
            )
        if peak > 2 * RSS_SLACK:
            outcome.problems.append(
                f"daphne grew {peak / 2**20:.0f} MiB holding results for a client that reads nothing"
            )
        return outcome

    return attack


def last_record(h: Harness, user: str, since: datetime | None = None) -> dict:
    """The user's latest closed usage record (waiting for it to be written); with ``since``, only a
    connection that started then or later (not the previous case's, while this one's is unwritten).
    The record is written once daphne has read the client's whole backlog up to its close, which
    takes many seconds on a loaded machine after a flood."""
    deadline = time.monotonic() + 45
    started = f", started_at__gte=__import__('datetime').datetime.fromisoformat({since.isoformat()!r})" if since else ""
    while True:
        rows = h.shell(
            f"list(ConnectionRecord.objects.filter(user_id={h.pks[user]}, ended_at__isnull=False{started})"
            ".order_by('-started_at').values('close_code', 'errors', 'frames_in')[:1])"
        )
        if rows or time.monotonic() > deadline:
            return rows[0] if rows else {"close_code": None, "errors": {}, "frames_in": 0}
        time.sleep(0.1)


def storm(count: int, path: str = ECHO, *, user: str | None = "storm", admitted: int = 0) -> Attack:
    """``count`` connections at once; each sends a frame. ``admitted`` of them must be answered (they
    hold their slot until every connection has its first answer), the others refused by name;
    afterwards the slots are free again: one more connection is answered."""

    async def attack(h: Harness) -> Outcome:
        outcome = Outcome()
        answered: list[int] = []
        refusals: list[tuple[dict, int | None]] = []
        failed: list[str] = []
        everyone = asyncio.Event()

        def replied() -> None:
            if len(answered) + len(refusals) + len(failed) == count:
                everyone.set()

        async def one(n: int) -> None:
            try:
                async with connected(h, path, user=user) as ws:
                    with contextlib.suppress(ConnectionClosed):  # a refusal may close it first
                        await ws.send(good_frame(n))
                    first = decode(await asyncio.wait_for(ws.recv(), 15))
                    if first.get("type") != "x-fal-error":
                        answered.append(n)
                        replied()
                        await asyncio.wait_for(everyone.wait(), 60)
                        return
                    with contextlib.suppress(ConnectionClosed, TimeoutError):
                        await asyncio.wait_for(ws.recv(), 15)
                    refusals.append((first, ws.close_code))
                    replied()
            except Exception as exc:
                failed.append(f"{exc!r}"[:200])
                replied()

        await asyncio.gather(*(one(n) for n in range(count)))
        outcome.results = len(answered)
        outcome.errors = [error for error, _ in refusals]
        codes = {code for _, code in refusals}
        outcome.close = codes.pop() if len(codes) == 1 else None
        if len(answered) != admitted:
            outcome.problems.append(f"{len(answered)} of {count} connections were answered, expected {admitted}")
        if failed:
            outcome.problems.append(f"{len(failed)} connections failed: {failed[:2]}")
        if len({error.get("error") for error, _ in refusals}) > 1:
            outcome.problems.append(f"refusals differ: {sorted({str(e.get('error')) for e, _ in refusals})}")
        if admitted:
            outcome.lived = await answered_after_the_storm(h, path, user, outcome)
        return outcome

    return attack


async def answered_after_the_storm(h: Harness, path: str, user: str | None, outcome: Outcome) -> bool:
    """One more connection is answered once the storm's connections have closed. Their slots are
    freed as the server finishes each close, a moment after the client's: a refusal for the
    connection limit in that moment is tried again (at most 5 s)."""
    for _ in range(50):
        try:
            async with connected(h, path, user=user) as ws:
                await ws.send(good_frame("after-storm"))
                return await until_result(ws, outcome, "after-storm")
        except ConnectionClosed as exc:
            if exc.rcvd is None or exc.rcvd.code != 4429:
                raise
        await asyncio.sleep(0.1)
    outcome.problems.append("the storm's slots were still taken 5 s after its connections closed")
    return False


def churn(count: int) -> Attack:
    """Connect and leave at once, ``count`` times in a row."""

    async def attack(h: Harness) -> Outcome:
        for _ in range(count):
            async with connected(h, user="storm"):
                pass
        return Outcome(frames=0)

    return attack


def half_open(port: int, count: int) -> list[socket.socket]:
    """``count`` upgrade requests whose headers never end."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"GET /local/echo/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
        sockets.append(sock)
    return sockets


def slowloris_holds_no_one_up(count: int = 100) -> Attack:
    """``count`` handshakes that never finish; meanwhile a new connection is admitted and answered."""

    async def attack(h: Harness) -> Outcome:
        sockets = await asyncio.to_thread(half_open, h.stack.port, count)
        try:
            outcome = Outcome(frames=1)
            async with connected(h) as ws:
                await ws.send(good_frame("beside-slowloris"))
                outcome.lived = await until_result(ws, outcome, "beside-slowloris")
                outcome.results += outcome.lived
        finally:
            for sock in sockets:
                sock.close()
        return outcome

    return attack


def slowloris_dropped(count: int = 20, within: float = 15.0) -> Attack:
    """Handshakes that never finish are dropped by the server within ``within`` seconds."""

    def wait_closed(sockets: list[socket.socket]) -> int:
        deadline = time.monotonic() + within
        open_ = list(sockets)
        while open_ and time.monotonic() < deadline:
            for sock in list(open_):
                sock.settimeout(max(0.01, min(0.2, deadline - time.monotonic())))
                try:
                    if sock.recv(1024) == b"":
                        open_.remove(sock)
                except TimeoutError:
                    pass
                except OSError:
                    open_.remove(sock)
        return len(open_)

    async def attack(h: Harness) -> Outcome:
        sockets = await asyncio.to_thread(half_open, h.stack.port, count)
        try:
            still = await asyncio.to_thread(wait_closed, sockets)
        finally:
            for sock in sockets:
                sock.close()
        outcome = Outcome()
        if still:
            outcome.problems.append(f"{still} of {count} half-open handshakes still held after {within:g} s")
        return outcome

    return attack


def vanishes(*messages: bytes, abort_with: bytes = b"", path: str = ECHO, close_code: int = 1006) -> Attack:
    """Sends ``messages``, writes ``abort_with`` raw, and drops the TCP connection: its record is
    written all the same, with the abnormal close."""

    async def attack(h: Harness) -> Outcome:
        outcome = Outcome()
        since = datetime.now(UTC)
        async with connected(h, path) as ws:
            for message in messages:
                await ws.send(message)
            if abort_with:
                ws.transport.write(abort_with)
            await asyncio.sleep(0.2)  # let what was written leave (how much arrived is not asserted)
            ws.transport.abort()
        await asyncio.to_thread(_closed_with, h, outcome, close_code, since)
        return outcome

    return attack


def _closed_with(h: Harness, outcome: Outcome, close_code: int, since: datetime | None = None) -> None:
    record = last_record(h, "attacker", since)
    if record["close_code"] != close_code:
        outcome.problems.append(f"the record's close code is {record['close_code']}, expected {close_code}")


def violates(raw: bytes) -> Attack:
    """Writes one frame that breaks the protocol: the server closes with 1002."""

    async def attack(h: Harness) -> Outcome:
        outcome = Outcome()
        async with connected(h) as ws:
            ws.transport.write(raw)
            await read_until_closed(ws, outcome)
        return outcome

    return attack


def floods(kind: str, count: int = 5000) -> Attack:
    """``count`` pings or unsolicited pongs, not waiting for answers; then a good frame."""

    async def attack(h: Harness) -> Outcome:
        outcome = Outcome(frames=1)
        async with connected(h) as ws:
            for n in range(count):
                payload = n.to_bytes(4, "big") + bytes(121)
                if kind == "ping":
                    ws.transport.write(client_frame(0x9, payload))
                else:
                    await ws.pong(payload)
            try:
                await ws.send(good_frame("after"))
                outcome.lived = await until_result(ws, outcome, "after")
            except ConnectionClosed:
                outcome.close, outcome.frames = ws.close_code, None
        return outcome

    return attack


def over_the_limit(user: str, frames: int, answered: int) -> Attack:
    """``frames`` good frames by a user whose limits allow ``answered`` of them."""

    async def attack(h: Harness) -> Outcome:
        outcome = Outcome(frames=frames)
        async with connected(h, user=user) as ws:
            for n in range(frames):
                await ws.send(good_frame(n))
                outcome.take(decode(await asyncio.wait_for(ws.recv(), 10)))
        if outcome.results != answered:
            outcome.problems.append(f"{outcome.results} of {frames} frames were answered, expected {answered}")
        return outcome

    return attack


def burst_on_slow_app(count: int = 30) -> Attack:
    """``count`` frames at once to a slow app with one slot: older ones are displaced, the newest answered."""

    async def attack(h: Harness) -> Outcome:
        outcome = Outcome(frames=count)
        async with connected(h, "/test/slow/realtime") as ws:
            for n in range(count):
                await ws.send(good_frame(n))
            outcome.lived = await until_result(ws, outcome, count - 1)
            outcome.results += outcome.lived
        return outcome

    return attack


def two_connections_for_one_slot() -> Attack:
    async def attack(h: Harness) -> Outcome:
        outcome = Outcome()
        async with connected(h, user="single") as first:
            await first.send(good_frame("first"))
            await until_result(first, outcome, "first")
            outcome = await refused(user="single")(h)
        return outcome

    return attack


CASES = [
    Case(
        "never-reading-client-is-closed-and-holds-little",
        never_reads(),
        Expect(admitted=1),
        user="flooder",
    ),
    Case(
        "connect-storm-over-the-per-user-limit",
        storm(STORM, admitted=STORM_LIMIT),
        Expect(error="RATE_LIMITED", reason="connections", close=4429, admitted=STORM_LIMIT + 1),
        user="storm",
    ),
    Case(
        "connect-storm-without-credentials",
        storm(100, user=None),
        Expect(error="UNAUTHORIZED", close=4401),
    ),
    Case(
        "connect-storm-to-an-unknown-app",
        storm(50, "/nobody/nothing/realtime"),
        Expect(error="APP_UNAVAILABLE", close=4404),
        user="storm",
    ),
    Case("connect-and-leave-40-times", churn(40), Expect(admitted=40), user="storm"),
    Case("slowloris-handshakes-hold-no-one-up", slowloris_holds_no_one_up(), Expect(result=True, admitted=1)),
    Case("slowloris-handshakes-are-dropped", slowloris_dropped(), Expect()),
    Case(
        "vanishes-mid-frame",
        vanishes(abort_with=client_frame(0x2, bytes(100_000))[:30_000]),
        Expect(admitted=1),
    ),
    Case("vanishes-right-after-a-frame", vanishes(good_frame(1)), Expect(admitted=1)),
    Case(
        "vanishes-while-the-slow-app-works",
        vanishes(good_frame(1), path="/test/slow/realtime"),
        Expect(admitted=1),
    ),
    Case("vanishes-after-ten-frames", vanishes(*(good_frame(n) for n in range(10))), Expect(admitted=1)),
    Case("ping-flood", floods("ping"), Expect(lives=True, admitted=1)),
    Case("unsolicited-pong-flood", floods("pong"), Expect(lives=True, admitted=1)),
    Case(
        "close-frame-with-an-invalid-code",
        violates(client_frame(0x8, (999).to_bytes(2, "big"))),
        # The client began the closing handshake itself: autobahn fails a connection that is already
        # closing by dropping it (1006) rather than answering 1002. Either way nothing else is touched.
        Expect(close=(1002, 1006), admitted=1),
    ),
    Case("frame-with-a-reserved-opcode", violates(client_frame(0x3, b"x")), Expect(close=1002, admitted=1)),
    Case("unmasked-client-frame", violates(client_frame(0x2, b"x", masked=False)), Expect(close=1002, admitted=1)),
    Case("ping-of-200-bytes", violates(client_frame(0x9, bytes(200))), Expect(close=1002, admitted=1)),
    Case("fragmented-ping", violates(client_frame(0x9, b"x", fin=False)), Expect(close=1002, admitted=1)),
    Case("continuation-without-a-start", violates(client_frame(0x0, b"x")), Expect(close=1002, admitted=1)),
    Case(
        "frames-over-the-per-minute-limit",
        over_the_limit("metered", 8, 5),
        Expect(error="RATE_LIMITED", reason="minute", admitted=1),
        user="metered",
    ),
    Case(
        "frames-over-the-daily-quota",
        over_the_limit("rationed", 5, 3),
        Expect(error="QUOTA_EXCEEDED", reason="quota", admitted=1),
        user="rationed",
    ),
    Case(
        "second-connection-over-a-limit-of-one",
        two_connections_for_one_slot(),
        Expect(error="RATE_LIMITED", reason="connections", close=4429, admitted=1),
        user="single",
    ),
    Case("burst-on-a-slow-app-answers-the-newest", burst_on_slow_app(), Expect(result=True, admitted=1)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_hostile_behaviour_harms_no_one(harness: Harness, case: Case) -> None:
    await harness.check(case)
