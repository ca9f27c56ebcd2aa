"""End to end, real daphne and runner on a real PostgreSQL: a connection whose token and user are
deleted while it is open still gets its record, nobody else's recording stops, and daphne stops on
SIGTERM; with the database away at SIGTERM, daphne stops all the same and says what it lost."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import httpx

from tests.conftest import drawing, encode
from tests.faults.proxy import TcpProxy
from tests.gateway.stack import GatewayStack, start_stack
from tests.gateway.test_end_to_end import add_user
from tests.runner.wsclient import open_ws, pack, recv_result

JPEG = encode(drawing(64, 64))
RECORDS = "__import__('realtime_site.usage.models', fromlist=['x']).ConnectionRecord.objects"


async def round_trips(ws, count: int, tag: str) -> None:
    for n in range(count):
        await ws.send(pack(prompt="x", image_bytes=JPEG, width=64, height=64, request_id=f"{tag}-{n}"))
        assert (await recv_result(ws, timeout=30))["request_id"] == f"{tag}-{n}"


def records_of(stack: GatewayStack, user_id: int, ended: int) -> list[dict]:
    """The user's records once ``ended`` of them are closed (generous deadline)."""
    code = f"list({RECORDS}.filter(user_id={user_id}).values())"
    deadline = time.monotonic() + 60
    while True:
        rows = stack.query(code)
        if sum(1 for r in rows if r["ended_at"]) >= ended or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def user_pk(stack: GatewayStack, username: str) -> int:
    users = "__import__('django.contrib.auth', fromlist=['x']).get_user_model().objects"
    return stack.query(f"{users}.get(username={username!r}).pk")


def sigterm(stack: GatewayStack) -> int | None:
    """SIGTERM, then daphne's own exit status; None when it had to be killed."""
    assert stack.daphne is not None
    stack.daphne.terminate()
    try:
        return stack.daphne.wait(90)
    except subprocess.TimeoutExpired:
        stack.daphne.kill()
        stack.daphne.wait()
        return None


async def test_records_outlive_a_token_and_user_deleted_mid_connection(tmp_path: Path, database: str) -> None:
    stack = start_stack(
        tmp_path,
        [["--apps", "local/echo"]],
        # No flush while open: the first write of the record is its insert at close, after the deletes.
        {"DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{database}", "USAGE_FLUSH_INTERVAL": "3600"},
    )
    try:
        key = add_user(stack, "dora")
        token = httpx.post(
            f"{stack.http}/tokens/", json={"allowed_apps": ["echo"]}, headers={"Authorization": f"Key {key}"}
        ).json()
        dora = user_pk(stack, "dora")
        jti = stack.query("__import__('realtime_site.accounts.models', fromlist=['x']).IssuedToken.objects.get().jti")
        async with await open_ws(f"{stack.ws}/local/echo/realtime?fal_jwt_token={token}") as ws:
            await round_trips(ws, 3, "before")
            deletes = (
                "from django.contrib.auth import get_user_model; "
                "from realtime_site.accounts.models import IssuedToken; "
                f"IssuedToken.objects.filter(jti={jti!r}).delete(); "
                f"get_user_model().objects.filter(pk={dora}).delete()"
            )
            await asyncio.to_thread(stack.manage, "shell", "-c", deletes)
            assert await asyncio.to_thread(stack.query, f"{RECORDS}.count()") == 0  # not written yet
            # The shell's signals cannot reach this gateway (no shared channel layer): the connection goes on.
            await round_trips(ws, 2, "after")
        [record] = await asyncio.to_thread(records_of, stack, dora, 1)
        assert (record["user_id"], record["token_id"], record["auth_method"]) == (dora, jti, "jwt")
        assert (record["frames_in"], record["results_out"]) == (5, 5)
        assert record["ended_at"] is not None

        other_key = await asyncio.to_thread(add_user, stack, "olga")
        headers = {"Authorization": f"Key {other_key}"}
        async with await open_ws(f"{stack.ws}/local/echo/realtime", additional_headers=headers) as ws:
            await round_trips(ws, 4, "olga")
        olga = await asyncio.to_thread(user_pk, stack, "olga")
        [other] = await asyncio.to_thread(records_of, stack, olga, 1)
        assert (other["frames_in"], other["results_out"], other["username"]) == (4, 4, "olga")

        assert sigterm(stack) == 0
        log = stack.log_path.read_text()
        assert "set aside" not in log and "could not be written" not in log and "IntegrityError" not in log
    finally:
        stack.close()


async def test_daphne_stops_on_sigterm_while_the_database_is_away(tmp_path: Path, database: str) -> None:
    proxy = TcpProxy(5432)
    stack = start_stack(
        tmp_path,
        [["--apps", "local/echo"]],
        {
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:{proxy.port}/{database}",
            "USAGE_FLUSH_INTERVAL": "1",
            "USAGE_DRAIN_TIMEOUT": "3",
        },
    )
    try:
        key = add_user(stack)
        headers = {"Authorization": f"Key {key}"}
        closed = await open_ws(f"{stack.ws}/local/echo/realtime", additional_headers=headers)
        still_open = await open_ws(f"{stack.ws}/local/echo/realtime", additional_headers=headers)
        await round_trips(closed, 2, "closed")
        await round_trips(still_open, 2, "open")
        proxy.cut()
        await round_trips(closed, 1, "during")  # relaying goes on without the database
        await closed.close()  # its record waits in the backlog
        assert await asyncio.to_thread(sigterm, stack) == 0
        log = stack.log_path.read_text()
        assert "2 usage records could not be written" in log, log[-3000:]
        await still_open.close()
    finally:
        stack.close()
        proxy.close()
