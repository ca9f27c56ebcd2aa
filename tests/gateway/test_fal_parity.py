"""Where fal's servers and ours meet (issue 19), through a real gateway and runner: JSON in binary
frames, each app's own session settings, close frames that carry their reason, and previews (several
results for one input) for a client that asks."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from realtime_site.protocol import MAX_CLOSE_REASON_BYTES
from tests.conftest import drawing, encode
from tests.gateway.stack import GatewayStack, start_stack
from tests.runner.wsclient import open_ws, pack, recv, recv_result

DRAWING = encode(drawing(128, 128))
DATA_URL = "data:image/png;base64," + base64.b64encode(DRAWING).decode()
# A slow app with its own settings: three inputs wait (not one) and two quiet seconds end a session.
PATIENT = "test/patient=echo?delay_ms=300&workers=1&buffering=3&session_timeout=2"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    stack = start_stack(tmp_path_factory.mktemp("parity"), [["--apps", f"local/echo,local/stylize,{PATIENT}"]])
    for name in ("fay", "vic"):
        make = f"get_user_model().objects.create_user({name!r}, password='pw-{name}-123456')"
        stack.manage("shell", "-c", f"from django.contrib.auth import get_user_model; {make}")
        setattr(stack, name, stack.manage("create_api_key", name).strip())
    yield stack
    stack.close()


async def connect(stack: GatewayStack, key: str, app: str, query: str = "") -> ClientConnection:
    url = f"{stack.ws}/{app}/realtime" + (f"?{query}" if query else "")
    return await open_ws(url, additional_headers={"Authorization": f"Key {key}"})


def json_frame(**fields: object) -> bytes:
    """A frame as fal's JSON codecs send it: JSON, UTF-8, in a binary message."""
    body = {"prompt": "x", "image_url": DATA_URL, "image_size": {"width": 128, "height": 128}, **fields}
    return json.dumps(body).encode()


async def victim_gets_a_result(victim: ClientConnection, rid: str) -> None:
    await victim.send(pack(prompt="v", image_bytes=DRAWING, width=128, height=128, request_id=rid))
    assert (await recv_result(victim))["request_id"] == rid


async def test_json_in_a_binary_frame_is_answered_as_json_in_a_binary_frame(stack: GatewayStack) -> None:
    async with (
        await connect(stack, stack.vic, "local/echo") as victim,
        await connect(stack, stack.fay, "local/echo") as ws,
    ):
        await victim_gets_a_result(victim, "v0")
        await ws.send(json_frame(request_id="j1"))
        answer = await asyncio.wait_for(ws.recv(), 30)
        assert isinstance(answer, bytes) and answer[:1] == b"{"  # binary, and JSON inside
        result = json.loads(answer)
        assert result["request_id"] == "j1"
        url = result["images"][0]["url"]
        assert url.startswith("data:image/jpeg;base64,")  # the default output_format
        image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        assert image.size == (128, 128)

        # Bad JSON in binary frames: a named error each (as text, as fal's servers send errors), and
        # the session, the other user's session and the usage record all live on.
        bad = [b"{not json", b'{"prompt": "\xff"}', json_frame(image_bytes="not bytes"), b"{" + b"[" * 300]
        problems = ["binary message is not valid JSON", "not UTF-8 JSON", "image_url", "arrays and maps"]
        for frame, problem in zip(bad, problems, strict=True):
            await ws.send(frame)
            error = await recv(ws)
            assert error["type"] == "x-fal-error" and error["error"] == "VALIDATION_ERROR", error
            assert problem in error["reason"]
            await victim_gets_a_result(victim, f"v-{problem}")
        await ws.send(json_frame(request_id="j2"))
        assert json.loads(await asyncio.wait_for(ws.recv(), 30))["request_id"] == "j2"
    record = await closed_record(stack, "fay", "local/echo")
    assert (record["frames_in"], record["results_out"], record["errors"]) == (6, 2, {"VALIDATION_ERROR": 4})
    assert record["inference_seconds"] > 0 and record["bytes_out"] > 2 * len(DATA_URL)


async def closed_record(stack: GatewayStack, username: str, app: str) -> dict:
    """The usage record of ``username``'s one closed connection to ``app`` (written as it closes)."""
    code = (
        "list(__import__('realtime_site.usage.models', fromlist=['x']).ConnectionRecord.objects"
        f".filter(username={username!r}, app={app!r}, ended_at__isnull=False)"
        ".values('frames_in', 'results_out', 'errors', 'inference_seconds', 'bytes_out'))"
    )
    for _ in range(100):
        rows = await asyncio.to_thread(stack.query, code)
        if rows:
            assert len(rows) == 1, rows
            return rows[0]
        await asyncio.sleep(0.2)
    raise AssertionError(f"no closed usage record of {username} on {app}")


def test_healthz_reports_each_apps_session_settings(stack: GatewayStack) -> None:
    health = httpx.get(stack.runners[0].ws_base.replace("ws://", "http://") + "/healthz").json()
    settings = {app["id"]: (app["buffering"], app["session_timeout"], app["previews"]) for app in health["apps"]}
    assert settings == {
        "local/echo": (1, 300.0, False),
        "local/stylize": (1, 300.0, True),
        "test/patient": (3, 2.0, False),
    }


async def results_until_timeout(ws: ClientConnection, frames: int) -> tuple[list[str], dict]:
    """Send ``frames`` inputs at once; collect results until the session's idle TIMEOUT."""
    for index in range(frames):
        await ws.send(pack(prompt="p", image_bytes=DRAWING, width=128, height=128, request_id=str(index)))
    results: list[str] = []
    while True:
        message = await recv(ws, timeout=30)
        if message.get("type") == "x-fal-error":
            return results, message
        results.append(message["request_id"])


async def test_an_apps_buffering_and_session_timeout_apply_when_the_client_asks_for_none(stack: GatewayStack) -> None:
    async with await connect(stack, stack.fay, "test/patient") as ws:
        results, error = await results_until_timeout(ws, 6)
        # One input in inference, then the newest three (the app's buffer): the oldest waiting are dropped.
        assert results == ["0", "3", "4", "5"]
        assert (error["error"], error["reason"]) == ("TIMEOUT", "no input for 2 seconds")
        with pytest.raises(ConnectionClosed):
            await recv(ws, timeout=30)
        assert (ws.close_code, ws.close_reason) == (1000, "no input for 2 seconds")
    async with await connect(stack, stack.fay, "test/patient", "max_buffering=1") as ws:
        results, error = await results_until_timeout(ws, 6)
        assert results == ["0", "5"]  # the client's own max_buffering wins over the app's
        assert error["error"] == "TIMEOUT"


@pytest.mark.parametrize(
    ("path", "query", "code", "error"),
    [
        ("local/nothing/realtime", "", 4404, "APP_UNAVAILABLE"),
        ("local/echo/realtime", "max_buffering=99", 4400, "VALIDATION_ERROR"),
        ("local/" + "n" * 60 + "/realtime", "", 4404, "APP_UNAVAILABLE"),  # a reason over 123 bytes, cut
    ],
)
async def test_a_refusal_puts_its_reason_in_the_close_frame(
    stack: GatewayStack, path: str, query: str, code: int, error: str
) -> None:
    url = f"{stack.ws}/{path}" + (f"?{query}" if query else "")
    async with await open_ws(url, additional_headers={"Authorization": f"Key {stack.fay}"}) as ws:
        refusal = await recv(ws)
        with pytest.raises(ConnectionClosed):
            await recv(ws)
    assert (refusal["error"], ws.close_code) == (error, code)
    assert ws.close_reason and len(ws.close_reason.encode()) <= MAX_CLOSE_REASON_BYTES
    assert refusal["reason"].startswith(ws.close_reason.removesuffix("..."))


async def test_a_refusal_without_credentials_says_why_in_the_close_frame(stack: GatewayStack) -> None:
    async with await open_ws(f"{stack.ws}/local/echo/realtime") as ws:
        refusal = await recv(ws)
        with pytest.raises(ConnectionClosed):
            await recv(ws)
    assert (ws.close_code, ws.close_reason) == (4401, refusal["reason"])


async def test_previews_come_before_each_result_for_a_client_that_asks(stack: GatewayStack) -> None:
    fields = {"prompt": "mosaic", "image_bytes": DRAWING, "width": 128, "height": 128, "seed": 3}
    async with (
        await connect(stack, stack.vic, "local/stylize") as victim,
        await connect(stack, stack.fay, "local/stylize", "previews=1") as ws,
    ):
        for rid in ("a", "b"):
            await ws.send(pack(**fields, request_id=rid))
            preview, result = await recv_result(ws), await recv_result(ws)
            assert (preview["partial"], preview["step"], preview["steps"], preview["request_id"]) == (True, 1, 2, rid)
            assert Image.open(io.BytesIO(preview["images"][0]["content"])).size == (32, 32)  # a quarter
            assert "partial" not in result and result["request_id"] == rid and result["seed"] == 3
            assert Image.open(io.BytesIO(result["images"][0]["content"])).size == (128, 128)
        await ws.send(json.dumps({**fields, "image_bytes": None, "image_url": DATA_URL, "request_id": "t"}))
        preview = await recv(ws)
        assert preview["partial"] is True and preview["images"][0]["url"].startswith("data:image/jpeg;base64,")
        assert "partial" not in await recv(ws)
        # Another user's session, without previews, gets the same image and no preview.
        await victim.send(pack(**fields, request_id="v"))
        plain = await recv_result(victim)
        assert "partial" not in plain and plain["images"][0]["content"] == result["images"][0]["content"]
    record = await closed_record(stack, "fay", "local/stylize")
    assert (record["frames_in"], record["results_out"], record["errors"]) == (3, 3, {})  # previews are no results
