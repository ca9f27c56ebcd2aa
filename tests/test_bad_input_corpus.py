"""A corpus of bad inputs over HTTP and WebSocket against real daphne and runner processes: each one
gets a named error (never a 500), nothing crashes, and the gateway's memory stays bounded."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator

import httpx
import psutil
import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import drawing, encode
from tests.gateway.stack import GatewayStack, start_stack
from tests.runner.test_imaging import png_header_only
from tests.runner.wsclient import open_ws, pack, recv, recv_result

JPEG = encode(drawing(64, 64))
GOOD = {"prompt": "x", "image_bytes": JPEG, "width": 64, "height": 64}
RESIZE = {**GOOD, "width": 128, "height": 128}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    stack = start_stack(tmp_path_factory.mktemp("corpus"), [["--apps", "local/echo"]],
                        {"REALTIME_MAX_FRAME_BYTES": str(256 * 1024)})  # fmt: skip
    make = "get_user_model().objects.create_user('zed', password='pw-zed-1234567')"
    stack.manage("shell", "-c", f"from django.contrib.auth import get_user_model; {make}")
    stack.key = stack.manage("create_api_key", "zed").strip()  # type: ignore[attr-defined]
    yield stack
    stack.close()


def key_headers(stack: GatewayStack) -> dict[str, str]:
    return {"Authorization": f"Key {stack.key}"}  # type: ignore[attr-defined]


# (name, method, path, request options, expected status, text in the answer); "KEY" is the API key.
HTTP_CASES: list[tuple[str, str, str, dict, int, str]] = [
    ("tokens without key", "POST", "/tokens/", {"json": {"allowed_apps": ["echo"]}}, 401, "no API key"),
    ("tokens bearer", "POST", "/tokens/", {"headers": {"Authorization": "Bearer x"}}, 401, "malformed"),
    ("tokens key no secret", "POST", "/tokens/", {"headers": {"Authorization": "Key abc"}}, 401, "malformed"),
    ("tokens unknown key", "POST", "/tokens/", {"headers": {"Authorization": "Key ab:cd"}}, 401, "unknown API key"),
    (
        "tokens key too long",
        "POST",
        "/tokens/",
        {"headers": {"Authorization": "Key " + "a" * 500 + ":b"}},
        401,
        "malformed",
    ),
    ("tokens GET", "GET", "/tokens/", {"headers": {"Authorization": "KEY"}}, 405, ""),
    (
        "tokens not json",
        "POST",
        "/tokens/",
        {"headers": {"Authorization": "KEY"}, "content": b"{"},
        400,
        "not valid JSON",
    ),
    (
        "tokens binary body",
        "POST",
        "/tokens/",
        {"headers": {"Authorization": "KEY"}, "content": b"\xff\xfe"},
        400,
        "not valid JSON",
    ),
    ("tokens array body", "POST", "/tokens/", {"headers": {"Authorization": "KEY"}, "json": []}, 400, "JSON object"),
    ("tokens no apps", "POST", "/tokens/", {"headers": {"Authorization": "KEY"}, "json": {}}, 400, "allowed_apps"),
    (
        "tokens apps string",
        "POST",
        "/tokens/",
        {"headers": {"Authorization": "KEY"}, "json": {"allowed_apps": "echo"}},
        400,
        "allowed_apps",
    ),
    (
        "tokens too many apps",
        "POST",
        "/tokens/",
        {"headers": {"Authorization": "KEY"}, "json": {"allowed_apps": ["a"] * 21}},
        400,
        "allowed_apps",
    ),
    (
        "tokens bad alias",
        "POST",
        "/tokens/",
        {"headers": {"Authorization": "KEY"}, "json": {"allowed_apps": ["a b/c"]}},
        400,
        "not an app alias",
    ),
    (
        "tokens alias object",
        "POST",
        "/tokens/",
        {"headers": {"Authorization": "KEY"}, "json": {"allowed_apps": [{}]}},
        400,
        "not an app alias",
    ),
    (
        "tokens negative life",
        "POST",
        "/tokens/",
        {"headers": {"Authorization": "KEY"}, "json": {"allowed_apps": ["echo"], "token_expiration": -1}},
        400,
        "token_expiration",
    ),
    (
        "tokens life float",
        "POST",
        "/tokens/",
        {"headers": {"Authorization": "KEY"}, "json": {"allowed_apps": ["echo"], "token_expiration": 1.5}},
        400,
        "token_expiration",
    ),
    (
        "tokens life huge",
        "POST",
        "/tokens/",
        {"headers": {"Authorization": "KEY"}, "json": {"allowed_apps": ["echo"], "token_expiration": 10**30}},
        200,
        "ey",
    ),
    ("fal token logged out", "GET", "/api/fal/token?app=local/echo", {}, 401, "log in"),
    (
        "proxy logged out",
        "POST",
        "/api/fal/proxy",
        {"headers": {"x-fal-target-url": "https://rest.fal.ai/tokens/"}},
        401,
        "log in",
    ),
    ("apps logged out", "GET", "/api/apps", {}, 401, "log in"),
    ("metrics anonymous", "GET", "/metrics", {}, 403, "staff"),
    ("metrics bad bearer", "GET", "/metrics", {"headers": {"Authorization": "Bearer nope"}}, 403, "staff"),
    ("dashboard anonymous", "GET", "/admin/dashboard/?start=garbage", {}, 302, ""),
    ("csv anonymous", "GET", "/admin/dashboard/export.csv", {}, 302, ""),
    ("unknown page", "GET", "/nothing/here", {}, 404, ""),
    ("login wrong password", "POST", "/accounts/login/", {"data": {"username": "zed", "password": "x"}}, 403, "CSRF"),
    ("huge query string", "GET", "/api/fal/token?app=" + "a" * 6000, {}, 401, "log in"),
    ("weird host", "GET", "/accounts/login/", {"headers": {"Host": "evil.example"}}, 400, ""),
]


@pytest.mark.parametrize(
    ("name", "method", "path", "options", "status", "text"), HTTP_CASES, ids=[c[0] for c in HTTP_CASES]
)
def test_http_bad_inputs(
    stack: GatewayStack, name: str, method: str, path: str, options: dict, status: int, text: str
) -> None:
    headers = {k: (f"Key {stack.key}" if v == "KEY" else v) for k, v in options.pop("headers", {}).items()}  # type: ignore[attr-defined]
    response = httpx.request(method, stack.http + path, headers=headers, timeout=30, **options)
    assert response.status_code == status, response.text[:300]
    assert text in response.text


# (name, path and query, extra headers, message or None, expected error code). None: refused at connect.
WS_CASES: list[tuple[str, str, dict, bytes | str | None, str]] = [
    ("no credentials", "/local/echo/realtime", {}, None, "UNAUTHORIZED"),
    ("empty token", "/local/echo/realtime?fal_jwt_token=", {}, None, "UNAUTHORIZED"),
    ("garbage token", "/local/echo/realtime?fal_jwt_token=%00%01", {}, None, "UNAUTHORIZED"),
    (
        "token of another scheme",
        "/local/echo/realtime?fal_jwt_token=" + base64.b64encode(b"{}").decode(),
        {},
        None,
        "UNAUTHORIZED",
    ),
    ("huge token", "/local/echo/realtime?fal_jwt_token=" + "a" * 4000, {}, None, "UNAUTHORIZED"),
    ("key header empty", "/local/echo/realtime", {"Authorization": "Key "}, None, "UNAUTHORIZED"),
    ("key header unicode", "/local/echo/realtime", {"Authorization": "Key ké:y"}, None, "UNAUTHORIZED"),
    (
        "cookie without session",
        "/local/echo/realtime",
        {"Cookie": "sessionid=nope", "Origin": "http://localhost"},
        None,
        "UNAUTHORIZED",
    ),
    ("unknown app", "/nobody/nothing/realtime", "KEY", None, "APP_UNAVAILABLE"),
    ("path traversal", "/../../etc/realtime", "KEY", None, "APP_UNAVAILABLE"),
    ("short path", "/local", "KEY", None, "APP_UNAVAILABLE"),
    ("max_buffering zero", "/local/echo/realtime?max_buffering=0", "KEY", None, "VALIDATION_ERROR"),
    ("max_buffering word", "/local/echo/realtime?max_buffering=lots", "KEY", None, "VALIDATION_ERROR"),
    ("max_buffering negative", "/local/echo/realtime?max_buffering=-1", "KEY", None, "VALIDATION_ERROR"),
    ("garbage frame", "/local/echo/realtime", "KEY", b"\xc1\xc1\xc1", "VALIDATION_ERROR"),
    ("empty frame", "/local/echo/realtime", "KEY", b"", "VALIDATION_ERROR"),
    (
        "msgpack string",
        "/local/echo/realtime",
        "KEY",
        pack.__wrapped__("x") if hasattr(pack, "__wrapped__") else b"\xa1x",
        "VALIDATION_ERROR",
    ),
    ("json number", "/local/echo/realtime", "KEY", "42", "VALIDATION_ERROR"),
    ("json broken", "/local/echo/realtime", "KEY", '{"prompt": ', "VALIDATION_ERROR"),
    ("no prompt", "/local/echo/realtime", "KEY", pack(image_bytes=JPEG), "VALIDATION_ERROR"),
    ("no image", "/local/echo/realtime", "KEY", pack(prompt="x"), "VALIDATION_ERROR"),
    ("nan strength", "/local/echo/realtime", "KEY", pack(**GOOD, strength=float("nan")), "VALIDATION_ERROR"),
    ("inf guidance", "/local/echo/realtime", "KEY", pack(**GOOD, guidance_scale=float("inf")), "VALIDATION_ERROR"),
    ("seed too big", "/local/echo/realtime", "KEY", pack(**GOOD, seed=2**40), "VALIDATION_ERROR"),
    ("size zero", "/local/echo/realtime", "KEY", pack(**{**GOOD, "width": 0}), "VALIDATION_ERROR"),
    ("size map broken", "/local/echo/realtime", "KEY", pack(**{**GOOD, "image_size": {"w": 1}}), "VALIDATION_ERROR"),
    (
        "text image",
        "/local/echo/realtime",
        "KEY",
        pack(**{**RESIZE, "image_bytes": b"GIF89a" + bytes(30)}),
        "VALIDATION_ERROR",
    ),
    (
        "svg image url",
        "/local/echo/realtime",
        "KEY",
        pack(prompt="x", image_url="data:image/svg+xml;base64,PHN2Zz4="),
        "VALIDATION_ERROR",
    ),
    (
        "bomb",
        "/local/echo/realtime",
        "KEY",
        pack(**{**RESIZE, "image_bytes": png_header_only(50_000, 50_000)}),
        "VALIDATION_ERROR",
    ),
    ("truncated", "/local/echo/realtime", "KEY", pack(**{**RESIZE, "image_bytes": JPEG[:200]}), "VALIDATION_ERROR"),
    (
        "control image, no ControlNet",
        "/local/echo/realtime",
        "KEY",
        pack(**GOOD, control_image_bytes=JPEG),
        "VALIDATION_ERROR",
    ),
    (
        "control image url not data",
        "/local/echo/realtime",
        "KEY",
        pack(**GOOD, control_image_url="http://169.254.169.254/"),
        "VALIDATION_ERROR",
    ),
    (
        "control scale nan",
        "/local/echo/realtime",
        "KEY",
        pack(**GOOD, controlnet_conditioning_scale=float("nan")),
        "VALIDATION_ERROR",
    ),
    ("guidance end 0", "/local/echo/realtime", "KEY", pack(**GOOD, control_guidance_end=0), "VALIDATION_ERROR"),
    (
        "travel too long",
        "/local/echo/realtime",
        "KEY",
        pack(**GOOD, prompt_transition_frames=10**9),
        "VALIDATION_ERROR",
    ),
    ("frame over the cap", "/local/echo/realtime", "KEY", pack(**GOOD, pad=bytes(300 * 1024)), "PAYLOAD_TOO_LARGE"),
    (
        "text over the cap",
        "/local/echo/realtime",
        "KEY",
        json.dumps({"prompt": "x" * (300 * 1024)}),
        "PAYLOAD_TOO_LARGE",
    ),
]


@pytest.mark.parametrize(("name", "path", "headers", "message", "code"), WS_CASES, ids=[c[0] for c in WS_CASES])
async def test_websocket_bad_inputs(stack: GatewayStack, name: str, path: str, headers, message, code: str) -> None:
    headers = key_headers(stack) if headers == "KEY" else headers
    async with await open_ws(stack.ws + path, additional_headers=headers) as ws:
        if message is None:  # refused at connect: told why, then closed
            error = await recv(ws)
            with pytest.raises(ConnectionClosed):
                await recv(ws)
            assert ws.close_code is not None and 4400 <= ws.close_code < 4600
        else:
            await ws.send(message)
            error = await recv(ws)
            await ws.send(pack(**GOOD, request_id="after"))  # the connection lives on
            assert (await recv_result(ws))["request_id"] == "after"
    assert error["type"] == "x-fal-error" and error["error"] == code and error["reason"]


async def test_the_servers_survive_the_corpus_with_bounded_memory(stack: GatewayStack) -> None:
    daphne = psutil.Process(stack.daphne.pid)  # type: ignore[union-attr]
    before = daphne.memory_info().rss
    bad = [message for _, _, headers, message, _ in WS_CASES if message is not None and headers == "KEY"]
    for _ in range(5):
        async with await open_ws(f"{stack.ws}/local/echo/realtime", additional_headers=key_headers(stack)) as ws:
            for message in bad:
                await ws.send(message)
                await recv(ws)
    await asyncio.sleep(0.5)
    grown = (daphne.memory_info().rss - before) / 2**20
    assert grown < 50, f"daphne grew {grown:.1f} MiB over {5 * len(bad)} bad frames"
    assert stack.daphne.poll() is None and all(r.process.poll() is None for r in stack.runners)  # type: ignore[union-attr]
    log = stack.log_path.read_text()  # (Django logs the refused Host header with a traceback: a 400)
    assert "Internal Server Error" not in log and "Exception inside application" not in log and '" 500 ' not in log
