"""The Python client and its command line, against real gateway and runner processes."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from realtime_site.client import RealtimeError, realtime, realtime_async, result_image, result_image_bytes
from tests.conftest import ROOT, drawing, encode
from tests.gateway.stack import GatewayStack, free_port, start_stack

PNG = encode(drawing(128, 128), "PNG")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    stack = start_stack(
        tmp_path_factory.mktemp("client"),
        [["--apps", "local/stylize,local/echo,test/broken=stylize?model_dir=/nonexistent"]],
    )
    make = "get_user_model().objects.create_user('gil', password='pw-gil-123456')"
    stack.manage("shell", "-c", f"from django.contrib.auth import get_user_model; {make}")
    stack.key = stack.manage("create_api_key", "gil").strip()  # type: ignore[attr-defined]
    yield stack
    stack.close()


def frame(**fields: object) -> dict:
    return {"prompt": "mosaic", "image_bytes": PNG, "image_size": {"width": 128, "height": 128}, **fields}


@pytest.mark.parametrize("use_jwt", [True, False], ids=["token", "key"])
def test_sync_client_gets_an_image(stack: GatewayStack, use_jwt: bool) -> None:
    with realtime("local/stylize", base_url=stack.http, key=stack.key, use_jwt=use_jwt) as connection:
        connection.send(frame(seed=5, request_id="a"))
        result = connection.recv()
    assert result is not None and result["request_id"] == "a" and result["seed"] == 5
    assert result_image(result).size == (128, 128)
    assert result_image_bytes(result)[:2] == b"\xff\xd8"


@pytest.mark.parametrize("use_jwt", [True, False], ids=["token", "key"])
async def test_async_client_iterates_over_results(stack: GatewayStack, use_jwt: bool) -> None:
    async with realtime_async(
        "local/echo", base_url=stack.http, key=stack.key, use_jwt=use_jwt, max_buffering=4
    ) as connection:
        for rid in range(3):
            await connection.send(frame(request_id=rid, output_format="png"))
        seen = []
        async for result in connection:
            seen.append(result["request_id"])
            if len(seen) == 3:
                break
    assert seen == [0, 1, 2]


def test_previews_and_json_in_binary_frames(stack: GatewayStack) -> None:
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    as_json = {**frame(request_id="j", image_url=url), "image_bytes": None}
    with realtime(
        "local/stylize",
        base_url=stack.http,
        key=stack.key,
        previews=True,
        encode_message=lambda message: json.dumps(message).encode(),  # JSON in binary frames, as fal's codecs
    ) as connection:
        connection.send(as_json)
        preview, result = connection.recv(), connection.recv()
    assert preview is not None and (preview["partial"], preview["step"], preview["steps"]) == (True, 1, 2)
    assert result is not None and "partial" not in result and result["request_id"] == "j"
    assert result_image(result).size == (128, 128)  # from the data URL a JSON result carries


def test_environment_defaults_and_custom_decoding(stack: GatewayStack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REALTIME_BASE_URL", stack.http)
    monkeypatch.setenv("FAL_KEY", stack.key)  # type: ignore[attr-defined]
    with realtime("local/echo", decode_message=lambda data: {"raw": len(data)}) as connection:
        connection.send(frame())
        assert connection.recv()["raw"] > 1000


def test_errors_raise_and_the_connection_lives_on(stack: GatewayStack) -> None:
    with realtime("local/echo", base_url=stack.http, key=stack.key) as connection:
        connection.send(frame(strength=3))
        with pytest.raises(RealtimeError) as caught:
            connection.recv()
        assert caught.value.error == "VALIDATION_ERROR" and "strength" in caught.value.reason
        connection.send(frame())
        assert connection.recv()["images"][0]["width"] == 128


def refusal(app: str, **options: object) -> RealtimeError:
    """The error of connecting (or of the first recv, where the server refuses after the upgrade)."""
    try:
        with realtime(app, **options) as connection:  # type: ignore[arg-type]
            connection.recv()
    except RealtimeError as exc:
        return exc
    raise AssertionError("not refused")


def test_refusals_are_realtime_errors(stack: GatewayStack) -> None:
    bad_key = {"base_url": stack.http, "key": "0123abcd:wrong"}
    caught = refusal("local/echo", **bad_key)
    assert caught.error == "UNAUTHORIZED" and "unknown API key" in caught.reason
    assert refusal("local/echo", **bad_key, use_jwt=False).error == "UNAUTHORIZED"
    caught = refusal("test/broken", base_url=stack.http, key=stack.key)
    assert caught.error == "APP_UNAVAILABLE" and "model file missing" in caught.reason
    assert refusal("local/echo", base_url=f"http://127.0.0.1:{free_port()}", key=stack.key).error == "CONNECTION_FAILED"


def test_a_normal_close_ends_iteration(stack: GatewayStack) -> None:
    with realtime("local/echo", base_url=stack.http, key=stack.key) as connection:
        connection.close()
        assert connection.recv() is None
        assert list(connection) == []


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"base_url": None}, "no server"),
        ({"base_url": "ftp://x"}, "not an http"),
        ({"key": None}, "no API key"),
        ({"max_buffering": 0}, "max_buffering"),
        ({"app": "nonsense"}, "invalid app id"),
    ],
)
def test_bad_arguments(stack: GatewayStack, monkeypatch: pytest.MonkeyPatch, kwargs: dict, problem: str) -> None:
    for name in ("REALTIME_BASE_URL", "REALTIME_KEY", "FAL_KEY"):
        monkeypatch.delenv(name, raising=False)
    options = {"app": "local/echo", "base_url": stack.http, "key": stack.key, **kwargs}
    with pytest.raises(ValueError, match=problem), realtime(options.pop("app"), **options):
        pass


# -- the command line -----------------------------------------------------------------------------


def cli(stack: GatewayStack, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REALTIME_BASE_URL": stack.http, "REALTIME_KEY": key or stack.key}  # type: ignore[attr-defined]
    return subprocess.run(
        [sys.executable, "-m", "realtime_site.client", *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def test_cli_turns_a_png_into_a_generated_jpeg(stack: GatewayStack, tmp_path: Path) -> None:
    source, out = tmp_path / "in.png", tmp_path / "out.jpg"
    source.write_bytes(PNG)
    done = cli(stack, "local/stylize", "--prompt", "fire", "--image", str(source), "--out", str(out),
               "--size", "256x192", "--seed", "3", "--strength", "0.9", "--steps", "2")  # fmt: skip
    assert done.returncode == 0, done.stderr
    image = Image.open(io.BytesIO(out.read_bytes()))
    assert image.format == "JPEG" and image.size == (256, 192)
    assert "ms inference" in done.stderr and "seed 3" in done.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["local/echo", "--prompt", "x", "--image", "missing.png", "--out", "o.jpg"], 2, "no such file"),
        (["local/echo", "--prompt", "x", "--image", "IN", "--out", "o.gif"], 2, "use a .jpg"),
        (["local/echo", "--image", "IN", "--out", "o.jpg"], 2, "--prompt"),
        (["local/echo", "--prompt", "x", "--image", "IN", "--out", "o.jpg", "--strength", "7"], 6, "VALIDATION_ERROR"),
        (["test/broken", "--prompt", "x", "--image", "IN", "--out", "o.jpg"], 5, "APP_UNAVAILABLE"),
        (["nobody/nothing", "--prompt", "x", "--image", "IN", "--out", "o.jpg"], 5, "no app 'nobody/nothing'"),
    ],
)
def test_cli_exit_codes(stack: GatewayStack, tmp_path: Path, args: list[str], code: int, message: str) -> None:
    source = tmp_path / "in.png"
    source.write_bytes(PNG)
    args = [str(source) if a == "IN" else (str(tmp_path / a) if a.startswith("o.") else a) for a in args]
    done = cli(stack, *args)
    assert done.returncode == code, done.stderr
    assert message in done.stderr


def test_cli_refused_key_and_wrong_url(stack: GatewayStack, tmp_path: Path) -> None:
    source = tmp_path / "in.png"
    source.write_bytes(PNG)
    base = ["local/echo", "--prompt", "x", "--image", str(source), "--out", str(tmp_path / "o.jpg")]
    refused = cli(stack, *base, key="0123abcd:wrong")
    assert refused.returncode == 4 and "UNAUTHORIZED" in refused.stderr
    wrong_url = cli(stack, *base, "--base-url", f"http://127.0.0.1:{free_port()}")
    assert wrong_url.returncode == 3 and "cannot reach" in wrong_url.stderr


def test_cli_watch_sends_the_file_again_when_it_changes(stack: GatewayStack, tmp_path: Path) -> None:
    source, out = tmp_path / "in.png", tmp_path / "out.png"
    source.write_bytes(encode(Image.new("RGB", (64, 64), (255, 0, 0)), "PNG"))
    env = {**os.environ, "REALTIME_BASE_URL": stack.http, "REALTIME_KEY": stack.key}  # type: ignore[attr-defined]
    process = subprocess.Popen(
        [sys.executable, "-m", "realtime_site.client", "local/echo", "--prompt", "x", "--image", str(source),
         "--out", str(out), "--size", "64", "--watch"],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        red = _wait_for_colour(out, lambda px: px[0] > 200 and px[2] < 50)
        time.sleep(0.05)
        source.write_bytes(encode(Image.new("RGB", (64, 64), (0, 0, 255)), "PNG"))
        os.utime(source, ns=(time.time_ns(), time.time_ns() + 1_000_000))
        blue = _wait_for_colour(out, lambda px: px[2] > 200 and px[0] < 50)
        assert red and blue
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert stderr.count("ms round trip") >= 2 and "watching" in stderr


def _wait_for_colour(path: Path, test, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if test(Image.open(path).convert("RGB").getpixel((32, 32))):
                return True
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"{path} never got the expected colour")


def test_the_client_never_imports_django() -> None:
    code = (
        "import sys, realtime_site.client, realtime_site.client.__main__\n"
        "bad = [n for n in sys.modules if n == 'django' or n.startswith(('django.', 'channels'))]\n"
        "sys.exit(f'imported {bad}' if bad else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
