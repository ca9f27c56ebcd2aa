"""The diffusion engines on the CPU: a tiny random-weight pipeline built here, loaded by the real
loading code with HF_HUB_OFFLINE=1, end to end through the runner at 64x64."""

from __future__ import annotations

import asyncio
import importlib.util
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from realtime_site.protocol import ImageRequest
from realtime_site.runner.apps import AppState, RunnerApp
from realtime_site.runner.config import AppSpec
from realtime_site.runner.engines.base import Preview
from tests.conftest import RunnerProcess, encode, start_runner
from tests.runner.wsclient import open_ws, pack, recv_result

pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")

from realtime_site.runner.engines.diffusion import LcmEngine, TurboEngine  # noqa: E402
from tests.runner.tiny_pipeline import build  # noqa: E402

RED = encode(Image.new("RGB", (64, 64), (200, 30, 30)), "PNG")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def engine(tiny: Path) -> LcmEngine:
    engine = LcmEngine({"model": str(tiny)})
    engine.load()
    engine.warm_up()
    return engine


def request(**fields: object) -> ImageRequest:
    base = {"prompt": "a red square", "image": RED, "width": 64, "height": 64, "strength": 0.6, "output_format": "png"}
    return ImageRequest(**{**base, **fields})


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def test_same_seed_same_image_other_seed_other_image(engine: LcmEngine) -> None:
    first, again, other = (engine.infer(request(), seed) for seed in (1, 1, 2))
    assert first.image == again.image and first.image != other.image
    assert Image.open(io.BytesIO(first.image)).size == (64, 64)


def test_a_batch_gives_the_same_images_as_one_by_one(engine: LcmEngine) -> None:
    requests = [request(prompt="a red square"), request(prompt="a blue circle"), request()]
    seeds = [3, 4, 5]
    one_by_one = [pixels(engine.infer(r, s).image) for r, s in zip(requests, seeds, strict=True)]
    batched = [pixels(o.image) for o in engine.infer_batch(requests, seeds)]
    for alone, together in zip(one_by_one, batched, strict=True):
        # Equal up to float rounding: batched matrix products may sum in another order.
        assert np.abs(alone - together).max() <= 2


def test_the_same_prompt_does_not_run_the_text_encoder_again(engine: LcmEngine) -> None:
    engine.infer(request(prompt="a cached prompt"), 1)
    before = engine.prompt_encodings
    engine.infer(request(prompt="a cached prompt"), 2)
    engine.infer(request(prompt="a cached prompt", strength=0.9), 3)
    assert engine.prompt_encodings == before


def test_previews_show_each_step_but_the_last_and_change_nothing(engine: LcmEngine) -> None:
    shown: list[Preview] = []
    final = engine.infer_with_previews(request(num_inference_steps=8, strength=0.5), 5, shown.append)
    # 8 steps at strength 0.5 run 4 denoising steps: previews after steps 1 to 3, then the result.
    assert [(p.step, p.steps) for p in shown] == [(1, 4), (2, 4), (3, 4)]
    for preview in shown:
        assert preview.output.content_type == "image/jpeg"
        assert Image.open(io.BytesIO(preview.output.image)).size == (64, 64)
    assert final.image == engine.infer(request(num_inference_steps=8, strength=0.5), 5).image


def test_turbo_runs_at_least_one_step_whatever_the_strength(tiny: Path) -> None:
    engine = TurboEngine({"model": str(tiny)})
    engine.load()
    weak = engine.infer(request(strength=0.1, num_inference_steps=1), 1)  # 1 step x 0.1 would be none
    assert Image.open(io.BytesIO(weak.image)).size == (64, 64)
    untouched = engine.infer(request(strength=0.0), 1)
    assert untouched.width == 64


def unavailable(spec: AppSpec) -> str:
    app = RunnerApp(spec)
    app.load()
    assert app.state is AppState.UNAVAILABLE
    return app.reason or ""


def test_unavailable_apps_say_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.delenv("REALTIME_LCM_MODEL", raising=False)
    assert "set REALTIME_LCM_MODEL" in unavailable(AppSpec("fal-ai/fast-lcm-diffusion", "lcm"))
    assert "cannot load" in unavailable(AppSpec("x/y", "turbo", {"model": str(tmp_path / "nothing")}))
    import torch

    if not torch.cuda.is_available():
        assert "no CUDA GPU" in unavailable(AppSpec("x/y", "lcm", {"model": str(tmp_path), "device": "cuda"}))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    assert "torch not installed: pip install -r requirements-gpu.txt" in unavailable(AppSpec("x/y", "lcm"))


@pytest.fixture(scope="module")
def diffusion_runner(tiny: Path) -> Iterator[RunnerProcess]:
    runner = start_runner(
        "--apps", f"fal-ai/fast-lcm-diffusion=lcm?model={tiny}&max_batch=4", env={"HF_HUB_OFFLINE": "1"}
    )
    yield runner
    runner.stop()


async def test_end_to_end_through_the_runner(diffusion_runner: RunnerProcess) -> None:
    url = diffusion_runner.url("fal-ai/fast-lcm-diffusion")
    fields = {"prompt": "a cat", "image_bytes": RED, "width": 64, "height": 64, "strength": 0.7, "output_format": "png"}
    async with await open_ws(url) as ws:
        await ws.send(pack(**fields, seed=7, request_id=1))
        first = await recv_result(ws, timeout=120)
        await ws.send(pack(**fields, seed=7, request_id=2))
        second = await recv_result(ws, timeout=120)
    assert first["images"][0]["content"] == second["images"][0]["content"]
    assert Image.open(io.BytesIO(first["images"][0]["content"])).size == (64, 64)

    async def one(seed: int) -> bytes:  # several connections at once: the runner batches them
        async with await open_ws(url) as ws:
            await ws.send(pack(**fields, seed=seed))
            return (await recv_result(ws, timeout=120))["images"][0]["content"]

    together = await asyncio.gather(*(one(seed) for seed in (7, 8, 9)))
    assert np.abs(pixels(together[0]) - pixels(first["images"][0]["content"])).max() <= 2
    assert len(set(together)) == 3


async def test_previews_through_the_runner(diffusion_runner: RunnerProcess) -> None:
    url = diffusion_runner.url("fal-ai/fast-lcm-diffusion", "previews=1")
    fields = {"prompt": "a cat", "image_bytes": RED, "width": 64, "height": 64, "strength": 0.5, "seed": 7}
    async with await open_ws(url) as ws:
        await ws.send(pack(**fields, num_inference_steps=6, request_id="p"))
        messages = [await recv_result(ws, timeout=120) for _ in range(3)]
    assert [(m.get("partial"), m.get("step"), m.get("steps")) for m in messages] == [
        (True, 1, 3),
        (True, 2, 3),
        (None, None, None),
    ]
    assert all(m["request_id"] == "p" and m["seed"] == 7 for m in messages)
