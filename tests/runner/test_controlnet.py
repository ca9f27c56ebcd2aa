"""ControlNet and the SDXL family on the CPU: tiny random-weight pipelines (SD- and SDXL-shaped) and
ControlNets made from their UNets, built here and loaded by the real loading code with
HF_HUB_OFFLINE=1; through the engines and end to end through the runner at 64x64."""

from __future__ import annotations

import asyncio
import io
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from realtime_site.protocol import ImageRequest, ValidationError
from realtime_site.runner.apps import AppState, RunnerApp
from realtime_site.runner.config import AppSpec
from tests.conftest import RunnerProcess, encode, start_runner
from tests.runner.wsclient import open_ws, pack, recv, recv_result

pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")

from realtime_site.runner.engines.diffusion import LcmEngine, TurboEngine  # noqa: E402
from tests.runner.tiny_pipeline import build, build_controlnet, build_lora, build_sdxl  # noqa: E402


def drawing(shape: str) -> bytes:
    img = Image.new("RGB", (64, 64), "white")
    pen = ImageDraw.Draw(img)
    if shape == "line":
        pen.line((0, 0, 64, 64), fill="black", width=4)
    else:
        pen.ellipse((10, 10, 54, 54), outline="black", width=4)
    return encode(img, "PNG")


LINE, CIRCLE = drawing("line"), drawing("circle")
RED = encode(Image.new("RGB", (64, 64), (200, 30, 30)), "PNG")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """family -> (pipeline folder, ControlNet folder)."""
    sd = build(tmp_path_factory.mktemp("tiny-sd"))
    sdxl = build_sdxl(tmp_path_factory.mktemp("tiny-sdxl"))
    return {
        "sd": (sd, build_controlnet(sd, sd.parent)),
        "sdxl": (sdxl, build_controlnet(sdxl, sdxl.parent)),
    }


ENGINES = {"lcm": LcmEngine, "turbo": TurboEngine}
_loaded: dict[tuple[str, str], LcmEngine | TurboEngine] = {}


def engine_for(weights: dict[str, tuple[Path, Path]], family: str, kind: str) -> LcmEngine | TurboEngine:
    if (family, kind) not in _loaded:
        model, controlnet = weights[family]
        engine = ENGINES[kind]({"model": str(model), "controlnet": str(controlnet)})
        engine.load()
        engine.warm_up()
        _loaded[family, kind] = engine
    return _loaded[family, kind]


@pytest.fixture(
    scope="module", params=[("sd", "lcm"), ("sd", "turbo"), ("sdxl", "lcm"), ("sdxl", "turbo")], ids="-".join
)
def engine(request: pytest.FixtureRequest, weights: dict[str, tuple[Path, Path]]) -> LcmEngine | TurboEngine:
    return engine_for(weights, *request.param)


def frame(**fields: object) -> ImageRequest:
    base = {"prompt": "a cat", "image": LINE, "width": 64, "height": 64, "strength": 0.6, "output_format": "png"}
    return ImageRequest(**{**base, **fields})


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def test_the_family_is_read_from_the_weights_and_the_app_says_what_it_follows(engine: LcmEngine) -> None:
    details = engine.describe()
    assert details["family"] == ("sdxl" if "xl" in str(engine.model) else "sd")
    assert details["conditioning"] == ["image", "controlnet"]
    assert "ignores" not in details  # with a ControlNet, its inputs are used


def test_the_result_follows_the_lines_of_the_input_picture(engine: LcmEngine) -> None:
    line, again, circle = (engine.infer(frame(image=image), 1).image for image in (LINE, LINE, CIRCLE))
    assert line == again
    assert line != circle


def test_a_control_image_of_its_own_makes_the_picture_the_starting_image(engine: LcmEngine) -> None:
    assert engine.mode(frame(control_image=LINE)) == "image+lines"
    line, again, circle = (engine.infer(frame(image=RED, control_image=c), 1).image for c in (LINE, LINE, CIRCLE))
    assert line == again and line != circle
    # The picture matters too (image to image), and so does the strength (the denoising steps that
    # run are steps x strength, rounded down: 2 x 0.6 and 2 x 0.9 are both one).
    assert engine.infer(frame(image=CIRCLE, control_image=LINE), 1).image != line
    assert engine.infer(frame(image=RED, control_image=LINE, strength=1.0), 1).image != line


def test_scale_and_guidance_end_change_the_result_and_scale_zero_is_image_to_image(engine: LcmEngine) -> None:
    base = engine.infer(frame(), 1).image
    assert engine.infer(frame(controlnet_conditioning_scale=1.8), 1).image != base
    assert (
        engine.infer(frame(control_guidance_end=0.3, num_inference_steps=4), 1).image
        != engine.infer(frame(num_inference_steps=4), 1).image
    )
    assert engine.mode(frame(controlnet_conditioning_scale=0.0)) == "image"
    assert engine.infer(frame(controlnet_conditioning_scale=0.0), 1).image != base


def test_a_batch_with_control_images_equals_one_by_one(engine: LcmEngine) -> None:
    for extra in ({}, {"image": RED}):  # text to image with lines, then image to image with lines
        requests = [
            frame(prompt="a cat", control_image=LINE if extra else None, **extra),
            frame(prompt="a dog", image=CIRCLE) if not extra else frame(prompt="a dog", control_image=CIRCLE, **extra),
            frame(prompt="a cat", control_image=LINE if extra else None, **extra),
        ]
        seeds = [3, 4, 5]
        assert len({engine.batch_key(r) for r in requests}) == 1
        alone = [pixels(engine.infer(r, s).image) for r, s in zip(requests, seeds, strict=True)]
        together = [pixels(o.image) for o in engine.infer_batch(requests, seeds)]
        for one, batched in zip(alone, together, strict=True):
            assert np.abs(one - batched).max() <= 2  # float rounding of batched matrix products


def test_modes_and_control_settings_never_share_a_call(engine: LcmEngine) -> None:
    keys = {
        engine.batch_key(r)
        for r in (
            frame(),
            frame(control_image=LINE),
            frame(controlnet_conditioning_scale=0.0),
            frame(controlnet_conditioning_scale=0.5),
            frame(control_guidance_end=0.5),
        )
    }
    assert len(keys) == 5
    # Text to image ignores the strength, so frames differing only in it still share a call.
    assert engine.batch_key(frame(strength=0.2)) == engine.batch_key(frame(strength=0.9))


def test_the_prompt_cache_holds_with_a_controlnet(engine: LcmEngine) -> None:
    engine.infer(frame(prompt="a cached prompt"), 1)
    before = engine.prompt_encodings
    for extra in ({}, {"control_image": CIRCLE}, {"controlnet_conditioning_scale": 0.0}):
        engine.infer(frame(prompt="a cached prompt", **extra), 2)
    assert engine.prompt_encodings == before


def test_previews_with_a_controlnet(engine: LcmEngine) -> None:
    shown = []
    final = engine.infer_with_previews(frame(num_inference_steps=3), 5, shown.append)
    assert [(p.step, p.steps) for p in shown] == [(1, 3), (2, 3)]
    assert final.image == engine.infer(frame(num_inference_steps=3), 5).image


@pytest.mark.parametrize(
    ("control", "reason"),
    [
        (b"not an image", "is not a PNG, JPEG or WebP image"),
        (LINE[:60], "is truncated or corrupt"),
        (encode(Image.new("RGB", (1, 5000)), "PNG"), "is 1x5000; each side may be at most 4096 pixels"),
    ],
    ids=["not-an-image", "truncated", "too-tall"],
)
def test_a_bad_control_image_is_a_named_error(engine: LcmEngine, control: bytes, reason: str) -> None:
    with pytest.raises(ValidationError) as caught:
        engine.infer(frame(image=RED, control_image=control), 1)
    assert caught.value.field == "control_image"
    assert reason in caught.value.reason


def test_without_a_controlnet_a_control_image_is_refused_and_its_settings_are_ignored(
    weights: dict[str, tuple[Path, Path]],
) -> None:
    engine = TurboEngine({"model": str(weights["sdxl"][0])})
    engine.load()
    assert engine.describe()["conditioning"] == ["image"]
    assert engine.describe()["ignores"] == ["controlnet_conditioning_scale", "control_guidance_end"]
    assert "REALTIME_TURBO_CONTROLNET is not set" in (engine.control_refusal() or "")
    assert engine.mode(frame()) == "image"
    assert engine.infer(frame(controlnet_conditioning_scale=1.5), 1).image == engine.infer(frame(), 1).image


def test_a_controlnet_of_the_other_family_makes_the_app_unavailable(weights: dict[str, tuple[Path, Path]]) -> None:
    app = RunnerApp(AppSpec("x/y", "lcm", {"model": str(weights["sdxl"][0]), "controlnet": str(weights["sd"][1])}))
    app.load()
    assert app.state is AppState.UNAVAILABLE
    assert "an SD 1.5 ControlNet on SDXL, or the other way round" in (app.reason or "")
    missing = RunnerApp(AppSpec("x/y", "lcm", {"model": str(weights["sd"][0]), "controlnet": "/nowhere/net"}))
    missing.load()
    assert missing.state is AppState.UNAVAILABLE and "cannot load" in (missing.reason or "")


@pytest.fixture(scope="module")
def controlnet_runner(weights: dict[str, tuple[Path, Path]]) -> Iterator[RunnerProcess]:
    model, controlnet = weights["sdxl"]
    runner = start_runner(
        "--apps",
        "fal-ai/fast-turbo-diffusion=turbo?max_batch=4,local/echo",
        env={"HF_HUB_OFFLINE": "1", "REALTIME_TURBO_MODEL": str(model), "REALTIME_TURBO_CONTROLNET": str(controlnet)},
        timeout=180,
    )
    yield runner
    runner.stop()


async def test_through_the_runner_with_a_victim_session_open(controlnet_runner: RunnerProcess) -> None:
    """Control images good and bad from one connection, batched with others: the bad ones get named
    errors, the connection and a victim connection of another client keep getting their results."""
    url = controlnet_runner.url("fal-ai/fast-turbo-diffusion")
    fields = {"prompt": "a cat", "width": 64, "height": 64, "output_format": "png", "seed": 7}
    with urllib.request.urlopen(f"http://127.0.0.1:{controlnet_runner.port}/healthz", timeout=10) as response:
        health = json.load(response)
    (app,) = [a for a in health["apps"] if a["id"] == "fal-ai/fast-turbo-diffusion"]
    assert app["details"]["conditioning"] == ["image", "controlnet"] and app["details"]["family"] == "sdxl"

    async with await open_ws(url) as victim, await open_ws(url) as attacker:

        async def victim_results(count: int) -> list[bytes]:
            images = []
            for n in range(count):
                await victim.send(pack(**fields, image_bytes=LINE, request_id=f"v{n}"))
                images.append((await recv_result(victim, timeout=120))["images"][0]["content"])
            return images

        async def attack() -> list[dict]:
            answers = []
            for control in (b"junk", LINE[:60], CIRCLE, "not bytes"):
                key = "control_image_bytes" if isinstance(control, bytes) else "control_image_url"
                await attacker.send(pack(**fields, image_bytes=RED, **{key: control}))
                answers.append(await recv(attacker, timeout=120))
            return answers

        victim_images, answers = await asyncio.gather(victim_results(6), attack())
    assert len(set(victim_images)) == 1  # the same frame: the same result every time, batched or not
    errors = [a for a in answers if a.get("type") == "x-fal-error"]
    assert [e["error"] for e in errors] == ["VALIDATION_ERROR"] * 3
    assert "control_image" in errors[0]["reason"] and "not a PNG, JPEG or WebP" in errors[0]["reason"]
    assert "truncated or corrupt" in errors[1]["reason"]
    assert "control_image_url" in errors[2]["reason"] and "data:image" in errors[2]["reason"]
    assert [a for a in answers if "images" in a]  # the good one between them got its picture


async def test_the_lines_through_the_runner_follow_the_drawing(controlnet_runner: RunnerProcess) -> None:
    url = controlnet_runner.url("fal-ai/fast-turbo-diffusion")
    fields = {"prompt": "a cat", "width": 64, "height": 64, "output_format": "png", "seed": 7}
    async with await open_ws(url) as ws:
        results = []
        for extra in (
            {"image_bytes": LINE},
            {"image_bytes": CIRCLE},
            {"image_bytes": RED, "control_image_bytes": LINE},
            {"image_bytes": LINE, "controlnet_conditioning_scale": 0},
        ):
            await ws.send(pack(**fields, **extra))
            results.append((await recv_result(ws, timeout=120))["images"][0]["content"])
    assert len(set(results)) == 4


@pytest.mark.parametrize("extra", [{}, {"controlnet_conditioning_scale": 0.0}], ids=["lines", "image"])
def test_a_frame_between_prompts_and_seeds_batches_like_one_by_one(engine: LcmEngine, extra: dict) -> None:
    """Travel's frames (blended embeddings, blended initial noise) in one call with plain ones."""
    requests = [
        frame(prompt="a dog", prompt_blend=((("a cat", ""), 0.5), (("a dog", ""), 0.5)), **extra),
        frame(seed_blend=((1, 0.6), (2, 0.8)), **extra),
        frame(prompt="a fox", **extra),
    ]
    seeds = [1, 2, 3]
    alone = [pixels(engine.infer(r, s).image) for r, s in zip(requests, seeds, strict=True)]
    together = [pixels(o.image) for o in engine.infer_batch(requests, seeds)]
    for one, batched in zip(alone, together, strict=True):
        assert np.abs(one - batched).max() <= 2
    # The tiny random text encoder moves the picture little, the noise a lot.
    assert engine.infer(requests[0], 1).image != engine.infer(frame(prompt="a dog", **extra), 1).image
    assert np.abs(alone[1] - pixels(engine.infer(frame(**extra), 2).image)).max() > 50
    blended = engine._embeddings(requests[0], guided=False)
    cat, dog = (engine._encode_prompt(p, "", False) for p in ("a cat", "a dog"))
    for mixed, one, other in zip(blended, cat, dog, strict=True):
        if mixed is not None:
            assert np.allclose(mixed.numpy(), 0.5 * one.numpy() + 0.5 * other.numpy(), atol=1e-6)


@pytest.mark.parametrize("extra", [{}, {"controlnet_conditioning_scale": 0}], ids=["lines", "image"])
async def test_prompt_and_seed_travel_through_the_runner(controlnet_runner: RunnerProcess, extra: dict) -> None:
    url = controlnet_runner.url("fal-ai/fast-turbo-diffusion")
    fields = {"image_bytes": LINE, "width": 64, "height": 64, "output_format": "png", **extra}

    async def results(*frames: dict) -> list[bytes]:
        async with await open_ws(url) as ws:  # one session: travel is a session's
            images = []
            for fields_ in frames:
                await ws.send(pack(**fields, **fields_))
                images.append((await recv_result(ws, timeout=120))["images"][0]["content"])
            return images

    (cat,), (dog,), (seed_2,) = [
        await results(alone)
        for alone in ({"prompt": "a cat", "seed": 1}, {"prompt": "a dog", "seed": 1}, {"prompt": "a cat", "seed": 2})
    ]
    prompts = ["a cat", "a dog", "a dog", "a dog"]
    glide = await results(*({"prompt": p, "seed": 1, "prompt_transition_frames": 3} for p in prompts))
    assert glide[0] == cat and glide[3] == dog  # it starts at the old prompt and arrives at the new one
    assert len({cat, dog, glide[1], glide[2]}) == 4  # on the way: neither
    jump = await results({"prompt": "a cat", "seed": 1}, {"prompt": "a dog", "seed": 1})
    assert jump == [cat, dog]  # not asked for: no travel
    seeds = await results(*({"prompt": "a cat", "seed": s, "seed_transition_frames": 2} for s in (1, 2, 2)))
    assert seeds[0] == cat and seeds[2] == seed_2 and seeds[1] not in (cat, seed_2)


def test_compiled_with_a_controlnet_gives_the_eager_result(weights: dict[str, tuple[Path, Path]]) -> None:
    """torch.compile (mode default: max-autotune would spend minutes of CPU) on the UNet and the
    ControlNet, shared by the three pipelines; one frame along the lines, as the eager engine makes it."""
    model, controlnet = weights["sd"]
    compiled = TurboEngine({"model": str(model), "controlnet": str(controlnet), "compile": "default"})
    compiled.load()
    pipes = compiled._pipes
    assert pipes is not None and pipes.lines is not None and pipes.image_lines is not None
    assert type(pipes.image.unet).__name__ == "OptimizedModule"
    assert pipes.lines.unet is pipes.image.unet is pipes.image_lines.unet
    assert type(pipes.lines.controlnet).__name__ == "OptimizedModule"
    assert pipes.lines.controlnet is pipes.image_lines.controlnet
    eager = engine_for(weights, "sd", "turbo")
    assert np.abs(pixels(compiled.infer(frame(), 3).image) - pixels(eager.infer(frame(), 3).image)).max() <= 2
    with pytest.raises(ValueError, match="option compile='fast' must be 0, 1 or one of default"):
        TurboEngine({"model": str(model), "compile": "fast"})


def test_an_lcm_lora_is_merged_into_the_unet_at_load(weights: dict[str, tuple[Path, Path]]) -> None:
    model, controlnet = weights["sd"]
    lora = build_lora(model, model.parent)
    merged = LcmEngine({"model": str(model), "lcm_lora": str(lora), "controlnet": str(controlnet)})
    merged.load()
    plain = engine_for(weights, "sd", "lcm")
    for extra in ({}, {"controlnet_conditioning_scale": 0.0}):  # along the lines and image to image
        assert merged.infer(frame(**extra), 1).image != plain.infer(frame(**extra), 1).image
        assert merged.infer(frame(**extra), 1).image == merged.infer(frame(**extra), 1).image
    assert merged.describe()["lcm_lora"] == str(lora)
    assert not any("lora" in name for name, _ in merged._pipes.image.unet.named_parameters())  # fused, not kept
    assert TurboEngine({"model": str(model), "lcm_lora": str(lora)}).lcm_lora is None  # turbo is distilled already
    missing = RunnerApp(AppSpec("x/y", "lcm", {"model": str(model), "lcm_lora": "/nowhere/lora"}))
    missing.load()
    assert missing.state is AppState.UNAVAILABLE and "cannot load" in (missing.reason or "")
