"""Fault tests: Redis and PostgreSQL going away under a live gateway (a TCP proxy in between is cut
and restored; the machine's own servers are not touched)."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import drawing, encode
from tests.faults.proxy import TcpProxy
from tests.gateway.stack import GatewayStack, start_stack
from tests.gateway.test_end_to_end import add_user
from tests.runner.wsclient import open_ws, pack, recv_result

JPEG = encode(drawing(64, 64))


def frame(request_id: object) -> bytes:
    return pack(prompt="x", image_bytes=JPEG, width=64, height=64, request_id=request_id)


async def round_trip(ws, request_id: object) -> None:
    await ws.send(frame(request_id))
    assert (await recv_result(ws, timeout=15))["request_id"] == request_id


@pytest.fixture
def redis_proxy() -> Iterator[TcpProxy]:
    proxy = TcpProxy(6379)
    yield proxy
    proxy.close()


async def test_redis_away_and_back(tmp_path: Path, redis_proxy: TcpProxy) -> None:
    stack = start_stack(tmp_path, [["--apps", "local/echo"]], {"REDIS_URL": f"redis://127.0.0.1:{redis_proxy.port}/8"})
    try:
        key = add_user(stack)
        headers = {"Authorization": f"Key {key}"}
        async with await open_ws(f"{stack.ws}/local/echo/realtime", additional_headers=headers) as ws:
            await round_trip(ws, "before")
            redis_proxy.cut()
            for i in range(4):  # the frame path never touches the channel layer
                await round_trip(ws, f"during-{i}")
                await asyncio.sleep(0.3)
            redis_proxy.restore()
            await asyncio.sleep(1.5)
            await round_trip(ws, "after")
            async with await open_ws(f"{stack.ws}/local/echo/realtime", additional_headers=headers) as fresh:
                await round_trip(fresh, "new connection")
            # Staff actions reach the old connection again: it rejoined its groups.
            pk = stack.query(
                "__import__('django.contrib.auth', fromlist=['x']).get_user_model().objects.get(username='dave').pk"
            )
            await asyncio.to_thread(_kick, stack, pk)
            closed = await _closed_within(ws, 15)
        assert closed == 4403
    finally:
        stack.close()


def _kick(stack: GatewayStack, user_id: int) -> None:
    stack.manage(
        "shell",
        "-c",
        f"from realtime_site.gateway.actions import close_user_connections; close_user_connections({user_id})",
    )


async def _closed_within(ws, seconds: float) -> int | None:
    try:
        async with asyncio.timeout(seconds):
            async for _ in ws:
                pass
    except TimeoutError:
        return None
    except ConnectionClosed:
        pass
    return ws.close_code


@pytest.fixture
def postgres() -> Iterator[tuple[TcpProxy, str]]:
    name = f"realtime_faults_{uuid.uuid4().hex[:8]}"
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"create database {name}"], check=True,
                   capture_output=True)  # fmt: skip
    proxy = TcpProxy(5432)
    yield proxy, name
    proxy.close()
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"drop database if exists {name} with (force)"],
                   capture_output=True)  # fmt: skip


async def test_postgres_away_keeps_usage_and_writes_it_afterwards(tmp_path: Path, postgres) -> None:
    proxy, name = postgres
    stack = start_stack(
        tmp_path,
        [["--apps", "local/echo"]],
        {"DATABASE_URL": f"postgres://postgres@127.0.0.1:{proxy.port}/{name}", "USAGE_FLUSH_INTERVAL": "1"},
    )
    try:
        key = add_user(stack)
        headers = {"Authorization": f"Key {key}"}
        sockets = [await open_ws(f"{stack.ws}/local/echo/realtime", additional_headers=headers) for _ in range(3)]
        for n, ws in enumerate(sockets):
            await round_trip(ws, f"before-{n}")
        proxy.cut()
        for n, ws in enumerate(sockets):  # relaying goes on without the database
            for i in range(3):
                await round_trip(ws, f"during-{n}-{i}")
            await ws.close()  # these records cannot be written now: they wait in the backlog
        await asyncio.sleep(2)
        proxy.restore()
        records = await asyncio.to_thread(_records_eventually, stack, 3)
        assert sorted((r["frames_in"], r["results_out"]) for r in records) == [(4, 4)] * 3
        assert all(r["ended_at"] is not None for r in records)
        assert "usage backlog full" not in stack.log_path.read_text()
    finally:
        stack.close()


def _records_eventually(stack: GatewayStack, count: int) -> list[dict]:
    import time

    code = "list(__import__('realtime_site.usage.models', fromlist=['x']).ConnectionRecord.objects.values())"
    for _ in range(60):
        records = stack.query(code)
        if len(records) == count and all(r["ended_at"] for r in records):
            return records
        time.sleep(0.5)
    return stack.query(code)


def _runner_loads(stack: GatewayStack) -> list[int]:
    import httpx

    return [httpx.get(f"http://127.0.0.1:{r.port}/healthz").json()["connections"] for r in stack.runners]


async def test_a_draining_runner_finishes_its_frame_and_the_gateway_moves_the_session(tmp_path: Path) -> None:
    apps = ["--apps", "test/slow=echo?delay_ms=800&workers=1"]
    stack = start_stack(tmp_path, [apps, apps])
    try:
        key = add_user(stack)
        headers = {"Authorization": f"Key {key}"}
        async with await open_ws(f"{stack.ws}/test/slow/realtime", additional_headers=headers) as ws:
            await ws.send(frame("warm"))
            assert (await recv_result(ws, timeout=15))["request_id"] == "warm"
            loads = await asyncio.to_thread(_runner_loads, stack)
            serving = stack.runners[loads.index(1)]
            await ws.send(frame("in hand"))
            await asyncio.sleep(0.3)  # the frame is in inference now
            serving.process.terminate()  # SIGTERM: drain
            assert (await recv_result(ws, timeout=15))["request_id"] == "in hand"  # finished, not lost
            error = await recv_result(ws, timeout=15)
            assert error["error"] == "RUNNER_UNAVAILABLE"
            await ws.send(frame("moved"))
            assert (await recv_result(ws, timeout=15))["request_id"] == "moved"
            async with await open_ws(f"{stack.ws}/test/slow/realtime", additional_headers=headers) as fresh:
                await round_trip(fresh, "new session")
        assert await asyncio.to_thread(serving.process.wait, 30) == 0
    finally:
        stack.close()
