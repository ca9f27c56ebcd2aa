"""Loading the diffusion engines' pipelines from local files only (the real loading code the tests use).

The architecture comes from the weights: diffusers' auto pipelines read ``model_index.json``, so an
SD 1.5/2.1 folder gives the Stable Diffusion pipelines and an SDXL folder the SDXL ones. With a
ControlNet, two more pipelines share the same components (no second copy of any weight): text to image
and image to image, both conditioned on a control image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Pipelines", "load_pipelines"]


@dataclass
class Pipelines:
    image: Any  # image to image
    lines: Any = None  # text to image, following the control image (ControlNet)
    image_lines: Any = None  # image to image, following the control image
    family: str = "sd"  # "sd" (1.5/2.1) or "sdxl", read from the weights

    def all(self) -> list[Any]:
        return [pipe for pipe in (self.image, self.lines, self.image_lines) if pipe is not None]


def load_pipelines(
    model: str,
    *,
    kind: str,
    dtype: Any,
    device: str,
    taesd: str | None = None,
    controlnet: str | None = None,
    lcm_lora: str | None = None,
) -> Pipelines:
    """``kind`` "lcm" puts the latent-consistency scheduler in (and merges ``lcm_lora`` when given)."""
    import diffusers

    pipe = diffusers.AutoPipelineForImage2Image.from_pretrained(model, dtype=dtype, local_files_only=True)
    if kind == "lcm":
        pipe.scheduler = diffusers.LCMScheduler.from_config(pipe.scheduler.config)
        if lcm_lora:
            pipe.load_lora_weights(lcm_lora, local_files_only=True)
            pipe.fuse_lora()
            pipe.unload_lora_weights()  # the fused weights stay; the adapter's copy goes
    if taesd:
        pipe.vae = diffusers.AutoencoderTiny.from_pretrained(taesd, dtype=dtype, local_files_only=True)
    if getattr(pipe, "safety_checker", None) is not None:
        pipe.safety_checker = None  # it would black out frames of a drawing mid-stroke; not a moderation layer
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(device)
    family = "sdxl" if "XL" in type(pipe).__name__ else "sd"
    pipelines = Pipelines(pipe, family=family)
    if controlnet:
        net = diffusers.ControlNetModel.from_pretrained(controlnet, dtype=dtype, local_files_only=True).to(device)
        _check_matches(net, pipe, controlnet, model)
        pipelines.lines = diffusers.AutoPipelineForText2Image.from_pipe(pipe, controlnet=net)
        pipelines.image_lines = diffusers.AutoPipelineForImage2Image.from_pipe(pipe, controlnet=net)
        for controlled in (pipelines.lines, pipelines.image_lines):
            controlled.set_progress_bar_config(disable=True)
    return pipelines


def _check_matches(net: Any, pipe: Any, controlnet: str, model: str) -> None:
    """A ControlNet trained for the other family would fail at the first frame; say so at load."""
    net_cross = net.config.cross_attention_dim
    unet_cross = pipe.unet.config.cross_attention_dim
    if net_cross != unet_cross:
        raise ValueError(
            f"the ControlNet {controlnet} is for a model with text width {net_cross}, "
            f"but {model} has {unet_cross} (an SD 1.5 ControlNet on SDXL, or the other way round?)"
        )
