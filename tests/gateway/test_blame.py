"""Blame the right party: a client's bad path, frame or departure is that client's problem alone.

Real daphne in front of the real runner (``local/echo``) and a faulty runner-protocol peer
(``tests/gateway/faulty_runner.py``); a victim session of another user stays open throughout and
must keep getting results, and new sessions must keep opening.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator

import httpx
import psutil
import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import drawing, encode
from tests.gateway.faulty_runner import faulty_runner
from tests.gateway.stack import GatewayStack, start_stack
from tests.runner.wsclient import open_ws, pack, recv, recv_result

JPEG = encode(drawing(64, 64))
GOOD = {"prompt": "x", "image_bytes": JPEG, "width": 64, "height": 64}
BIG = encode(drawing(512, 512), quality=100)  # ~100 KB, echoed back as it is
STALL_SECONDS = 3


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    with faulty_runner() as faulty:
        tmp = tmp_path_factory.mktemp("blame")
        env = {"REALTIME_STALLED_CLIENT_SECONDS": str(STALL_SECONDS), "REALTIME_METRICS_TOKEN": "metrics-token"}
        stack = start_stack(tmp, [["--apps", "local/echo"]], env)
        stack.stop_gateway()
        stack.env["RUNNER_URLS"] = f"{stack.runners[0].ws_base},{faulty}"
        stack.start_gateway()
        make = "; ".join(
            f"get_user_model().objects.create_user({name!r}, password='pw-{name}-12345')" for name in ("eve", "vic")
        )
        stack.manage("shell", "-c", f"from django.contrib.auth import get_user_model; {make}")
        stack.keys = {name: stack.manage("create_api_key", name).strip() for name in ("eve", "vic")}  # type: ignore[attr-defined]
        yield stack
        stack.close()


def headers(stack: GatewayStack, user: str) -> dict[str, str]:
    return {"Authorization": f"Key {stack.keys[user]}"}  # type: ignore[attr-defined]


class Victim:
    """Another user's session, sending every 50 ms; counts results, and anything else it gets."""

    def __init__(self) -> None:
        self.results = 0
        self.problems: list[str] = []

    async def run(self, stack: GatewayStack) -> None:
        async with await open_ws(f"{stack.ws}/local/echo/realtime", additional_headers=headers(stack, "vic")) as ws:
            while True:
                await ws.send(pack(**GOOD))
                message = await recv(ws)
                if "images" in message:
                    self.results += 1
                else:
                    self.problems.append(str(message))
                await asyncio.sleep(0.05)

    async def still_served(self, more: int = 3, timeout: float = 20) -> None:
        start = self.results
        deadline = asyncio.get_running_loop().time() + timeout
        while self.results < start + more:
            assert asyncio.get_running_loop().time() < deadline, f"victim starved: {self.problems}"
            await asyncio.sleep(0.05)
        assert not self.problems


@pytest.fixture
async def victim(stack: GatewayStack) -> AsyncIterator[Victim]:
    victim = Victim()
    task = asyncio.create_task(victim.run(stack))
    await victim.still_served()
    yield victim
    assert not task.done(), f"the victim's session ended: {task.exception() if task.done() else ''}"
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def new_session_works(stack: GatewayStack) -> None:
    async with await open_ws(f"{stack.ws}/local/echo/realtime", additional_headers=headers(stack, "vic")) as ws:
        await ws.send(pack(**GOOD, request_id="fresh"))
        assert (await recv_result(ws))["request_id"] == "fresh"


BAD_PATHS = [
    ("/local/echo/real%20time", "is not a path of the app"),
    ("/local/echo/real%23time", "is not a path of the app"),
    ("/local/echo/real%00time", "is not a path of the app"),
    ("/local/echo/real%FFtime", "is not a path of the app"),
    ("/local/echo/..%2F..%2Fhealthz", "is not a path of the app"),
    ("/local/echo/stream", "has no path 'stream'"),
    ("/local/nothing/realtime", "no app 'local/nothing'"),
    ("/" + "o" * 100 + "/" + "a" * 100 + "/realtime", "is not an app name"),
    ("/local/echo/realtime%3Fmax_buffering%3D60", "is not a path of the app"),
]


@pytest.mark.parametrize(("path", "reason"), BAD_PATHS, ids=[p[0][:40] for p in BAD_PATHS])
async def test_blame_bad_path_is_refused_without_touching_the_runner(
    stack: GatewayStack, victim: Victim, path: str, reason: str
) -> None:
    for _ in range(3):  # repeated, as an attacker would
        async with await open_ws(stack.ws + path, additional_headers=headers(stack, "eve")) as ws:
            error = await recv(ws)
            with pytest.raises(ConnectionClosed):
                await recv(ws)
        assert (error["error"], ws.close_code) == ("APP_UNAVAILABLE", 4404)
        assert reason in error["reason"]
    await new_session_works(stack)
    await victim.still_served()
    assert "lost" not in stack.log_path.read_text()


async def test_blame_unknown_apps_leave_no_usage_rows_or_metric_labels(stack: GatewayStack) -> None:
    async with await open_ws(f"{stack.ws}/local/made-up-app/realtime", additional_headers=headers(stack, "eve")) as ws:
        assert (await recv(ws))["error"] == "APP_UNAVAILABLE"
    rows = stack.query("list(__import__('realtime_site.usage.models').usage.models.ConnectionRecord.objects"
                       ".filter(app__contains='made-up').values_list('app', flat=True))")  # fmt: skip
    assert rows == []
    metrics = httpx.get(f"{stack.http}/metrics", headers={"Authorization": "Bearer metrics-token"}, timeout=10)
    assert metrics.status_code == 200 and 'app="local/echo"' in metrics.text and "made-up" not in metrics.text


async def test_blame_a_runner_session_crash_is_not_an_outage(stack: GatewayStack, victim: Victim) -> None:
    for _ in range(3):
        async with await open_ws(f"{stack.ws}/test/crash/realtime", additional_headers=headers(stack, "eve")) as ws:
            await ws.send(pack(**GOOD))
            error = await recv(ws)
            assert error["error"] == "INTERNAL_ERROR" and "1011" in error["reason"]
            await ws.send(pack(**GOOD))  # the next input opens a new session on the same runner
            assert (await recv(ws))["error"] == "INTERNAL_ERROR"
    await new_session_works(stack)
    await victim.still_served()
    assert "lost" not in stack.log_path.read_text()


async def test_blame_a_client_leaving_mid_relay_leaves_the_runner_up(stack: GatewayStack, victim: Victim) -> None:
    """fal's disconnect race, made certain: the runner streams text messages and the client resets its
    TCP connection while they are being relayed."""
    for _ in range(5):
        ws = await open_ws(f"{stack.ws}/test/chatter/realtime", additional_headers=headers(stack, "eve"))
        await ws.send(pack(**GOOD))
        await recv(ws)  # the relay is under way
        sock = ws.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
        ws.transport.abort()
    async with await open_ws(f"{stack.ws}/test/chatter/realtime", additional_headers=headers(stack, "eve")) as ws:
        await ws.send(pack(**GOOD))
        assert (await recv(ws))["reason"] == "chatter"  # that runner is still chosen: never marked down
    await new_session_works(stack)
    await victim.still_served()
    log = stack.log_path.read_text()
    assert "lost" not in log and "relay from" not in log


async def test_blame_invalid_utf8_text_is_closed_with_1007(stack: GatewayStack, victim: Victim) -> None:
    async with await open_ws(f"{stack.ws}/local/echo/realtime", additional_headers=headers(stack, "eve")) as ws:
        # A text frame (opcode 1) holding bytes that are not UTF-8, written past the client's own checks.
        ws.transport.write(b"\x81\x84" + b"\x00\x00\x00\x00" + b"\xff\xfe\xfd\xfc")
        with pytest.raises(ConnectionClosed):
            await recv(ws)
    assert ws.close_code == 1007
    await victim.still_served()


def _small_buffer_socket(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return sock


async def test_blame_a_client_that_never_reads_costs_bounded_memory(stack: GatewayStack, victim: Victim) -> None:
    daphne = psutil.Process(stack.daphne.pid)  # type: ignore[union-attr]
    baseline = daphne.memory_info().rss
    ws = await open_ws(
        f"{stack.ws}/local/echo/realtime",
        additional_headers=headers(stack, "eve"),
        sock=_small_buffer_socket(stack.port),
        max_queue=1,
    )
    frame = pack(prompt="x", image_bytes=BIG, width=512, height=512)
    sent = 0
    with contextlib.suppress(ConnectionClosed, TimeoutError):
        for _ in range(1000):  # ~100 MB of results that are never read
            await asyncio.wait_for(ws.send(frame), 5)
            sent += 1
    peak = daphne.memory_info().rss
    assert sent >= 50
    assert peak - baseline < 25 * 2**20, f"daphne grew by {(peak - baseline) / 2**20:.0f} MB"
    await victim.still_served()
    # Stalled past the bound: closed by the gateway, which then holds nothing for it.
    deadline = asyncio.get_running_loop().time() + STALL_SECONDS + 30
    while not (ended := stalled_records(stack)):
        assert asyncio.get_running_loop().time() < deadline, "the stalled client was never closed"
        await asyncio.sleep(0.5)
    ws.transport.abort()
    assert 0 < ended[-1] <= sent  # the frames read before the stall are in its record
    await victim.still_served()


def stalled_records(stack: GatewayStack) -> list[int]:
    """frames_in of eve's closed connections that were closed for not reading (TIMEOUT)."""
    return stack.query(  # type: ignore[return-value]
        "list(__import__('realtime_site.usage.models').usage.models.ConnectionRecord.objects.filter("
        "user_id=__import__('django.contrib.auth').contrib.auth.get_user_model().objects.get(username='eve').pk,"
        " ended_at__isnull=False, errors__has_key='TIMEOUT').values_list('frames_in', flat=True))"
    )
