"""Helpers for the tests of accounts on a real stack: users, staff actions, connections and their closes."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import jwt
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.conftest import drawing, encode
from tests.gateway.stack import GatewayStack, another_gateway, start_stack
from tests.runner.wsclient import open_ws, pack, recv, recv_result

JPEG = encode(drawing(64, 64))
STAFF, STAFF_PASSWORD = "boss", "pw-boss-1234567"


def create_staff(stack: GatewayStack) -> None:
    stack.manage(
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model; "
        f"get_user_model().objects.create_user({STAFF!r}, password={STAFF_PASSWORD!r}, "
        "is_staff=True, is_superuser=True)",
    )


def new_user(stack: GatewayStack, name: str, password: str = "pw-user-1234567") -> tuple[int, str]:
    """A user with one API key; returns the user's id and ``key_id:secret``."""
    code = (
        "import json; from django.contrib.auth import get_user_model; "
        "from realtime_site.accounts.keys import create_api_key; "
        f"u = get_user_model().objects.create_user({name!r}, password={password!r}); "
        "print(json.dumps([u.pk, create_api_key(u)[1]]))"
    )
    pk, key = json.loads(stack.manage("shell", "-c", code).strip().splitlines()[-1])
    return pk, key


def key_pk(stack: GatewayStack, key: str) -> int:
    models = "__import__('realtime_site.accounts.models', fromlist=['x'])"
    return stack.query(f"{models}.ApiKey.objects.get(key_id={key.split(':')[0]!r}).pk")  # type: ignore[return-value]


def shell(stack: GatewayStack, code: str) -> None:
    """Run Django code in ``manage.py shell``: a sync context with no event loop."""
    stack.manage(
        "shell", "-c", f"from django.utils import timezone; from realtime_site.accounts.models import *; {code}"
    )


def token_from(stack: GatewayStack, key: str) -> str:
    response = httpx.post(
        f"{stack.http}/tokens/", json={"allowed_apps": ["echo"]}, headers={"Authorization": f"Key {key}"}, timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()


def jti_of(token: str) -> str:
    return jwt.decode(token, options={"verify_signature": False})["jti"]


def csrf_of(page: httpx.Response) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert match, page.text[:500]
    return match[1]


@contextmanager
def staff_client(stack: GatewayStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.http, timeout=30) as http:
        page = http.get("/admin/login/")
        login = {"username": STAFF, "password": STAFF_PASSWORD, "csrfmiddlewaretoken": csrf_of(page), "next": "/admin/"}
        assert http.post("/admin/login/", data=login).status_code == 302
        yield http


def admin_action(stack: GatewayStack, changelist: str, action: str, pk: object) -> None:
    with staff_client(stack) as http:
        form = {"action": action, "_selected_action": [str(pk)], "csrfmiddlewaretoken": csrf_of(http.get(changelist))}
        response = http.post(changelist, data=form)
        assert response.status_code == 302, response.text[:500]


def admin_delete(stack: GatewayStack, path: str) -> None:
    """Confirm an admin delete page (``/admin/APP/MODEL/PK/delete/``)."""
    with staff_client(stack) as http:
        response = http.post(path, data={"post": "yes", "csrfmiddlewaretoken": csrf_of(http.get(path))})
        assert response.status_code == 302, response.text[:500]


async def round_trip(ws: ClientConnection, request_id: str) -> None:
    await ws.send(pack(prompt="x", image_bytes=JPEG, width=64, height=64, request_id=request_id))
    assert (await recv_result(ws))["request_id"] == request_id


async def connected(stack: GatewayStack, query: str = "", headers: dict | None = None) -> ClientConnection:
    """A connection to ``local/echo`` that got one result."""
    ws = await open_ws(f"{stack.ws}/local/echo/realtime{query}", additional_headers=headers or {})
    await round_trip(ws, "hello")
    return ws


def with_key(key: str) -> dict[str, str]:
    return {"Authorization": f"Key {key}"}


async def closed_with(ws: ClientConnection, error: str, close_code: int) -> str:
    """Wait for the x-fal-error that closes ``ws``; returns its reason."""
    message = await recv(ws, timeout=20)
    while message.get("type") != "x-fal-error":
        message = await recv(ws, timeout=20)
    with pytest.raises(ConnectionClosed):
        while True:
            await recv(ws, timeout=20)
    assert (message["error"], ws.close_code) == (error, close_code), message
    return message["reason"]


async def refused(stack: GatewayStack, query: str = "", headers: dict | None = None) -> str:
    """Connect and expect the refusal (UNAUTHORIZED, 4401); returns its reason."""
    ws = await open_ws(f"{stack.ws}/local/echo/realtime{query}", additional_headers=headers or {})
    return await closed_with(ws, "UNAUTHORIZED", 4401)


@contextmanager
def two_gateways(tmp: Path, redis_url: str, victim: str) -> Iterator[tuple[GatewayStack, GatewayStack]]:
    """Two daphne processes on one database, runner (``local/echo``) and Redis, with a staff user and
    ``victim``'s key (``a.victim_key``) for the session that must keep being served."""
    a = start_stack(tmp, [["--apps", "local/echo"]], {"REDIS_URL": redis_url})
    try:
        b = another_gateway(a)
    except Exception:
        a.close()
        raise
    try:
        create_staff(a)
        _, a.victim_key = new_user(a, victim)  # type: ignore[attr-defined]
        yield a, b
    finally:
        b.close()
        a.close()


async def victim_session(a: GatewayStack) -> AsyncIterator[ClientConnection]:
    """Another user's live session on ``a`` (a fixture's body): served before and after the test."""
    ws = await connected(a, headers=with_key(a.victim_key))
    yield ws
    await round_trip(ws, "still served")
    await ws.close()
