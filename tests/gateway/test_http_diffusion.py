"""A diffusion app's image forming step by step over ``POST /{app}/stream``: the tiny random-weight
pipeline (built here, loaded by the real loading code offline) behind real daphne and a real runner;
a client that leaves mid-stream stops the denoising at its next step, and the engine serves on."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.conftest import RunnerProcess, encode, start_runner
from tests.gateway.stack import GatewayStack, start_stack

pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")

from tests.runner.tiny_pipeline import build  # noqa: E402  (after the skips: it imports torch)

APP = "fal-ai/fast-lcm-diffusion"
RED = encode(Image.new("RGB", (64, 64), (200, 30, 30)), "PNG")
INPUT = {
    "prompt": "a cat",
    "image_url": "data:image/png;base64," + base64.b64encode(RED).decode(),
    "image_size": {"width": 64, "height": 64},
    "strength": 0.5,
    "seed": 7,
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayStack, RunnerProcess, dict[str, str]]]:
    tiny: Path = build(tmp_path_factory.mktemp("tiny-sd"))
    runner = start_runner("--apps", f"{APP}=lcm?model={tiny}", env={"HF_HUB_OFFLINE": "1"}, timeout=300)
    try:
        stack = start_stack(tmp_path_factory.mktemp("http-diffusion"), [], {"RUNNER_URLS": runner.ws_base})
    except Exception:
        runner.kill()
        raise
    make = "get_user_model().objects.create_user('dora')"
    stack.manage("shell", "-c", f"from django.contrib.auth import get_user_model; {make}")
    key = {"Authorization": f"Key {stack.manage('create_api_key', 'dora').strip()}"}
    yield stack, runner, key
    stack.close()
    runner.kill()


def data_events(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


def test_the_image_forms_step_by_step(served) -> None:
    stack, _, key = served
    body = {**INPUT, "num_inference_steps": 6}  # strength 0.5: 3 denoising steps
    response = httpx.post(f"{stack.http}/{APP}/stream", json=body, headers=key, timeout=300)
    assert response.status_code == 200, response.text
    events = data_events(response.text)
    assert [(e.get("partial"), e.get("step"), e.get("steps")) for e in events] == [
        (True, 1, 3),
        (True, 2, 3),
        (None, None, None),
    ]
    assert all(e["images"][0]["url"].startswith("data:image/") for e in events)
    assert events[-1]["images"][0]["width"] == 64 and events[-1]["seed"] == 7


def test_leaving_stops_the_denoising_and_the_engine_serves_on(served) -> None:
    stack, runner, key = served
    body = {**INPUT, "strength": 1.0, "num_inference_steps": 8}
    with httpx.stream("POST", f"{stack.http}/{APP}/stream", json=body, headers=key, timeout=300) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                assert json.loads(line[6:])["step"] == 1
                break  # the first step's preview, then the client leaves
    deadline = time.monotonic() + 60
    while not any("input abandoned at step" in line for line in runner.output) and time.monotonic() < deadline:
        time.sleep(0.1)
    abandoned = [line for line in runner.output if "input abandoned at step" in line]
    assert abandoned and int(re.search(r"at step (\d+) of 8", abandoned[-1])[1]) < 8  # type: ignore[index]
    after = httpx.post(f"{stack.http}/{APP}", json=INPUT, headers=key, timeout=300)
    assert after.status_code == 200 and after.json()["images"][0]["width"] == 64
