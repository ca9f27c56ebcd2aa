"""``lcm`` and ``turbo``: diffusers pipelines from weights on local disk, following the input picture
(image to image) and, with a ControlNet, the drawing's lines.

``lcm``: Stable Diffusion 1.5/2.1 or SDXL with the latent-consistency scheduler (an LCM-distilled model,
or LCM-LoRA merged in with ``lcm_lora`` / ``REALTIME_LCM_LORA``); ``turbo``: SD-Turbo or SDXL-Turbo.
The family is read from the weights. Both need ``requirements-gpu.txt`` (torch, diffusers,
transformers, accelerate) and their weights: a local folder in diffusers layout or an offline Hugging
Face cache id, from the option ``model`` or ``REALTIME_LCM_MODEL`` / ``REALTIME_TURBO_MODEL``. Nothing
is ever downloaded (``local_files_only``). Without torch, weights or a GPU that was asked for, the app
is unavailable with that reason and the runner serves the rest.

ControlNet (``controlnet``, or ``REALTIME_LCM_CONTROLNET`` / ``REALTIME_TURBO_CONTROLNET``; a scribble
or line-art one for the model's family): the input picture is the control image and the result is made
from noise (text to image following the lines); with ``control_image_bytes`` / ``control_image_url``
the input picture is the starting image and the other one the lines (image to image following them);
``controlnet_conditioning_scale`` 0 turns the ControlNet off for the frame (plain image to image).

Options (``--apps fal-ai/fast-turbo-diffusion=turbo?dtype=float16&compile=1``): ``model``, ``dtype``
(``auto``: float16 on CUDA, float32 on the CPU), ``device`` (``auto``, ``cuda``, ``cpu``), ``taesd``
(a tiny autoencoder folder, or ``REALTIME_TAESD_MODEL``), ``compile`` (torch.compile the UNet and the
ControlNet: ``1`` is mode max-autotune, or name a mode), ``max_batch`` (frames of several connections
in one pipeline call; default 4), ``channels_last``, ``controlnet``, ``lcm_lora``.
"""

from __future__ import annotations

import collections
import importlib.util
import math
import os
from dataclasses import replace
from typing import Any, ClassVar

from PIL import Image

from realtime_site.protocol import ImageRequest
from realtime_site.runner.engines.base import EngineOutput, EngineUnavailable, ImageEngine, ShowImage, option_int
from realtime_site.runner.engines.diffusion_loading import Pipelines, load_pipelines
from realtime_site.runner.engines.diffusion_travel import blend_embeddings, blended_noise, initial_noise
from realtime_site.runner.imaging import decode_image, encode_image

__all__ = ["LcmEngine", "TurboEngine"]

PROMPT_CACHE_SIZE = 64
DEFAULT_CONTROL_SCALE = 1.0
CONTROL_FIELDS = ("controlnet_conditioning_scale", "control_guidance_end")


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _compile_mode(options: dict[str, str]) -> str | None:
    """``compile``: off (the default), ``1`` (max-autotune, for serving) or a torch.compile mode."""
    raw = options.get("compile", "0").strip().lower()
    if raw in ("0", "false", "no", "off", ""):
        return None
    if raw in ("1", "true", "yes", "on"):
        return "max-autotune"
    if raw not in COMPILE_MODES:
        raise ValueError(f"option compile={raw!r} must be 0, 1 or one of {', '.join(COMPILE_MODES)}")
    return raw


def _flag(options: dict[str, str], key: str, default: bool) -> bool:
    raw = options.get(key)
    return default if raw is None else raw.strip().lower() in ("1", "true", "yes", "on")


class DiffusionEngine(ImageEngine):
    kind: ClassVar[str]
    model_env: ClassVar[str]
    controlnet_env: ClassVar[str]
    default_steps: ClassVar[int]  # image to image (times strength: the denoising steps that run)
    default_text_steps: ClassVar[int]  # text to image following the lines
    default_guidance: ClassVar[float]

    def __init__(self, options: dict[str, str]):
        self.model = options.get("model") or os.environ.get(self.model_env) or None
        self.controlnet = options.get("controlnet") or os.environ.get(self.controlnet_env) or None
        lcm_lora = options.get("lcm_lora") or os.environ.get("REALTIME_LCM_LORA") or None
        self.lcm_lora = lcm_lora if self.kind == "lcm" else None
        self.taesd = options.get("taesd") or os.environ.get("REALTIME_TAESD_MODEL") or None
        self.dtype_name = options.get("dtype", "auto")
        self.device_name = options.get("device", "auto")
        self.compile = _compile_mode(options)
        self.channels_last = _flag(options, "channels_last", True)
        self.max_batch = option_int(options, "max_batch", 4, low=1, high=64)
        self.workers = 1  # one pipeline; concurrency comes from batching
        self._pipes: Pipelines | None = None
        self._prompts: collections.OrderedDict[tuple[str, str, bool], tuple[Any, ...]] = collections.OrderedDict()
        self.prompt_encodings = 0  # how often the text encoder ran (the cache's misses)

    @property
    def ignores(self) -> tuple[str, ...]:  # type: ignore[override]
        return () if self.controlnet else CONTROL_FIELDS

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
            self._pipes = load_pipelines(
                self.model,
                kind=self.kind,
                dtype=dtype,
                device=self.device_name,
                taesd=self.taesd,
                controlnet=self.controlnet,
                lcm_lora=self.lcm_lora,
            )
        except (OSError, ValueError) as exc:
            raise EngineUnavailable(f"cannot load {self.model}: {exc}") from None
        pipe = self._pipes.image
        nets = [pipe.unet] + ([self._pipes.lines.controlnet] if self._pipes.lines is not None else [])
        if self.channels_last and self.device_name == "cuda":
            for net in nets:
                net.to(memory_format=torch.channels_last)
        if self.compile:  # the pipelines share their components: compiled once, used by all
            pipe.unet = torch.compile(pipe.unet, mode=self.compile, fullgraph=True)
            for controlled in (self._pipes.lines, self._pipes.image_lines):
                if controlled is not None:
                    controlled.unet = pipe.unet
            if self._pipes.lines is not None:
                net = torch.compile(self._pipes.lines.controlnet, mode=self.compile, fullgraph=True)
                self._pipes.lines.controlnet = self._pipes.image_lines.controlnet = net

    def warm_up(self) -> None:
        side = 512 if self.device_name == "cuda" else 64
        image = Image.new("RGB", (side, side), "white")
        plain = ImageRequest(prompt="warm up", image=b"", width=side, height=side, strength=0.5)
        requests = [plain]
        if self._pipes is not None and self._pipes.lines is not None:  # each pipeline is its own graph
            requests = [replace(plain, controlnet_conditioning_scale=0.0), plain, replace(plain, control_image=b"")]
        for request in requests:
            self.transform_batch([image], [request], [0], controls=[image])

    # -- inference ----------------------------------------------------------------------------

    def mode(self, request: ImageRequest) -> str:
        """``image`` (image to image), ``lines`` (text to image following the input picture's lines)
        or ``image+lines`` (image to image following the lines of ``control_image``)."""
        if self._pipes is None or self._pipes.lines is None or request.controlnet_conditioning_scale == 0:
            return "image"
        return "image+lines" if request.control_image is not None else "lines"

    def control_refusal(self) -> str | None:
        if self.controlnet:
            return None
        return f"this app has no ControlNet to follow it (the runner's {self.controlnet_env} is not set)"

    def _steps(self, request: ImageRequest, mode: str) -> tuple[int, float]:
        """Steps to ask the pipeline for, so that ``steps * strength`` runs at least one denoising step."""
        if mode == "lines":
            return request.num_inference_steps or self.default_text_steps, 1.0
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
        assert self._pipes is not None
        encoded = self._pipes.image.encode_prompt(
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

    def _embeddings(self, request: ImageRequest, guided: bool) -> tuple[Any, ...]:
        """The prompt's embeddings; during prompt travel, the weighted sum of the prompts' (each cached)."""
        if not request.prompt_blend:
            return self._encode_prompt(request.prompt, request.negative_prompt, guided)
        encodings = [self._encode_prompt(p, n, guided) for (p, n), _ in request.prompt_blend]
        return blend_embeddings(encodings, [weight for _, weight in request.prompt_blend])

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
        controls: list[Image.Image] | None = None,
    ) -> list[Image.Image]:
        """One pipeline call for inputs that share ``batch_key``; each keeps its own prompt, seed and
        control image (``controls``: already decoded; by default each input's ``control_image``, or
        its picture). ``show`` (one input only) gets the image after each denoising step but the last."""
        import torch

        with torch.inference_mode():  # the prompt encoder too: a cached embedding keeps no autograd graph
            return self._transform_batch(images, requests, seeds, show, controls)

    def _transform_batch(
        self,
        images: list[Image.Image],
        requests: list[ImageRequest],
        seeds: list[int],
        show: ShowImage | None,
        controls: list[Image.Image] | None,
    ) -> list[Image.Image]:
        import torch

        assert self._pipes is not None
        first = requests[0]
        mode = self.mode(first)
        if mode != "lines" and first.strength <= 0:
            return list(images)
        steps, strength = self._steps(first, mode)
        guidance = first.guidance_scale if first.guidance_scale is not None else self.default_guidance
        guided = guidance > 1.0
        encoded = [self._embeddings(r, guided) for r in requests]
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
        if mode == "image":
            pipe = self._pipes.image
            kwargs.update(image=images, strength=strength)
        else:
            controls = controls or [
                decode_image(r.control_image, r.width, r.height, "control_image") if r.control_image else image
                for image, r in zip(images, requests, strict=True)
            ]
            kwargs["controlnet_conditioning_scale"] = (
                first.controlnet_conditioning_scale
                if first.controlnet_conditioning_scale is not None
                else DEFAULT_CONTROL_SCALE
            )
            end = first.control_guidance_end
            kwargs["control_guidance_end"] = end if end is not None else 1.0
            if mode == "lines":
                pipe = self._pipes.lines
                kwargs.update(image=controls, width=first.width, height=first.height)
            else:
                pipe = self._pipes.image_lines
                kwargs.update(image=images, control_image=controls, strength=strength)
        generators = [torch.Generator(device=self.device_name).manual_seed(seed) for seed in seeds]
        noise = blended_noise(pipe, requests, generators, mode, kwargs["prompt_embeds"].dtype, self.device_name)
        with initial_noise(pipe, noise, mode, kwargs):
            result = pipe(
                num_inference_steps=steps,
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
        mode = self.mode(request)
        control = (request.controlnet_conditioning_scale, request.control_guidance_end) if mode != "image" else ()
        strength = request.strength if mode != "lines" else None
        size = (request.width, request.height)
        return (mode, *size, request.num_inference_steps, strength, request.guidance_scale, *control)

    def infer_batch(self, requests: list[ImageRequest], seeds: list[int]) -> list[EngineOutput]:
        images = [decode_image(r.image, r.width, r.height) for r in requests]
        outputs = []
        for image, request in zip(self.transform_batch(images, requests, seeds), requests, strict=True):
            data, content_type = encode_image(image, request.output_format)
            outputs.append(EngineOutput(data, content_type, *image.size))
        return outputs

    def conditioning(self) -> list[str]:
        """What a result can follow: the input picture, and with a ControlNet the drawing's lines."""
        return ["image", "controlnet"] if self.controlnet else ["image"]

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "model": self.model,
            "family": self._pipes.family if self._pipes is not None else None,
            "controlnet": self.controlnet,
            "lcm_lora": self.lcm_lora,
            "travel": True,
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
    controlnet_env = "REALTIME_LCM_CONTROLNET"
    default_steps = 4
    default_text_steps = 4
    default_guidance = 1.0


class TurboEngine(DiffusionEngine):
    name = "turbo"
    kind = "turbo"
    model_env = "REALTIME_TURBO_MODEL"
    controlnet_env = "REALTIME_TURBO_CONTROLNET"
    default_steps = 2
    default_text_steps = 1
    default_guidance = 0.0
