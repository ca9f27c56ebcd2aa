"""The gateway behind a real nginx, configured from deploy/nginx.conf, with the documented settings:
TLS ends at nginx; CSRF passes, cookies are Secure, the client's own address is recorded (from
X-Forwarded-For, which a client cannot forge through nginx), and no token reaches nginx's log."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.accounts.live import csrf_of, new_user, round_trip, with_key
from tests.gateway.stack import GatewayStack, start_stack
from tests.proxy.nginx import NGINX, Nginx, start_nginx
from tests.runner.wsclient import open_ws

pytestmark = pytest.mark.skipif(not NGINX.exists(), reason="Debian's nginx is not installed: run `make nginx`")

CLIENT = "127.0.0.2"  # the client's address; nginx reaches daphne from 127.0.0.1
FORGED = "203.0.113.9"  # what the client claims in its own X-Forwarded-For
PASSWORD = "pw-proxy-1234567"
PROXY_ENV = {"DJANGO_SECURE_PROXY_SSL_HEADER": "1", "REALTIME_PROXY_HEADERS": "1"}


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayStack, Nginx]]:
    tmp = tmp_path_factory.mktemp("proxy")
    stack = start_stack(tmp / "gateway", [["--apps", "local/echo"]], PROXY_ENV)
    try:
        nginx = start_nginx(tmp / "nginx", stack.port, tmp / "gateway" / "static")
    except Exception:
        stack.close()
        raise
    yield stack, nginx
    nginx.stop()
    stack.close()


def https_client(nginx: Nginx) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=CLIENT, verify=False)
    return httpx.Client(base_url=nginx.https, transport=transport, timeout=30, headers={"X-Forwarded-For": FORGED})


def no_verify() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def test_login_through_nginx_passes_csrf_and_sets_secure_cookies(proxied) -> None:
    stack, nginx = proxied
    new_user(stack, "tia", PASSWORD)
    with https_client(nginx) as http:
        page = http.get("/accounts/login/")
        assert page.status_code == 200 and "Secure" in page.headers["set-cookie"]  # the CSRF cookie
        form = {"username": "tia", "password": PASSWORD, "csrfmiddlewaretoken": csrf_of(page), "next": "/"}
        origin = {"Origin": nginx.https, "Referer": f"{nginx.https}/accounts/login/"}
        login = http.post("/accounts/login/", data=form, headers=origin)
        # Django accepts an https Origin only when request.is_secure(): X-Forwarded-Proto was trusted.
        assert login.status_code == 302 and login.headers["location"] == "/", login.text[:500]
        session_cookie = next(c for c in login.headers.get_list("set-cookie") if c.startswith("sessionid="))
        assert "Secure" in session_cookie
        drawing = http.get("/")
        assert drawing.status_code == 200 and "Log in" not in drawing.text
        assert http.get("/static/site.css").status_code == 200  # nginx's own static location
    # Axes recorded the login from the client's address, not nginx's nor the forged one.
    addresses = stack.query(
        "list(__import__('axes.models', fromlist=['x']).AccessLog.objects.values_list('ip_address', flat=True))"
    )
    assert addresses == [CLIENT]


def test_the_same_https_origin_straight_to_daphne_fails_csrf(proxied) -> None:
    """The control: without nginx's X-Forwarded-Proto the request is not secure, and CSRF refuses it."""
    stack, _ = proxied
    with httpx.Client(base_url=stack.http, timeout=30) as http:
        page = http.get("/accounts/login/")
        form = {"username": "nobody", "password": "x", "csrfmiddlewaretoken": csrf_of(page)}
        refused = http.post("/accounts/login/", data=form, headers={"Origin": f"https://127.0.0.1:{stack.port}"})
    assert refused.status_code == 403 and "CSRF" in refused.text


async def test_websockets_through_nginx_record_the_client_and_log_no_token(proxied) -> None:
    stack, nginx = proxied
    _, key = await asyncio.to_thread(new_user, stack, "ugo")
    tls = {"ssl": no_verify(), "local_addr": (CLIENT, 0)}
    async with await open_ws(f"{nginx.wss}/local/echo/realtime", additional_headers=with_key(key), **tls) as ws:
        await round_trip(ws, "by key")
    token = await asyncio.to_thread(_token_through_nginx, nginx, key)
    url = f"{nginx.wss}/local/echo/realtime?fal_jwt_token={token}&max_buffering=2"
    async with await open_ws(url, additional_headers={"X-Forwarded-For": FORGED}, **tls) as ws:
        await round_trip(ws, "by token")
    addresses = await asyncio.to_thread(_recorded_addresses, stack, 2)
    assert addresses == [CLIENT, CLIENT]
    log = await asyncio.to_thread(_access_log_with, nginx, "/local/echo/realtime", 2)
    assert token not in log and "fal_jwt_token" not in log and "max_buffering" not in log
    assert key.split(":")[1] not in log


def _token_through_nginx(nginx: Nginx, key: str) -> str:
    with https_client(nginx) as http:
        response = http.post("/tokens/", json={"allowed_apps": ["echo"]}, headers=with_key(key))
    assert response.status_code == 200, response.text
    return response.json()


def _recorded_addresses(stack: GatewayStack, count: int) -> list[str]:
    """The client addresses of the usage records, once ``count`` connections are recorded."""
    records = "__import__('realtime_site.usage.models', fromlist=['x']).ConnectionRecord.objects"
    deadline = time.monotonic() + 60
    while True:
        addresses = stack.query(f"sorted({records}.values_list('client_address', flat=True))")
        if len(addresses) >= count or time.monotonic() > deadline:  # type: ignore[arg-type]
            return addresses  # type: ignore[return-value]
        time.sleep(0.5)


def _access_log_with(nginx: Nginx, path: str, count: int) -> str:
    """nginx's access log once it holds ``count`` lines for ``path`` (written when a connection ends)."""
    deadline = time.monotonic() + 60
    while True:
        log = nginx.access_log()
        if log.count(path) >= count or time.monotonic() > deadline:
            assert log.count(path) >= count, log
            return log
        time.sleep(0.2)


def test_an_upstream_failure_logs_no_token_in_nginx_error_log(proxied) -> None:
    """nginx's error lines quote the request line; deploy/nginx.conf keeps them out (last: daphne stops)."""
    stack, nginx = proxied
    probe = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwcm9iZSJ9.PROBE-signature-never-logged"
    stack.stop_gateway()
    try:
        with https_client(nginx) as http:
            response = http.get(f"/local/echo/realtime?fal_jwt_token={probe}")
            assert response.status_code == 502
        time.sleep(0.5)  # nginx writes its error line as it answers; give it a moment
        assert probe not in nginx.error_logs() and "fal_jwt_token" not in nginx.error_logs()
        assert "/local/echo/realtime" in nginx.access_log()  # the failure is still on record, path only
    finally:
        stack.start_gateway()
