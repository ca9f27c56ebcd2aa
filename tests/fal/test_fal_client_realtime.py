"""fal's own realtime tests of its Python client, run against our server.

Source: the ten realtime tests of ``projects/fal_client/tests/unit/test_client.py`` in fal-ai/fal at
commit c6f0afaaceec981d2461474a81467552adb0b084 (2026-08-21), run with the pinned ``fal-client``
1.0.3. Their assertions are fal's, unchanged. What changed, and only that:

- Endpoints: ``REALTIME_URL_FORMAT`` and ``REST_URL`` point at our gateway behind a local TLS
  terminator (nginx from ``deploy/nginx.conf``, a self-signed certificate trusted through
  ``SSL_CERT_FILE``), so the ``wss://`` the tests assert is real. fal's tests replace the socket and
  the token request with fakes; here ``fake_connect`` wraps the client's real ``_connect_*_ws`` (it
  still checks the URL and headers, then yields the real connection) and the token request mock wraps
  the real request to our ``/tokens/``.
- Credentials: ``test-key`` is a real API key of ours; ``jwt-token`` is the token our server issued.
- App ids: unchanged (``1234-test``). The apps behind the gateway are fal's test apps
  (``tests/fal/apps.py``): they send what fal's fakes return, over a real socket, because these tests
  read before they send and our runner's apps answer inputs only. ``test_realtime_connection_*``
  build a ``RealtimeConnection`` on a socket: here a real one to ``1234/decodes`` and ``1234/refuses``.
"""

from __future__ import annotations

import json  # noqa: F401  (fal's module imports, kept)
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Dict  # noqa: UP035  (fal's code, kept as written)
from unittest.mock import AsyncMock, Mock  # noqa: F401

import fal_client.client
import msgpack  # noqa: F401
import pytest
from fal_client.client import USER_AGENT, AsyncClient, RealtimeConnection, RealtimeError, SyncClient

from tests.fal.apps import fal_test_apps
from tests.gateway.stack import GatewayStack, start_stack
from tests.proxy.nginx import NGINX, Nginx, start_nginx

pytestmark = pytest.mark.skipif(not NGINX.exists(), reason="Debian's nginx is not installed: run `make nginx`")

PROXY_ENV = {"DJANGO_SECURE_PROXY_SSL_HEADER": "1", "REALTIME_PROXY_HEADERS": "1", "REALTIME_CONNECTS_PER_SECOND": "0"}
REAL_CONNECT_SYNC = fal_client.client._connect_sync_ws
REAL_CONNECT_ASYNC = fal_client.client._connect_async_ws
REAL_TOKEN_REQUEST_SYNC = fal_client.client._maybe_retry_request
REAL_TOKEN_REQUEST_ASYNC = fal_client.client._async_maybe_retry_request


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayStack, Nginx, str]]:
    tmp = tmp_path_factory.mktemp("fal-client")
    with fal_test_apps() as apps_url:
        stack = start_stack(tmp / "gateway", [], PROXY_ENV | {"RUNNER_URLS": apps_url})
        try:
            make = "get_user_model().objects.create_user('fal', password='pw-fal-1234567')"
            stack.manage("shell", "-c", f"from django.contrib.auth import get_user_model; {make}")
            key = stack.manage("create_api_key", "fal").strip()
            nginx = start_nginx(tmp / "nginx", stack.port, tmp / "gateway" / "static")
        except Exception:
            stack.close()
            raise
        yield stack, nginx, key
        nginx.stop()
        stack.close()


@pytest.fixture(autouse=True)
def our_server(server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one change to fal's setup: where the client connects, over TLS we trust."""
    _, nginx, _ = server
    monkeypatch.setattr(fal_client.client, "REALTIME_URL_FORMAT", nginx.wss + "/")
    monkeypatch.setattr(fal_client.client, "REST_URL", nginx.https)
    monkeypatch.setenv("SSL_CERT_FILE", str(nginx.directory / "cert.pem"))


@pytest.fixture(autouse=True)
def clients_closed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """fal's clients keep an HTTP connection pool they never close (fal's own tests never open one, their
    requests are fakes); the sync ones made in a test are closed after it."""
    made = made_in(monkeypatch, SyncClient)
    yield
    for client in made:
        if "_client" in client.__dict__:
            client.__dict__["_client"].close()


@pytest.fixture
async def async_clients_closed(monkeypatch: pytest.MonkeyPatch):
    """The same for the async clients, in the test's own event loop."""
    made = made_in(monkeypatch, AsyncClient)
    yield
    for client in made:
        if "_client" in client.__dict__:
            await (await client.__dict__["_client"]).aclose()  # asyncstdlib keeps an awaitable


def made_in(monkeypatch: pytest.MonkeyPatch, cls: type) -> list:
    """Every instance of ``cls`` made from now on, in a list that fills as they are made."""
    made: list = []
    original = cls.__init__

    def init(self, *args, **kwargs) -> None:
        original(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(cls, "__init__", init)
    return made


@pytest.fixture
def key(server) -> str:
    return server[2]


class Issued:
    """The token our server issued through the (wrapped, real) token request."""

    token = ""


def real_token_request_sync(*args, **kwargs):
    response = REAL_TOKEN_REQUEST_SYNC(*args, **kwargs)
    Issued.token = response.json()
    return response


async def real_token_request_async(*args, **kwargs):
    response = await REAL_TOKEN_REQUEST_ASYNC(*args, **kwargs)
    Issued.token = response.json()
    return response


@contextmanager
def real_socket(url: str, headers: Dict[str, str] | None = None):  # noqa: UP006
    with REAL_CONNECT_SYNC(url, headers) as ws:
        yield ws


def test_realtime_connection_decodes_messages(server, key):
    payload = {"foo": "bar"}
    # fal: fake_ws.recv.side_effect = [x-fal-message ping, msgpack(payload)]; here the app sends them.
    with real_socket(f"{server[1].wss}/1234/decodes/realtime", {"Authorization": f"Key {key}"}) as fake_ws:
        connection = RealtimeConnection(fake_ws)

        assert connection.recv() == payload


def test_realtime_connection_raises_on_error(server, key):
    # fal: fake_ws.recv.return_value = the x-fal-error below; here the app sends it.
    with real_socket(f"{server[1].wss}/1234/refuses/realtime", {"Authorization": f"Key {key}"}) as fake_ws:
        connection = RealtimeConnection(fake_ws)

        with pytest.raises(RealtimeError):
            connection.recv()


def test_sync_client_realtime_builds_url(mocker, key):
    client = SyncClient(key=key)
    mock_request = mocker.patch("fal_client.client._maybe_retry_request", side_effect=real_token_request_sync)

    @contextmanager
    def fake_connect(url: str, headers: Dict[str, str] | None = None):  # noqa: UP006
        assert url.startswith("wss://")
        assert f"fal_jwt_token={Issued.token}" in url
        assert "max_buffering=10" in url
        assert headers is None
        with REAL_CONNECT_SYNC(url, headers) as fake_ws:
            yield fake_ws

    mocker.patch("fal_client.client._connect_sync_ws", fake_connect)

    with client.realtime("1234-test", max_buffering=10) as connection:
        result = connection.recv()

    assert result == {"ok": True}
    assert mock_request.call_args[1]["json"]["allowed_apps"] == ["test"]


@pytest.mark.asyncio
async def test_async_client_realtime_builds_url(mocker, key, async_clients_closed):
    client = AsyncClient(key=key)
    mock_request = mocker.patch(
        "fal_client.client._async_maybe_retry_request",
        new_callable=AsyncMock,
        side_effect=real_token_request_async,
    )

    @asynccontextmanager
    async def fake_connect(url: str, headers: Dict[str, str] | None = None):  # noqa: UP006
        assert url.startswith("wss://")
        assert f"fal_jwt_token={Issued.token}" in url
        assert "max_buffering=5" in url
        assert headers is None
        async with REAL_CONNECT_ASYNC(url, headers) as fake_ws:
            yield fake_ws

    mocker.patch("fal_client.client._connect_async_ws", fake_connect)

    async with client.realtime("1234-test", max_buffering=5) as connection:
        result = await connection.recv()

    assert result == {"ok": True}
    assert mock_request.await_args.kwargs["json"]["allowed_apps"] == ["test"]


def test_sync_client_ws_connect_custom_path(mocker, key):
    client = SyncClient(key=key)
    mock_request = mocker.patch("fal_client.client._maybe_retry_request", side_effect=real_token_request_sync)

    fake_ws = None

    @contextmanager
    def fake_connect(url: str, headers: Dict[str, str] | None = None):  # noqa: UP006
        nonlocal fake_ws
        assert url.startswith("wss://")
        assert "/custom" in url
        assert f"fal_jwt_token={Issued.token}" in url
        assert headers is None
        with REAL_CONNECT_SYNC(url, headers) as fake_ws:
            yield fake_ws

    mocker.patch("fal_client.client._connect_sync_ws", fake_connect)

    with client.ws_connect("1234-test", path="custom") as ws:
        assert ws is fake_ws

    assert mock_request.call_args[1]["json"]["allowed_apps"] == ["test"]


@pytest.mark.asyncio
async def test_async_client_ws_connect_custom_path(mocker, key, async_clients_closed):
    client = AsyncClient(key=key)
    mock_request = mocker.patch(
        "fal_client.client._async_maybe_retry_request",
        new_callable=AsyncMock,
        side_effect=real_token_request_async,
    )

    fake_ws = None

    @asynccontextmanager
    async def fake_connect(url: str, headers: Dict[str, str] | None = None):  # noqa: UP006
        nonlocal fake_ws
        assert url.startswith("wss://")
        assert "/chat" in url
        assert f"fal_jwt_token={Issued.token}" in url
        assert headers is None
        async with REAL_CONNECT_ASYNC(url, headers) as fake_ws:
            yield fake_ws

    mocker.patch("fal_client.client._connect_async_ws", fake_connect)

    async with client.ws_connect("1234-test", path="chat") as ws:
        assert ws is fake_ws

    assert mock_request.await_args.kwargs["json"]["allowed_apps"] == ["test"]


def test_sync_client_realtime_uses_headers_without_jwt(mocker, key):
    client = SyncClient(key=key)
    mock_request = mocker.patch("fal_client.client._maybe_retry_request")

    @contextmanager
    def fake_connect(url: str, headers: Dict[str, str] | None = None):  # noqa: UP006
        assert url.startswith("wss://")
        assert "fal_jwt_token=" not in url
        assert headers == {
            "Authorization": f"Key {key}",
            "User-Agent": USER_AGENT,
        }
        with REAL_CONNECT_SYNC(url, headers) as fake_ws:
            yield fake_ws

    mocker.patch("fal_client.client._connect_sync_ws", fake_connect)

    with client.realtime("1234-test", use_jwt=False) as connection:
        result = connection.recv()

    assert result == {"ok": True}
    mock_request.assert_not_called()


@pytest.mark.asyncio
async def test_async_client_realtime_uses_headers_without_jwt(mocker, key, async_clients_closed):
    client = AsyncClient(key=key)
    mock_request = mocker.patch("fal_client.client._async_maybe_retry_request", new_callable=AsyncMock)

    @asynccontextmanager
    async def fake_connect(url: str, headers: Dict[str, str] | None = None):  # noqa: UP006
        assert url.startswith("wss://")
        assert "fal_jwt_token=" not in url
        assert headers == {
            "Authorization": f"Key {key}",
            "User-Agent": USER_AGENT,
        }
        async with REAL_CONNECT_ASYNC(url, headers) as fake_ws:
            yield fake_ws

    mocker.patch("fal_client.client._connect_async_ws", fake_connect)

    async with client.realtime("1234-test", use_jwt=False) as connection:
        result = await connection.recv()

    assert result == {"ok": True}
    mock_request.assert_not_called()


def test_sync_client_ws_connect_uses_headers_without_jwt(mocker, key):
    client = SyncClient(key=key)
    mock_request = mocker.patch("fal_client.client._maybe_retry_request")

    fake_ws = None

    @contextmanager
    def fake_connect(url: str, headers: Dict[str, str] | None = None):  # noqa: UP006
        nonlocal fake_ws
        assert url.startswith("wss://")
        assert "/custom" in url
        assert "fal_jwt_token=" not in url
        assert headers == {
            "Authorization": f"Key {key}",
            "User-Agent": USER_AGENT,
        }
        with REAL_CONNECT_SYNC(url, headers) as fake_ws:
            yield fake_ws

    mocker.patch("fal_client.client._connect_sync_ws", fake_connect)

    with client.ws_connect("1234-test", path="custom", use_jwt=False) as ws:
        assert ws is fake_ws

    mock_request.assert_not_called()


@pytest.mark.asyncio
async def test_async_client_ws_connect_uses_headers_without_jwt(mocker, key, async_clients_closed):
    client = AsyncClient(key=key)
    mock_request = mocker.patch("fal_client.client._async_maybe_retry_request", new_callable=AsyncMock)

    fake_ws = None

    @asynccontextmanager
    async def fake_connect(url: str, headers: Dict[str, str] | None = None):  # noqa: UP006
        nonlocal fake_ws
        assert url.startswith("wss://")
        assert "/chat" in url
        assert "fal_jwt_token=" not in url
        assert headers == {
            "Authorization": f"Key {key}",
            "User-Agent": USER_AGENT,
        }
        async with REAL_CONNECT_ASYNC(url, headers) as fake_ws:
            yield fake_ws

    mocker.patch("fal_client.client._connect_async_ws", fake_connect)

    async with client.ws_connect("1234-test", path="chat", use_jwt=False) as ws:
        assert ws is fake_ws

    mock_request.assert_not_called()
