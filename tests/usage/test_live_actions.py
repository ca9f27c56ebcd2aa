"""Staff actions on live connections across two daphne processes sharing a Redis channel layer, the
metrics after a known workload, and the dashboard following both processes live in a real browser."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import ROOT, drawing, encode
from tests.gateway.stack import GatewayStack, another_gateway, start_stack
from tests.runner.wsclient import open_ws, pack, recv, recv_result

REDIS_URL = "redis://127.0.0.1:6379/7"
METRICS_TOKEN = "metrics-token-for-tests"
STAFF_PASSWORD = "pw-staff-123456"
JPEG = encode(drawing(64, 64))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayStack, GatewayStack]]:
    a = start_stack(
        tmp_path_factory.mktemp("live"),
        [["--apps", "local/echo"]],
        {"REDIS_URL": REDIS_URL, "REALTIME_METRICS_TOKEN": METRICS_TOKEN, "USAGE_FLUSH_INTERVAL": "1"},
    )
    b = another_gateway(a)
    users = (
        "U = get_user_model(); "
        f"U.objects.create_user('boss', password={STAFF_PASSWORD!r}, is_staff=True, is_superuser=True); "
        "U.objects.create_user('vic', password='pw-vic-1234567')"
    )
    a.manage("shell", "-c", f"from django.contrib.auth import get_user_model; {users}")
    a.key = a.manage("create_api_key", "vic").strip()  # type: ignore[attr-defined]
    yield a, b
    b.close()
    a.close()


def staff_action(stack: GatewayStack, changelist: str, action: str, pk: object) -> None:
    """Log in as staff on ``stack`` and run an admin action on one object (blocking)."""
    with httpx.Client(base_url=stack.http, timeout=30) as http:
        page = http.get("/admin/login/")
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[1]
        login = {"username": "boss", "password": STAFF_PASSWORD, "csrfmiddlewaretoken": csrf, "next": "/admin/"}
        assert http.post("/admin/login/", data=login).status_code == 302
        page = http.get(changelist)
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[1]
        form = {"action": action, "_selected_action": [str(pk)], "csrfmiddlewaretoken": csrf}
        response = http.post(changelist, data=form)
        assert response.status_code == 302, response.text[:500]


async def expect_closed(ws, error: str, close_code: int) -> dict:
    message = await recv(ws, timeout=15)
    while message.get("type") != "x-fal-error":
        message = await recv(ws, timeout=15)
    with pytest.raises(ConnectionClosed):
        while True:
            await recv(ws, timeout=15)
    assert message["error"] == error and ws.close_code == close_code
    return message


async def connected(stack: GatewayStack, query: str = "", headers: dict | None = None):
    ws = await open_ws(f"{stack.ws}/local/echo/realtime{query}", additional_headers=headers or {})
    await ws.send(pack(prompt="x", image_bytes=JPEG, width=64, height=64, request_id="hello"))
    assert (await recv_result(ws))["request_id"] == "hello"
    return ws


def token_from(stack: GatewayStack, key: str) -> str:
    response = httpx.post(
        f"{stack.http}/tokens/", json={"allowed_apps": ["echo"]}, headers={"Authorization": f"Key {key}"}
    )
    return response.json()


async def test_revoking_a_key_on_one_gateway_closes_its_connection_on_the_other(cluster) -> None:
    a, b = cluster
    key = a.manage("create_api_key", "vic").strip()
    ws = await connected(b, headers={"Authorization": f"Key {key}"})
    models = "__import__('realtime_site.accounts.models', fromlist=['x'])"
    pk = a.query(f"{models}.ApiKey.objects.get(key_id={key.split(':')[0]!r}).pk")
    await asyncio.to_thread(staff_action, a, "/admin/accounts/apikey/", "revoke", pk)
    message = await expect_closed(ws, "UNAUTHORIZED", 4401)
    assert "revoked" in message["reason"]


async def test_revoking_a_token_closes_the_connections_that_use_it(cluster) -> None:
    a, b = cluster
    token = await asyncio.to_thread(token_from, b, a.key)
    ws = await connected(b, f"?fal_jwt_token={token}")
    jti = a.query(
        "__import__('realtime_site.accounts.models', fromlist=['x']).IssuedToken.objects.latest('issued_at').jti"
    )
    await asyncio.to_thread(staff_action, a, "/admin/accounts/issuedtoken/", "revoke", jti)
    await expect_closed(ws, "UNAUTHORIZED", 4401)


async def test_disconnecting_a_user_closes_their_sessions_on_every_gateway(cluster) -> None:
    a, b = cluster
    on_a = await connected(a, headers={"Authorization": f"Key {a.key}"})
    on_b = await connected(b, headers={"Authorization": f"Key {a.key}"})
    vic = a.query("__import__('django.contrib.auth', fromlist=['x']).get_user_model().objects.get(username='vic').pk")
    await asyncio.to_thread(staff_action, b, "/admin/usage/userusage/", "disconnect", vic)
    for ws in (on_a, on_b):
        message = await expect_closed(ws, "FORBIDDEN", 4403)
        assert "administrator" in message["reason"]


async def test_metrics_after_a_known_workload(cluster) -> None:
    a, _ = cluster
    before = await asyncio.to_thread(metric, a, 'realtime_frames_total{app="local/echo"}')
    async with await open_ws(f"{a.ws}/local/echo/realtime", additional_headers={"Authorization": f"Key {a.key}"}) as ws:
        for rid in range(5):
            await ws.send(pack(prompt="x", image_bytes=JPEG, width=64, height=64, request_id=rid))
            assert (await recv_result(ws))["request_id"] == rid
        await ws.send(pack(prompt="x", image_bytes=JPEG, width=64, height=64, strength=9))
        assert (await recv(ws))["error"] == "VALIDATION_ERROR"
    await asyncio.to_thread(_check_metrics, a, before)


def _check_metrics(a: GatewayStack, before: float) -> None:
    assert metric(a, 'realtime_frames_total{app="local/echo"}') == before + 6
    assert metric(a, 'realtime_errors_total{app="local/echo",code="VALIDATION_ERROR"}') >= 1
    assert metric(a, 'realtime_result_latency_seconds_count{app="local/echo"}') >= 5
    assert metric(a, f'realtime_runner_up{{runner="{a.runners[0].ws_base}"}}') == 1
    assert httpx.get(f"{a.http}/metrics").status_code == 403


def metric(stack: GatewayStack, name: str) -> float:
    text = httpx.get(f"{stack.http}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.skipif(not os.path.exists("/usr/bin/chromium"), reason="Debian's chromium is not installed")
async def test_the_dashboard_follows_both_gateways_live(cluster) -> None:
    a, b = cluster
    ws = await connected(b, headers={"Authorization": f"Key {a.key}"})
    await asyncio.to_thread(_dashboard_in_a_browser, a)
    await ws.close()


def _dashboard_in_a_browser(a: GatewayStack) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu",
                                    "--disable-background-networking", "--no-first-run"])  # fmt: skip
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(f"{a.http}/admin/login/?next=/admin/dashboard/")
        page.fill("#id_username", "boss")
        page.fill("#id_password", STAFF_PASSWORD)
        page.click("input[type=submit]")
        expect(page.locator("#live-state")).to_have_text("live", timeout=15_000)
        # The connection is on gateway b; its process reports it through Redis.
        page.wait_for_function("() => Number(document.getElementById('active-now').textContent) >= 1", timeout=15_000)
        page.wait_for_function(
            "() => Number(document.getElementById('frames-total').textContent.replace(/,/g, '')) >= 1", timeout=15_000
        )
        expect(page.locator("#chart-frames canvas")).to_have_count(1)
        (ROOT / "tests" / "artifacts").mkdir(exist_ok=True)
        page.screenshot(path=str(ROOT / "tests" / "artifacts" / "dashboard.png"), full_page=True)
        browser.close()
    assert errors == []
