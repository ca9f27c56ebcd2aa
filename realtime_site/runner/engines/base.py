"""The engine interface: load, warm up, infer, describe.

An engine is created from its app's options (strings, from ``--apps``), loaded once in a worker
thread, and then called from at most ``workers`` threads at a time.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from PIL import Image

from realtime_site.protocol import ImageRequest
from realtime_site.runner.imaging import decode_image, encode_image

__all__ = [
    "Engine",
    "EngineOutput",
    "EngineUnavailable",
    "ImageEngine",
    "OnPreview",
    "Preview",
    "ShowImage",
    "encode_preview",
    "option_float",
    "option_int",
]

PREVIEW_MAX_SIDE = 256  # previews are small JPEGs: a glimpse of the image forming, not the result


class EngineUnavailable(Exception):
    """The engine cannot serve: missing package, weights or hardware. The message says which."""


@dataclass(frozen=True, slots=True)
class EngineOutput:
    image: bytes
    content_type: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Preview:
    """An intermediate image: ``step`` of ``steps`` (the final result is the last step)."""

    output: EngineOutput
    step: int
    steps: int


OnPreview = Callable[[Preview], None]  # called in the worker thread, in step order
ShowImage = Callable[[Image.Image, int, int], None]  # (image, step, steps), for ImageEngine.transform


class Engine(abc.ABC):
    name: ClassVar[str]
    workers: int = 1  # how many infer() calls may run at once
    max_batch: int = 1  # inputs of different connections in one infer_batch() call
    previews: ClassVar[bool] = False  # whether infer_with_previews shows intermediate images
    ignores: ClassVar[tuple[str, ...]] = ()  # input fields this engine reads and does nothing with

    def load(self) -> None:
        """Load weights; raise EngineUnavailable with the reason when that cannot be done."""

    def warm_up(self) -> None:
        """Run once before serving so the first user does not pay for lazy initialisation."""

    @abc.abstractmethod
    def infer(self, request: ImageRequest, seed: int) -> EngineOutput:
        """Answer one validated input. Runs in a worker thread, never on the event loop."""

    def infer_with_previews(self, request: ImageRequest, seed: int, on_preview: OnPreview) -> EngineOutput:
        """``infer``, telling ``on_preview`` of each intermediate image first (an engine without
        steps has none to tell)."""
        return self.infer(request, seed)

    def infer_batch(self, requests: list[ImageRequest], seeds: list[int]) -> list[EngineOutput]:
        """Several inputs that share ``batch_key``; engines that batch do it in one call."""
        return [self.infer(request, seed) for request, seed in zip(requests, seeds, strict=True)]

    def batch_key(self, request: ImageRequest) -> Any:
        return None

    def answer_without_work(self, request: ImageRequest) -> EngineOutput | None:
        """An answer that needs no pixel work (header checks at most), given on the event loop
        to save the thread hop; None sends the input to ``infer`` in a worker thread."""
        return None

    def conditioning(self) -> list[str]:
        """What a result can follow: ``image`` (the input picture), ``controlnet`` (its lines)."""
        return ["image"]

    def control_refusal(self) -> str | None:
        """Why a frame's control image cannot be followed here; None where it can."""
        return None if "controlnet" in self.conditioning() else "this app has no ControlNet to follow it"

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"engine": self.name, "workers": self.workers, "conditioning": self.conditioning()}
        if self.ignores:
            info["ignores"] = list(self.ignores)  # the drawing page greys these controls out
        return info


class ImageEngine(Engine):
    """An engine that maps an RGB image to an RGB image of the same size."""

    previews = True

    def infer(self, request: ImageRequest, seed: int) -> EngineOutput:
        return self._infer(request, seed, None)

    def infer_with_previews(self, request: ImageRequest, seed: int, on_preview: OnPreview) -> EngineOutput:
        def show(image: Image.Image, step: int, steps: int) -> None:
            on_preview(Preview(encode_preview(image), step, steps))

        return self._infer(request, seed, show)

    def _infer(self, request: ImageRequest, seed: int, show: ShowImage | None) -> EngineOutput:
        source = decode_image(request.image, request.width, request.height)
        result = self.transform(source, request, seed, show)
        data, content_type = encode_image(result, request.output_format)
        return EngineOutput(data, content_type, *result.size)

    @abc.abstractmethod
    def transform(
        self, image: Image.Image, request: ImageRequest, seed: int, show: ShowImage | None = None
    ) -> Image.Image:
        """The result for ``image``; ``show``, when given, is called with each intermediate image."""


def encode_preview(image: Image.Image) -> EngineOutput:
    """A small JPEG of an intermediate image (the longer side at most ``PREVIEW_MAX_SIDE``)."""
    scale = PREVIEW_MAX_SIDE / max(image.size)
    if scale < 1:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    data, content_type = encode_image(image, "jpeg")
    return EngineOutput(data, content_type, *image.size)


def option_int(options: dict[str, str], key: str, default: int, *, low: int, high: int) -> int:
    raw = options.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"option {key}={raw!r} is not an integer") from None
    if not low <= value <= high:
        raise ValueError(f"option {key}={value} must be from {low} to {high}")
    return value


def option_float(options: dict[str, str], key: str, default: float, *, low: float, high: float) -> float:
    raw = options.get(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"option {key}={raw!r} is not a number") from None
    if not low <= value <= high:
        raise ValueError(f"option {key}={value} must be from {low} to {high}")
    return value
