"""``local/echo``: no model. The input image comes back at the requested size and format.

When the input already has that size and format and is structurally complete, its bytes are
returned as they are (nothing to re-encode); otherwise it is decoded and re-encoded. ``delay_ms``
makes a deliberately slow engine for tests and benchmarks of the scheduler; with ``steps`` above 1
the delay is spent in that many steps, each shown as a preview when previews are asked for (a
stand-in for a diffusion engine's denoising steps, for tests of streaming and cancelling), small like
every engine's previews.
"""

from __future__ import annotations

import time
from typing import Any

from realtime_site.protocol import OUTPUT_FORMATS, ImageRequest, ValidationError
from realtime_site.runner.engines.base import (
    Engine,
    EngineOutput,
    OnPreview,
    Preview,
    encode_preview,
    option_float,
    option_int,
)
from realtime_site.runner.imaging import decode_image, encode_image, is_complete, quick_probe


class EchoEngine(Engine):
    name = "echo"
    ignores = ("prompt", "negative_prompt", "strength", "num_inference_steps", "guidance_scale", "seed")

    def __init__(self, options: dict[str, str]):
        self.delay = option_float(options, "delay_ms", 0.0, low=0.0, high=60_000.0) / 1000.0
        self.workers = option_int(options, "workers", 2, low=1, high=64)
        self.steps = option_int(options, "steps", 1, low=1, high=50)
        self.previews = self.steps > 1  # type: ignore[misc]  # per app, not per class

    def answer_without_work(self, request: ImageRequest) -> EngineOutput | None:
        return None if self.delay else self._pass_through(request)

    def infer(self, request: ImageRequest, seed: int) -> EngineOutput:
        return self.infer_with_previews(request, seed, None)

    def infer_with_previews(self, request: ImageRequest, seed: int, on_preview: OnPreview | None) -> EngineOutput:
        for step in range(1, self.steps + 1):
            if self.delay:
                time.sleep(self.delay / self.steps)
            if on_preview is not None and step < self.steps:
                preview = encode_preview(decode_image(request.image, request.width, request.height))
                on_preview(Preview(preview, step, self.steps))
        return self._echo(request)

    def _echo(self, request: ImageRequest) -> EngineOutput:
        same = self._pass_through(request)
        if same is not None:
            return same
        image = decode_image(request.image, request.width, request.height)
        data, content_type = encode_image(image, request.output_format)
        return EngineOutput(data, content_type, request.width, request.height)

    @staticmethod
    def _pass_through(request: ImageRequest) -> EngineOutput | None:
        """The input itself, when it already has the requested size and format."""
        probe = quick_probe(request.image)
        if probe is None or (probe.width, probe.height, probe.format) != (
            request.width,
            request.height,
            request.output_format,
        ):
            return None
        if not is_complete(request.image, probe.format):
            raise ValidationError("image", "is truncated or corrupt")
        return EngineOutput(request.image, OUTPUT_FORMATS[probe.format], probe.width, probe.height)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "delay_ms": self.delay * 1000, "steps": self.steps}
