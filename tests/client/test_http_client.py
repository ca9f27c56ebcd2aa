"""``realtime_site.client``'s HTTP calls against real daphne and a real runner: ``stream`` and
``run`` (sync and async; by token and by key), their errors, and the command line's ``--stream``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from realtime_site.client import RealtimeError, result_image, run, run_async, stream, stream_async
from tests.conftest import ROOT, drawing, encode
from tests.gateway.stack import GatewayStack, start_stack

PNG = encode(drawing(64, 64), "PNG")
INPUT = {"prompt": "starry night", "image_bytes": PNG, "image_size": {"width": 256, "height": 256}, "seed": 5}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    stack = start_stack(tmp_path_factory.mktemp("http-client"), [["--apps", "local/stylize,local/echo"]])
    stack.manage(
        "shell", "-c", "from django.contrib.auth import get_user_model; get_user_model().objects.create_user('lev')"
    )
    stack.key = stack.manage("create_api_key", "lev").strip()  # type: ignore[attr-defined]
    yield stack
    stack.close()


def auth(stack: GatewayStack) -> dict[str, str]:
    return {"base_url": stack.http, "key": stack.key}  # type: ignore[attr-defined]


@pytest.mark.parametrize("use_jwt", [True, False])
def test_stream_iterates_the_preview_then_the_result(stack: GatewayStack, use_jwt: bool) -> None:
    events = list(stream("local/stylize", INPUT, use_jwt=use_jwt, **auth(stack)))
    assert [(e.get("partial", False), e.get("step")) for e in events] == [(True, 1), (False, None)]
    assert result_image(events[-1]).size == (256, 256) and events[-1]["seed"] == 5


def test_run_returns_the_result_and_bytes_become_a_data_url(stack: GatewayStack) -> None:
    result = run("local/echo", INPUT, **auth(stack))
    assert result_image(result).size == (256, 256)


async def test_the_async_forms(stack: GatewayStack) -> None:
    events = [event async for event in stream_async("local/stylize", INPUT, **auth(stack))]
    assert events[0]["partial"] is True and "partial" not in events[-1]
    assert (await run_async("local/stylize", INPUT, use_jwt=False, **auth(stack)))["images"][0]["width"] == 256


def test_errors_carry_the_servers_code(stack: GatewayStack) -> None:
    with pytest.raises(RealtimeError) as refused:
        run("local/echo", {"prompt": "no picture"}, **auth(stack))
    assert refused.value.error == "VALIDATION_ERROR" and "image" in refused.value.reason
    with pytest.raises(RealtimeError) as unknown:
        list(stream("no/such-app", INPUT, use_jwt=False, **auth(stack)))
    assert unknown.value.error == "APP_UNAVAILABLE"
    with pytest.raises(RealtimeError) as bad_key:
        run("local/echo", INPUT, base_url=stack.http, key="nobody:nothing", use_jwt=False)
    assert bad_key.value.error == "UNAUTHORIZED"


def test_the_command_line_streams_previews_into_the_output(stack: GatewayStack, tmp_path: Path) -> None:
    source, out = tmp_path / "in.png", tmp_path / "out.jpg"
    source.write_bytes(PNG)
    env = {**os.environ, "REALTIME_BASE_URL": stack.http, "REALTIME_KEY": stack.key}  # type: ignore[attr-defined]
    done = subprocess.run(
        [sys.executable, "-m", "realtime_site.client", "local/stylize", "--prompt", "fire", "--image", str(source),
         "--out", str(out), "--size", "256", "--stream"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("step 1/2: 64x64 preview at ") and lines[-1].startswith(f"-> {out} (256x256")
    with Image.open(out) as image:
        assert image.size == (256, 256)
    both = subprocess.run(
        [sys.executable, "-m", "realtime_site.client", "local/stylize", "--prompt", "x", "--image", str(source),
         "--out", str(out), "--stream", "--watch"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert both.returncode == 2 and "choose one" in both.stderr
