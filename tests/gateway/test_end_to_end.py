"""The gateway for real: daphne and runner processes, the published fal client, a browser-style login,
a runner killed mid-session, and usage written when daphne stops."""

from __future__ import annotations

import asyncio
import io
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import fal_client
import fal_client.client
import httpx
import pytest
from fal_client.client import RealtimeError
from PIL import Image
from websockets.exceptions import ConnectionClosed

from tests.conftest import drawing, encode
from tests.gateway.stack import GatewayStack, start_stack
from tests.runner.wsclient import open_ws, pack, recv, recv_result

PASSWORD = "pw-dave-12345"
DRAWING = encode(drawing(256, 256))


def add_user(stack: GatewayStack, username: str = "dave") -> str:
    make = f"get_user_model().objects.create_user({username!r}, password={PASSWORD!r})"
    stack.manage("shell", "-c", f"from django.contrib.auth import get_user_model; {make}")
    return stack.manage("create_api_key", username).strip()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    stack = start_stack(tmp_path_factory.mktemp("gateway"), [["--apps", "local/stylize,local/echo"]])
    stack.key = add_user(stack)  # type: ignore[attr-defined]
    yield stack
    stack.close()


@pytest.fixture
def fal_at(stack: GatewayStack, monkeypatch: pytest.MonkeyPatch) -> GatewayStack:
    """The published fal client, pointed at our gateway: only where it connects changes."""
    monkeypatch.setattr(fal_client.client, "REALTIME_URL_FORMAT", stack.ws + "/")
    monkeypatch.setattr(fal_client.client, "REST_URL", stack.http)
    return stack


@pytest.fixture
def sync_client() -> Iterator:
    clients: list[fal_client.SyncClient] = []

    def make(key: str) -> fal_client.SyncClient:
        clients.append(fal_client.SyncClient(key=key))
        return clients[-1]

    yield make
    for client in clients:  # fal's client keeps its HTTP connection pool open; close it
        if "_client" in client.__dict__:
            client._client.close()


@pytest.mark.parametrize("use_jwt", [True, False], ids=["jwt-from-tokens-endpoint", "api-key-header"])
def test_fal_client_through_the_gateway(fal_at: GatewayStack, sync_client, use_jwt: bool) -> None:
    client = sync_client(fal_at.key)  # type: ignore[attr-defined]
    with client.realtime("local/stylize", use_jwt=use_jwt) as connection:
        connection.send({"prompt": "fire", "image_bytes": DRAWING, "image_size": {"width": 256, "height": 192}})
        result = connection.recv()
        connection.send({"prompt": "fire"})
        with pytest.raises(RealtimeError) as caught:
            connection.recv()
    assert Image.open(io.BytesIO(result["images"][0]["content"])).size == (256, 192)
    assert caught.value.error == "VALIDATION_ERROR" and "image" in caught.value.reason


def test_fal_client_with_a_wrong_key_is_refused(fal_at: GatewayStack, sync_client) -> None:
    client = sync_client("0123456789abcdef:wrong")
    with client.realtime("local/echo", use_jwt=False) as connection, pytest.raises(RealtimeError) as caught:
        connection.recv()
    assert caught.value.error == "UNAUTHORIZED"
    refused = pytest.raises(fal_client.client.FalClientHTTPError, match="unknown API key")
    with refused, client.realtime("local/echo", use_jwt=True):
        pass


async def test_browser_style_login_token_and_a_stylized_image(stack: GatewayStack) -> None:
    async with httpx.AsyncClient(base_url=stack.http) as http:
        assert (await http.get("/api/fal/token", params={"app": "local/stylize"})).status_code == 401
        page = await http.get("/accounts/login/")
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[1]
        login = await http.post(
            "/accounts/login/",
            data={"username": "dave", "password": PASSWORD, "csrfmiddlewaretoken": csrf, "next": "/"},
            headers={"Referer": f"{stack.http}/accounts/login/"},
        )
        assert login.status_code == 302 and login.headers["location"] == "/"
        home = await http.get("/")
        assert home.status_code == 200 and "local/stylize" in home.text
        token = (await http.get("/api/fal/token", params={"app": "local/stylize"})).json()["token"]
    async with await open_ws(f"{stack.ws}/local/stylize/realtime?fal_jwt_token={token}") as ws:
        await ws.send(pack(prompt="starry", image_bytes=DRAWING, width=256, height=256, seed=4, request_id="b"))
        result = await recv_result(ws)
    image = Image.open(io.BytesIO(result["images"][0]["content"]))
    assert image.size == (256, 256) and result["request_id"] == "b"
    for log in [stack.log_path.read_text(), *(r.log() for r in stack.runners)]:
        assert token not in log and token.split(".")[2] not in log  # tokens never reach a log


async def test_a_runner_killed_mid_session(tmp_path: Path) -> None:
    # no sessions opened ahead: the runner serving the client is the one with a connection
    stack = start_stack(
        tmp_path, [["--apps", "local/echo"], ["--apps", "local/echo"]], {"REALTIME_WARM_UPSTREAMS": "0"}
    )
    try:
        key = add_user(stack)
        async with await open_ws(
            f"{stack.ws}/local/echo/realtime", additional_headers={"Authorization": f"Key {key}"}
        ) as ws:
            await ws.send(pack(prompt="x", image_bytes=DRAWING, width=256, height=256, request_id=1))
            assert (await recv_result(ws))["request_id"] == 1
            serving = [r for r in stack.runners if _connections(r.port) == 1]
            assert len(serving) == 1
            serving[0].process.send_signal(signal.SIGKILL)
            error = await recv(ws, timeout=5)
            assert error["error"] == "RUNNER_UNAVAILABLE"
            await ws.send(pack(prompt="x", image_bytes=DRAWING, width=256, height=256, request_id=2))
            assert (await recv_result(ws))["request_id"] == 2  # on the other runner, same client socket
        other = next(r for r in stack.runners if r is not serving[0])
        await asyncio.sleep(0)
        assert other.process.poll() is None
    finally:
        stack.close()


def _connections(port: int) -> int:
    return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()["connections"]


async def test_usage_is_written_and_clients_get_1001_when_daphne_stops(tmp_path: Path) -> None:
    stack = start_stack(tmp_path, [["--apps", "local/echo"]], {"USAGE_FLUSH_INTERVAL": "3600"})
    try:
        key = add_user(stack)
        ws = await open_ws(f"{stack.ws}/local/echo/realtime", additional_headers={"Authorization": f"Key {key}"})
        for rid in range(5):
            await ws.send(pack(prompt="x", image_bytes=DRAWING, width=256, height=256, request_id=rid))
            assert (await recv_result(ws))["request_id"] == rid
        stopping = asyncio.create_task(asyncio.to_thread(stack.stop_gateway))
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        assert (ws.close_code, ws.close_reason) == (1001, "server shutting down")
        assert await stopping == 0
        records = stack.query(
            "list(__import__('realtime_site.usage.models', fromlist=['x']).ConnectionRecord.objects"
            ".values('frames_in', 'results_out', 'close_code', 'ended_at'))"
        )
        assert len(records) == 1
        record = records[0]
        assert (record["frames_in"], record["results_out"]) == (5, 5) and record["ended_at"] is not None
    finally:
        stack.close()


async def test_no_credential_reaches_a_log_line_on_http_or_websocket_paths(stack: GatewayStack) -> None:
    async with httpx.AsyncClient(base_url=stack.http) as http:
        token = (
            await http.post("/tokens/", json={"allowed_apps": ["echo"]}, headers={"Authorization": f"Key {stack.key}"})
        ).json()
        for path in (f"/accounts/login/?fal_jwt_token={token}", f"/api/apps?fal_jwt_token={token}&key={stack.key}"):
            await http.get(path)
        await http.post(f"/tokens/?fal_jwt_token={token}", json={}, headers={"Authorization": f"Key {stack.key}"})
    async with await open_ws(f"{stack.ws}/local/echo/realtime?fal_jwt_token={token}") as ws:
        await ws.send(pack(prompt="x", image_bytes=DRAWING, width=256, height=256))
        await recv_result(ws)
    await asyncio.sleep(0.5)  # the access log is written as each request completes
    secret = stack.key.split(":")[1]
    for log in [stack.log_path.read_text(), *(r.log() for r in stack.runners)]:
        assert token not in log and token.split(".")[2] not in log and secret not in log
    assert '"GET /accounts/login/" 200' in stack.log_path.read_text()  # logged, without its query string
