"""The diffusion engines' side of prompt and seed travel (``runner.travel`` decides the weights):
blended prompt embeddings, and blended initial noise handed to a diffusers pipeline."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from realtime_site.protocol import ImageRequest

__all__ = ["blend_embeddings", "blended_noise", "initial_noise"]


def blend_embeddings(encodings: Sequence[tuple[Any, ...]], weights: Sequence[float]) -> tuple[Any, ...]:
    """The weighted sum of several prompts' ``encode_prompt`` results, tensor by tensor (prompt,
    negative, and SDXL's pooled ones; a None stays None)."""
    blended = []
    for column in zip(*encodings, strict=True):
        blended.append(None if column[0] is None else sum(t * w for t, w in zip(column, weights, strict=True)))
    return tuple(blended)


def blended_noise(
    pipe: Any, requests: list[ImageRequest], generators: list[Any], mode: str, dtype: Any, device: str
) -> list[Any] | None:
    """The initial noise of each frame between two seeds (seed travel), None for the others; None
    when no frame is. Text to image takes the whole batch's noise, so there the others get what
    their generator gives, drawn as the pipeline would have drawn it."""
    import torch

    if not any(r.seed_blend for r in requests):
        return None
    first = requests[0]
    factor = pipe.vae_scale_factor
    shape = (1, pipe.unet.config.in_channels, first.height // factor, first.width // factor)

    def drawn(generator: Any) -> Any:
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)

    rows = []
    for request, generator in zip(requests, generators, strict=True):
        if request.seed_blend:
            seeded = [(torch.Generator(device).manual_seed(s), c) for s, c in request.seed_blend]
            rows.append(sum(c * drawn(g) for g, c in seeded))
        else:
            rows.append(drawn(generator) if mode == "lines" else None)
    return rows


@contextlib.contextmanager
def initial_noise(pipe: Any, noise: list[Any] | None, mode: str, kwargs: dict[str, Any]) -> Iterator[None]:
    """Give the pipeline ``noise`` (a row per frame; None: the pipeline's own) as its initial noise:
    text to image takes it as ``latents``; image to image draws its own and hands it to
    ``scheduler.add_noise``, which is wrapped for this one call to put the given rows in."""
    if noise is None:
        yield
        return
    if mode == "lines":
        import torch

        kwargs["latents"] = torch.cat(noise)
        yield
        return
    scheduler = pipe.scheduler
    add_noise = scheduler.add_noise

    def add_blended_noise(original: Any, drawn: Any, timesteps: Any) -> Any:
        del scheduler.add_noise  # once: any later call is the scheduler's own
        drawn = drawn.clone()
        for index, row in enumerate(noise):
            if row is not None:
                drawn[index] = row[0].to(drawn.dtype)
        return add_noise(original, drawn, timesteps)

    scheduler.add_noise = add_blended_noise
    try:
        yield
    finally:
        if "add_noise" in vars(scheduler):
            del scheduler.add_noise
