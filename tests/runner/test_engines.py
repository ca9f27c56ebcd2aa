"""Engines in-process: the real stylize model, echo, and apps that cannot load."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from realtime_site.protocol import ImageRequest, ValidationError
from realtime_site.runner.apps import AppState, RunnerApp
from realtime_site.runner.config import AppSpec
from realtime_site.runner.engines.base import Preview
from realtime_site.runner.engines.echo import EchoEngine
from realtime_site.runner.engines.stylize import MODEL_FILE, StylizeEngine, packaged_model_dir
from tests.conftest import drawing, encode


@pytest.fixture(scope="module")
def stylize() -> StylizeEngine:
    engine = StylizeEngine({})
    engine.load()
    return engine


def request(image: bytes, **fields: object) -> ImageRequest:
    return ImageRequest(**{"prompt": "starry", "image": image, "width": 128, "height": 128, **fields})


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def test_stylize_output_has_the_requested_size_and_format(stylize: StylizeEngine) -> None:
    out = stylize.infer(request(encode(drawing(200, 300)), width=192, height=64, output_format="png"), seed=1)
    assert (out.width, out.height, out.content_type) == (192, 64, "image/png")
    assert Image.open(io.BytesIO(out.image)).size == (192, 64)


def test_stylize_same_seed_same_image_other_seed_other_image(stylize: StylizeEngine) -> None:
    source = encode(drawing(128, 128), "PNG")
    first = stylize.infer(request(source, output_format="png", strength=1.0), seed=7).image
    again = stylize.infer(request(source, output_format="png", strength=1.0), seed=7).image
    other = stylize.infer(request(source, output_format="png", strength=1.0), seed=8).image
    assert first == again
    assert np.abs(pixels(first) - pixels(other)).mean() > 1.0


def test_stylize_strength_blends_with_the_input(stylize: StylizeEngine) -> None:
    source = encode(drawing(128, 128), "PNG")
    original = pixels(source)
    keep = pixels(stylize.infer(request(source, output_format="png", strength=0.0), seed=1).image)
    half = pixels(stylize.infer(request(source, output_format="png", strength=0.5), seed=1).image)
    full = pixels(stylize.infer(request(source, output_format="png", strength=1.0), seed=1).image)
    assert np.abs(keep - original).max() <= 1
    distance_half, distance_full = np.abs(half - original).mean(), np.abs(full - original).mean()
    assert 5 < distance_half < distance_full


def test_stylize_prompt_changes_the_style(stylize: StylizeEngine) -> None:
    source = encode(drawing(128, 128), "PNG")
    fire = pixels(stylize.infer(request(source, prompt="fire", output_format="png", strength=1.0), seed=1).image)
    frost = pixels(stylize.infer(request(source, prompt="frost", output_format="png", strength=1.0), seed=1).image)
    assert np.abs(fire - frost).mean() > 10


def copy_model(tmp_path: Path) -> Path:
    source = packaged_model_dir()
    assert source is not None
    shutil.copy(source / MODEL_FILE, tmp_path / MODEL_FILE)
    return tmp_path / MODEL_FILE


def test_tampered_model_file_makes_the_app_unavailable(tmp_path: Path) -> None:
    model = copy_model(tmp_path)
    data = bytearray(model.read_bytes())
    data[-100] ^= 0xFF
    model.write_bytes(bytes(data))
    app = RunnerApp(AppSpec("test/tampered", "stylize", {"model_dir": str(tmp_path)}))
    app.load()
    assert app.state is AppState.UNAVAILABLE and "sha256" in (app.reason or "")


def test_missing_model_and_unknown_engine_are_unavailable_with_reasons(tmp_path: Path) -> None:
    missing = RunnerApp(AppSpec("test/missing", "stylize", {"model_dir": str(tmp_path)}))
    missing.load()
    assert missing.state is AppState.UNAVAILABLE and "model file missing" in (missing.reason or "")
    unknown = RunnerApp(AppSpec("test/unknown", "nosuch"))
    unknown.load()
    assert unknown.state is AppState.UNAVAILABLE and "'nosuch' is not part of this build" in (unknown.reason or "")
    bad_option = RunnerApp(AppSpec("test/bad", "stylize", {"threads": "many"}))
    bad_option.load()
    assert bad_option.state is AppState.UNAVAILABLE and "threads" in (bad_option.reason or "")


def test_echo_passes_matching_input_through_and_reencodes_otherwise() -> None:
    engine = EchoEngine({})
    source = encode(drawing(128, 128))
    same = engine.infer(request(source), seed=0)
    assert same.image == source
    resized = engine.infer(request(source, width=64, height=64, output_format="webp"), seed=0)
    assert resized.content_type == "image/webp" and Image.open(io.BytesIO(resized.image)).size == (64, 64)
    with pytest.raises(ValidationError, match="truncated"):
        engine.infer(request(source[:-200]), seed=0)


def test_stylize_previews_a_quarter_size_pass_and_the_result_is_unchanged() -> None:
    engine = StylizeEngine({"threads": "1"})
    engine.load()
    request = ImageRequest(prompt="mosaic", image=encode(drawing(256, 192), "PNG"), width=256, height=192)
    shown: list[Preview] = []
    final = engine.infer_with_previews(request, 4, shown.append)
    assert [(p.step, p.steps, p.output.width, p.output.height) for p in shown] == [(1, 2, 64, 48)]
    assert Image.open(io.BytesIO(shown[0].output.image)).format == "JPEG"
    assert final.image == engine.infer(request, 4).image
