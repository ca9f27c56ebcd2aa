"""``lcm`` and ``turbo``: diffusers image-to-image pipelines from weights on local disk.

``lcm``: Stable Diffusion 1.5 or SDXL with the latent-consistency scheduler (an LCM-distilled model or
LCM-LoRA merged in); ``turbo``: SD-Turbo or SDXL-Turbo. Both need ``requirements-gpu.txt`` (torch,
diffusers, transformers, accelerate) and their weights: a local folder in diffusers layout or an
offline Hugging Face cache id, from the option ``model`` or ``REALTIME_LCM_MODEL`` /
``REALTIME_TURBO_MODEL``. Nothing is ever downloaded (``local_files_only``). Without torch, weights or
a GPU that was asked for, the app is unavailable with that reason and the runner serves the rest.

Options (``--apps fal-ai/fast-turbo-diffusion=turbo?dtype=float16&compile=1``): ``model``, ``dtype``
(``auto``: float16 on CUDA, float32 on the CPU), ``device`` (``auto``, ``cuda``, ``cpu``), ``taesd``
(a tiny autoencoder folder, or ``REALTIME_TAESD_MODEL``), ``compile`` (torch.compile the UNet),
``max_batch`` (frames of several connections in one pipeline call; default 4), ``channels_last``.
"""

from __future__ import annotations

import collections
import importlib.util
import math
import os
from typing import Any, ClassVar

from PIL import Image

from realtime_site.protocol import ImageRequest
from realtime_site.runner.engines.base import EngineOutput, EngineUnavailable, ImageEngine, ShowImage, option_int
from realtime_site.runner.imaging import decode_image, encode_image

__all__ = ["LcmEngine", "TurboEngine", "load_pipeline"]

PROMPT_CACHE_SIZE = 64


def _flag(options: dict[str, str], key: str, default: bool) -> bool:
    raw = options.get(key)
    return default if raw is None else raw.strip().lower() in ("1", "true", "yes", "on")


def load_pipeline(model: str, *, kind: str, dtype: Any, device: str, taesd: str | None = None) -> Any:
    """Load an image-to-image pipeline from local files only (the real loading code the tests use)."""
    import diffusers

    pipe = diffusers.AutoPipelineForImage2Image.from_pretrained(model, dtype=dtype, local_files_only=True)
    if kind == "lcm":
        pipe.scheduler = diffusers.LCMScheduler.from_config(pipe.scheduler.config)
    if taesd:
        pipe.vae = diffusers.AutoencoderTiny.from_pretrained(taesd, dtype=dtype, local_files_only=True)
    if getattr(pipe, "safety_checker", None) is not None:
        pipe.safety_checker = None  # it would black out frames of a drawing mid-stroke; not a moderation layer
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


class DiffusionEngine(ImageEngine):
    kind: ClassVar[str]
    model_env: ClassVar[str]
    default_steps: ClassVar[int]
    default_guidance: ClassVar[float]

    def __init__(self, options: dict[str, str]):
        self.model = options.get("model") or os.environ.get(self.model_env) or None
        self.taesd = options.get("taesd") or os.environ.get("REALTIME_TAESD_MODEL") or None
        self.dtype_name = options.get("dtype", "auto")
        self.device_name = options.get("device", "auto")
        self.compile = _flag(options, "compile", False)
        self.channels_last = _flag(options, "channels_last", True)
        self.max_batch = option_int(options, "max_batch", 4, low=1, high=64)
        self.workers = 1  # one pipeline; concurrency comes from batching
        self._pipe: Any = None
        self._prompts: collections.OrderedDict[tuple[str, str, bool], tuple[Any, ...]] = collections.OrderedDict()
        self.prompt_encodings = 0  # how often the text encoder ran (the cache's misses)

    # -- loading ------------------------------------------------------------------------------

    def load(self) -> None:
        missing = [name for name in ("torch", "diffusers", "transformers") if importlib.util.find_spec(name) is None]
        if missing:
            raise EngineUnavailable(f"{', '.join(missing)} not installed: pip install -r requirements-gpu.txt")
        if not self.model:  # checked before importing torch, which takes seconds
            raise EngineUnavailable(f"no weights: set {self.model_env} to a local diffusers folder or a cached id")
        try:
            import torch
        except ImportError as exc:
            raise EngineUnavailable(f"torch cannot be imported ({exc}): pip install -r requirements-gpu.txt") from None
        if self.device_name == "auto":
            self.device_name = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device_name == "cuda" and not torch.cuda.is_available():
            raise EngineUnavailable("device=cuda was asked for, but torch sees no CUDA GPU")
        if self.dtype_name == "auto":
            self.dtype_name = "float16" if self.device_name == "cuda" else "float32"
        dtype = getattr(torch, self.dtype_name, None)
        if not isinstance(dtype, torch.dtype):
            raise EngineUnavailable(f"unknown dtype {self.dtype_name!r}")
        try:
            self._pipe = load_pipeline(
                self.model, kind=self.kind, dtype=dtype, device=self.device_name, taesd=self.taesd
            )
        except (OSError, ValueError) as exc:
            raise EngineUnavailable(f"cannot load {self.model}: {exc}") from None
        if self.channels_last and self.device_name == "cuda":
            self._pipe.unet.to(memory_format=torch.channels_last)
        if self.compile:
            self._pipe.unet = torch.compile(self._pipe.unet, mode="max-autotune", fullgraph=True)

    def warm_up(self) -> None:
        side = 512 if self.device_name == "cuda" else 64
        image = Image.new("RGB", (side, side), "white")
        request = ImageRequest(prompt="warm up", image=b"", width=side, height=side, strength=0.5)
        self.transform_batch([image], [request], [0])

    # -- inference ----------------------------------------------------------------------------

    def _steps(self, request: ImageRequest) -> tuple[int, float]:
        """Steps to ask the pipeline for, so that ``steps * strength`` runs at least one denoising step."""
        steps = request.num_inference_steps or self.default_steps
        strength = request.strength
        return max(steps, math.ceil(1 / strength)), strength

    def _encode_prompt(self, prompt: str, negative: str, guided: bool) -> tuple[Any, ...]:
        key = (prompt, negative, guided)
        cached = self._prompts.get(key)
        if cached is not None:
            self._prompts.move_to_end(key)
            return cached
        self.prompt_encodings += 1
        encoded = self._pipe.encode_prompt(
            prompt=prompt,
            device=self.device_name,
            num_images_per_prompt=1,
            do_classifier_free_guidance=guided,
            negative_prompt=negative or None,
        )
        self._prompts[key] = tuple(encoded)
        if len(self._prompts) > PROMPT_CACHE_SIZE:
            self._prompts.popitem(last=False)
        return self._prompts[key]

    def transform(
        self, image: Image.Image, request: ImageRequest, seed: int, show: ShowImage | None = None
    ) -> Image.Image:
        return self.transform_batch([image], [request], [seed], show)[0]

    def transform_batch(
        self,
        images: list[Image.Image],
        requests: list[ImageRequest],
        seeds: list[int],
        show: ShowImage | None = None,
    ) -> list[Image.Image]:
        """One pipeline call for inputs that share ``batch_key``; each keeps its own prompt and seed.
        ``show`` (one input only) gets the image after each denoising step but the last."""
        import torch

        first = requests[0]
        if first.strength <= 0:
            return list(images)
        steps, strength = self._steps(first)
        guidance = first.guidance_scale if first.guidance_scale is not None else self.default_guidance
        guided = guidance > 1.0
        encoded = [self._encode_prompt(r.prompt, r.negative_prompt, guided) for r in requests]
        kwargs: dict[str, Any] = {
            "prompt_embeds": torch.cat([e[0] for e in encoded]),
            "negative_prompt_embeds": torch.cat([e[1] for e in encoded]) if guided else None,
        }
        if len(encoded[0]) == 4:  # SDXL: pooled embeddings too
            kwargs["pooled_prompt_embeds"] = torch.cat([e[2] for e in encoded])
            if guided:
                kwargs["negative_pooled_prompt_embeds"] = torch.cat([e[3] for e in encoded])
        if show is not None:
            kwargs["callback_on_step_end"] = self._previewer(show)
        generators = [torch.Generator(device=self.device_name).manual_seed(seed) for seed in seeds]
        with torch.inference_mode():
            result = self._pipe(
                image=images,
                num_inference_steps=steps,
                strength=strength,
                guidance_scale=guidance,
                generator=generators,
                output_type="pil",
                **kwargs,
            )
        return [
            img.resize((r.width, r.height)) if img.size != (r.width, r.height) else img
            for img, r in zip(result.images, requests, strict=True)
        ]

    def _previewer(self, show: ShowImage) -> Any:
        """A diffusers step callback that decodes the latents with the pipeline's own decoder (the
        fast TAESD one when ``taesd`` is set) and shows them, for every step but the last."""

        def on_step_end(pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            steps = int(getattr(pipe, "num_timesteps", 0) or 0)
            if index + 1 < steps:
                vae = pipe.vae
                latents = tensors["latents"] / getattr(vae.config, "scaling_factor", 1.0)
                decoded = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
                show(pipe.image_processor.postprocess(decoded, output_type="pil")[0], index + 1, steps)
            return tensors

        return on_step_end

    def batch_key(self, request: ImageRequest) -> tuple[Any, ...]:
        """Inputs with the same key can share one pipeline call."""
        return (request.width, request.height, request.num_inference_steps, request.strength, request.guidance_scale)

    def infer_batch(self, requests: list[ImageRequest], seeds: list[int]) -> list[EngineOutput]:
        images = [decode_image(r.image, r.width, r.height) for r in requests]
        outputs = []
        for image, request in zip(self.transform_batch(images, requests, seeds), requests, strict=True):
            data, content_type = encode_image(image, request.output_format)
            outputs.append(EngineOutput(data, content_type, *image.size))
        return outputs

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "model": self.model,
            "device": self.device_name,
            "dtype": self.dtype_name,
            "taesd": self.taesd,
            "compile": self.compile,
            "max_batch": self.max_batch,
            "prompt_cache": len(self._prompts),
        }


class LcmEngine(DiffusionEngine):
    name = "lcm"
    kind = "lcm"
    model_env = "REALTIME_LCM_MODEL"
    default_steps = 4
    default_guidance = 1.0


class TurboEngine(DiffusionEngine):
    name = "turbo"
    kind = "turbo"
    model_env = "REALTIME_TURBO_MODEL"
    default_steps = 2
    default_guidance = 0.0
