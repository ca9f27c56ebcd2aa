"""The runner over real sockets: the published fal client, frames, results, and bad inputs."""

from __future__ import annotations

import base64
import io
import json

import fal_client
import fal_client.client
import pytest
from fal_client.client import RealtimeError
from PIL import Image

from tests.conftest import RunnerProcess, drawing, encode
from tests.runner.test_imaging import png_header_only
from tests.runner.wsclient import open_ws, pack, recv, recv_result


@pytest.fixture
def fal_base(shared_runner: RunnerProcess, monkeypatch: pytest.MonkeyPatch) -> RunnerProcess:
    """Point the published fal client at our runner: only where it connects changes."""
    monkeypatch.setattr(fal_client.client, "REALTIME_URL_FORMAT", shared_runner.ws_base + "/")
    return shared_runner


def image_of(result: dict) -> Image.Image:
    entry = result["images"][0]
    data = entry["content"] if "content" in entry else base64.b64decode(entry["url"].split(",", 1)[1])
    return Image.open(io.BytesIO(data))


def test_fal_client_sync_gets_a_stylized_image_of_the_requested_size(fal_base: RunnerProcess, jpeg_256: bytes) -> None:
    client = fal_client.SyncClient(key="local:unused")
    with client.realtime("local/stylize", use_jwt=False) as connection:
        connection.send(
            {"prompt": "starry night", "image_bytes": jpeg_256, "image_size": {"width": 256, "height": 192}, "seed": 3}
        )
        result = connection.recv()
    assert result is not None
    entry = result["images"][0]
    assert (entry["width"], entry["height"], entry["content_type"]) == (256, 192, "image/jpeg")
    assert image_of(result).size == (256, 192)
    assert result["seed"] == 3 and result["timings"]["inference"] > 0


async def test_fal_client_async_same_seed_same_image(fal_base: RunnerProcess, jpeg_256: bytes) -> None:
    client = fal_client.AsyncClient(key="local:unused")
    frame = {"prompt": "mosaic", "image_bytes": jpeg_256, "image_size": "square", "seed": 11, "output_format": "png"}
    async with client.realtime("local/stylize", use_jwt=False, max_buffering=2) as connection:
        await connection.send(frame)
        first = await connection.recv()
        await connection.send(frame)
        second = await connection.recv()
    assert first["images"][0]["content"] == second["images"][0]["content"]
    assert image_of(first).size == (512, 512)


def test_fal_client_raises_realtime_error_and_the_connection_lives_on(fal_base: RunnerProcess, jpeg_256: bytes) -> None:
    client = fal_client.SyncClient(key="local:unused")
    with client.realtime("local/echo", use_jwt=False) as connection:
        connection.send({"prompt": "x", "image_bytes": jpeg_256, "strength": 7})
        with pytest.raises(RealtimeError) as caught:
            connection.recv()
        assert caught.value.error == "VALIDATION_ERROR" and "strength" in caught.value.reason
        connection.send({"prompt": "x", "image_bytes": jpeg_256, "image_size": {"width": 256, "height": 256}})
        assert connection.recv()["images"][0]["width"] == 256


def test_fal_client_unavailable_app_names_the_reason(fal_base: RunnerProcess) -> None:
    client = fal_client.SyncClient(key="local:unused")
    with client.realtime("test/broken", use_jwt=False) as connection, pytest.raises(RealtimeError) as caught:
        connection.recv()
    assert caught.value.error == "APP_UNAVAILABLE" and "model file missing" in caught.value.reason


async def test_json_frames_get_json_results_with_data_urls(shared_runner: RunnerProcess) -> None:
    png = encode(drawing(64, 64), "PNG")
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    async with await open_ws(shared_runner.url("local/echo")) as ws:
        await ws.send(json.dumps({"prompt": "x", "image_url": url, "width": 64, "height": 64, "request_id": "j1"}))
        message = await ws.recv()
    assert isinstance(message, str)
    result = json.loads(message)
    assert result["request_id"] == "j1" and result["images"][0]["url"].startswith("data:image/jpeg;base64,")
    assert image_of(result).size == (64, 64)


async def test_sync_mode_returns_a_data_url_and_timings_meta_is_opt_in(
    shared_runner: RunnerProcess, jpeg_256: bytes
) -> None:
    async with await open_ws(shared_runner.url("local/echo", "timings=1")) as ws:
        await ws.send(pack(prompt="x", image_bytes=jpeg_256, width=256, height=256, sync_mode=True))
        result = await recv(ws)
        meta = await recv(ws)
    assert result["images"][0]["url"].startswith("data:image/jpeg;base64,")
    assert meta == {"type": "x-fal-message", "action": "timings", "timing": result["timings"]["inference"]}


def test_healthz_lists_apps_with_state_and_reason(shared_runner: RunnerProcess) -> None:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{shared_runner.port}/healthz", timeout=10) as response:
        assert response.headers["Content-Type"] == "application/json"
        health = json.load(response)
    apps = {app["id"]: app for app in health["apps"]}
    assert health["status"] == "ok"
    assert apps["local/stylize"]["state"] == "ready"
    assert apps["test/broken"]["state"] == "unavailable" and "model file missing" in apps["test/broken"]["reason"]
    stylize = apps["local/stylize"]["details"]
    assert stylize["styles"] == len(stylize["style_names"]) == 26 and "starry" in stylize["style_names"]
    assert stylize["ignores"] == ["num_inference_steps", "guidance_scale"]  # the page greys these out
    assert "prompt" in apps["local/echo"]["details"]["ignores"]


JPEG = encode(drawing(128, 128))
GOOD = {"prompt": "x", "image_bytes": JPEG, "width": 128, "height": 128}
RESIZE = {**GOOD, "width": 64, "height": 64}  # forces a full decode in echo

BAD_INPUTS: list[tuple[str, bytes | str, str, str]] = [
    ("garbage bytes", b"\xc1\xc1", "VALIDATION_ERROR", "frame:"),
    ("empty binary", b"", "VALIDATION_ERROR", "frame:"),
    ("msgpack array", b"\x92\x01\x02", "VALIDATION_ERROR", "frame: must be a msgpack map"),
    ("bad json", "{oops", "VALIDATION_ERROR", "frame: text message is not valid JSON"),
    ("json array", "[1, 2]", "VALIDATION_ERROR", "frame: must be a JSON object"),
    ("no prompt", pack(image_bytes=JPEG), "VALIDATION_ERROR", "prompt: is required"),
    ("prompt number", pack(prompt=5, image_bytes=JPEG), "VALIDATION_ERROR", "prompt: must be a string"),
    ("prompt too long", pack(prompt="x" * 2001, image_bytes=JPEG), "VALIDATION_ERROR", "prompt: must be 1 to 2000"),
    ("no image", pack(prompt="x"), "VALIDATION_ERROR", "image: one of image_bytes, image_url and image"),
    ("image_bytes text", pack(prompt="x", image_bytes="abc"), "VALIDATION_ERROR", "image_bytes: must be binary"),
    (
        "remote url",
        pack(prompt="x", image_url="https://example.invalid/a.png"),
        "VALIDATION_ERROR",
        "image_url: must be a data",
    ),
    (
        "bad base64",
        pack(prompt="x", image_url="data:image/png;base64,@@"),
        "VALIDATION_ERROR",
        "image_url: is not valid",
    ),
    ("strength high", pack(**GOOD, strength=1.01), "VALIDATION_ERROR", "strength: must be from 0 to 1"),
    ("strength text", pack(**GOOD, strength="high"), "VALIDATION_ERROR", "strength: must be a number"),
    ("steps zero", pack(**GOOD, num_inference_steps=0), "VALIDATION_ERROR", "num_inference_steps:"),
    ("guidance high", pack(**GOOD, guidance_scale=99), "VALIDATION_ERROR", "guidance_scale:"),
    ("seed negative", pack(**GOOD, seed=-5), "VALIDATION_ERROR", "seed:"),
    ("size name", pack(**{**GOOD, "image_size": "poster"}), "VALIDATION_ERROR", "image_size: unknown size"),
    ("width odd", pack(**{**GOOD, "width": 100}), "VALIDATION_ERROR", "width: must be a multiple of 8"),
    ("format gif", pack(**GOOD, output_format="gif"), "VALIDATION_ERROR", "output_format:"),
    ("sync_mode text", pack(**GOOD, sync_mode="yes"), "VALIDATION_ERROR", "sync_mode:"),
    ("request_id map", pack(**GOOD, request_id={"a": 1}), "VALIDATION_ERROR", "request_id:"),
    ("not an image", pack(**{**RESIZE, "image_bytes": b"hello world"}), "VALIDATION_ERROR", "image: is not a PNG"),
    ("gif image", pack(**{**RESIZE, "image_bytes": b"GIF89a" + bytes(64)}), "VALIDATION_ERROR", "image: is not a PNG"),
    ("truncated jpeg", pack(**{**RESIZE, "image_bytes": JPEG[: len(JPEG) // 2]}), "VALIDATION_ERROR", "truncated"),
    (
        "decompression bomb",
        pack(**{**RESIZE, "image_bytes": png_header_only(60_000, 60_000)}),
        "VALIDATION_ERROR",
        "each side may be at most 4096",
    ),
    (
        "huge dimensions",
        pack(**{**RESIZE, "image_bytes": png_header_only(8000, 8)}),
        "VALIDATION_ERROR",
        "is 8000x8",
    ),
    ("frame too large", pack(**{**GOOD, "padding": bytes(300 * 1024)}), "PAYLOAD_TOO_LARGE", "the limit is 262144"),
    (
        "png signature and cut IHDR",
        pack(**{**GOOD, "image_bytes": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"}),
        "VALIDATION_ERROR",
        "image:",
    ),
    (
        "png header only at size",
        pack(**{**GOOD, "image_bytes": png_header_only(128, 128)}),
        "VALIDATION_ERROR",
        "image:",
    ),
    ("json bracket bomb", "[" * 100_000, "VALIDATION_ERROR", "frame: holds more than"),
    ("json object nesting", '{"a":' * 40_000, "VALIDATION_ERROR", "frame: holds more than"),
    (
        "msgpack empty-array bomb",
        b"\xdd" + (200_000).to_bytes(4, "big") + b"\x90" * 200_000,
        "VALIDATION_ERROR",
        "frame: must be a msgpack map",
    ),
    (
        "msgpack bomb inside a map",
        b"\x82\xa6prompt\xa1x\xa3pad\xdd" + (200_000).to_bytes(4, "big") + b"\x90" * 200_000,
        "VALIDATION_ERROR",
        "frame:",
    ),
    ("msgpack deep nesting", b"\x81\xa1a" + b"\x91" * 50_000 + b"\xc0", "VALIDATION_ERROR", "frame:"),
    ("msgpack ext type", b"\x81\xa1a\xd4\x01\x00", "VALIDATION_ERROR", "frame:"),
]


@pytest.mark.parametrize(("name", "message", "code", "reason"), BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
async def test_bad_input_gets_a_named_error_and_the_connection_lives_on(
    shared_runner: RunnerProcess, name: str, message: bytes | str, code: str, reason: str
) -> None:
    async with await open_ws(shared_runner.url("local/echo")) as ws:
        await ws.send(message)
        error = await recv(ws)
        assert error["type"] == "x-fal-error" and error["error"] == code
        assert reason in error["reason"]
        await ws.send(pack(**GOOD, request_id=name))
        result = await recv_result(ws)
    assert result["request_id"] == name and result["images"][0]["width"] == 128


async def test_errors_echo_the_request_id(shared_runner: RunnerProcess) -> None:
    async with await open_ws(shared_runner.url("local/echo")) as ws:
        await ws.send(pack(**{**RESIZE, "image_bytes": b"nope", "request_id": 99}))
        error = await recv(ws)
    assert error["request_id"] == 99
