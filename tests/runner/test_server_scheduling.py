"""Latest-input-wins, fairness, isolation, idle timeout and SIGTERM, over real sockets.

The ``test/slow`` app is echo with a 150 ms delay and one worker: a deliberately slow engine.
Assertions are about order and counts, never about elapsed time.
"""

from __future__ import annotations

import asyncio
import io

import httpx
import numpy as np
import pytest
from PIL import Image
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import RunnerProcess, drawing, encode
from tests.runner.wsclient import open_ws, pack, recv, recv_result

JPEG = encode(drawing(64, 64))


def frame(request_id: int | str, image: bytes = JPEG) -> bytes:
    return pack(prompt="x", image_bytes=image, width=64, height=64, request_id=request_id)


async def collect(ws, count_until: object) -> list[object]:
    """Request ids of results until the one with ``count_until`` arrives."""
    seen = []
    while True:
        result = await recv_result(ws)
        seen.append(result["request_id"])
        if result["request_id"] == count_until:
            return seen


async def test_latest_input_wins_with_one_buffer_place(shared_runner: RunnerProcess) -> None:
    async with await open_ws(shared_runner.url("test/slow")) as ws:
        for request_id in range(8):
            await ws.send(frame(request_id))
        answered = await collect(ws, 7)
    assert answered == sorted(answered) and answered[-1] == 7
    assert len(answered) <= 3  # the rest were displaced by newer inputs while the engine worked


async def test_max_buffering_keeps_the_newest_inputs_in_order(shared_runner: RunnerProcess) -> None:
    async with await open_ws(shared_runner.url("test/slow", "max_buffering=3")) as ws:
        for request_id in range(10):
            await ws.send(frame(request_id))
        answered = await collect(ws, 9)
    assert answered == sorted(answered) and answered[-3:] == [7, 8, 9]
    assert len(answered) < 10


async def test_a_flooding_connection_does_not_delay_a_quiet_one(shared_runner: RunnerProcess) -> None:
    events: list[str] = []
    first_flood_result = asyncio.Event()
    async with (
        await open_ws(shared_runner.url("test/slow", "max_buffering=60")) as flood,
        await open_ws(shared_runner.url("test/slow")) as quiet,
    ):

        async def read_flood() -> None:
            while True:
                result = await recv_result(flood)
                events.append(f"flood-{result['request_id']}")
                first_flood_result.set()
                if result["request_id"] == 19:
                    return

        reader = asyncio.create_task(read_flood())
        for request_id in range(20):
            await flood.send(frame(request_id))
        await asyncio.wait_for(first_flood_result.wait(), 30)  # the flooder's backlog is queued by now
        events.append("quiet-sent")
        await quiet.send(frame("q"))
        assert (await recv_result(quiet))["request_id"] == "q"
        events.append("quiet-answered")
        await asyncio.wait_for(reader, 60)
    between = events[events.index("quiet-sent") : events.index("quiet-answered")]
    assert len([e for e in between if e.startswith("flood")]) <= 2  # at most the one in hand and one more
    assert [e for e in events if e.startswith("flood")] == [f"flood-{i}" for i in range(20)]


async def test_connections_never_see_each_others_inputs_or_results(shared_runner: RunnerProcess) -> None:
    colours = {"red": (255, 0, 0), "blue": (0, 0, 255)}

    async def client(name: str) -> list[tuple[str, tuple[int, int, int]]]:
        image = encode(Image.new("RGB", (96, 96), colours[name]), "PNG")
        seen = []
        async with await open_ws(shared_runner.url("local/echo", "max_buffering=60")) as ws:
            for i in range(15):
                await ws.send(pack(prompt="x", image_bytes=image, width=64, height=64, request_id=f"{name}-{i}"))
            while len(seen) < 15:
                result = await recv_result(ws)
                pixel = Image.open(io.BytesIO(result["images"][0]["content"])).convert("RGB").getpixel((32, 32))
                seen.append((result["request_id"], pixel))
        return seen

    red, blue = await asyncio.gather(client("red"), client("blue"))
    for name, seen in (("red", red), ("blue", blue)):
        assert [rid for rid, _ in seen] == [f"{name}-{i}" for i in range(15)]
        for _, pixel in seen:
            assert np.abs(np.array(pixel) - colours[name]).max() < 40


async def test_idle_connection_gets_timeout_then_a_normal_close(runner_factory) -> None:
    runner = runner_factory("--apps", "local/echo", "--idle-timeout", "0.5")
    async with await open_ws(runner.url("local/echo")) as ws:
        error = await recv(ws, timeout=30)
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert error["error"] == "TIMEOUT" and ws.close_code == 1000


async def test_sigterm_finishes_the_input_in_hand_then_closes_with_1001(runner_factory) -> None:
    runner = runner_factory("--apps", "test/slow=echo?delay_ms=1500")
    async with await open_ws(runner.url("test/slow", "timings=1")) as ws:
        await ws.send(frame("in-hand"))
        await asyncio.sleep(0.5)  # let the runner take it into inference
        runner.process.terminate()
        result = await recv_result(ws)
        assert result["request_id"] == "in-hand"
        with pytest.raises(ConnectionClosed):
            while True:
                await recv(ws)
    assert ws.close_code == 1001
    assert await asyncio.to_thread(runner.process.wait, 30) == 0


async def test_a_second_signal_exits_at_once(runner_factory) -> None:
    runner = runner_factory("--apps", "test/slow=echo?delay_ms=60000")
    async with await open_ws(runner.url("test/slow")) as ws:
        await ws.send(frame("never-finished"))
        await asyncio.sleep(0.5)  # in inference for a minute: the first signal waits for it
        runner.process.terminate()
        await asyncio.sleep(0.5)
        assert runner.process.poll() is None  # still draining
        runner.process.terminate()
        assert await asyncio.to_thread(runner.process.wait, 10) == 1
    assert "second signal: exiting now" in runner.log()


async def test_healthz_says_draining_while_the_runner_drains(runner_factory) -> None:
    runner = runner_factory("--apps", "test/slow=echo?delay_ms=3000")
    health = runner.ws_base.replace("ws://", "http://") + "/healthz"
    async with await open_ws(runner.url("test/slow")) as ws:
        await ws.send(frame("in-hand"))
        await asyncio.sleep(0.5)  # in inference: the drain waits for it
        runner.process.terminate()
        await asyncio.sleep(0.5)
        answer = await asyncio.to_thread(httpx.get, health, timeout=5)
        assert (answer.status_code, answer.json()["status"]) == (503, "draining")
        with pytest.raises(InvalidStatus) as refused:
            await open_ws(runner.url("test/slow"))
        assert refused.value.response.status_code == 503
        assert (await recv_result(ws))["request_id"] == "in-hand"
    assert await asyncio.to_thread(runner.process.wait, 30) == 0
