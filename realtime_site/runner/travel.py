"""Prompt and seed travel: a session's frames move from one prompt (or seed) to the next over a few
frames instead of jumping (``prompt_transition_frames``, ``seed_transition_frames``; 0, the default,
jumps as before). One ``Travel`` per session, stepped once for each of its inputs that runs, in order.

A prompt is a weighted sum of prompts' embeddings, weights summing to 1: linear, so a change in the
middle of a transition starts from where the picture is. A seed is a sum of seeds' initial noises
with coefficients whose squares sum to 1: independent Gaussian noises are orthogonal in high
dimension, so the slerp from noise a to noise b at t is cos(t·π/2)·a + sin(t·π/2)·b, and the sum keeps
the unit variance the sampler expects. No torch here: the engine turns the weights into tensors.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from realtime_site.protocol import ImageRequest

__all__ = ["MAX_TERMS", "Travel"]

K = TypeVar("K", bound=Hashable)
Mix = dict  # key -> weight (prompts) or coefficient (seeds)
MAX_TERMS = 4  # a frame is made of at most this many prompts (or seeds): the smallest ones are let go
_NEGLIGIBLE = 1e-4


def _lerp(start: Mix, target: Hashable, t: float) -> Mix:
    mixed = {key: weight * (1 - t) for key, weight in start.items()}
    mixed[target] = mixed.get(target, 0.0) + t
    return _normalised(mixed, squared=False)


def _slerp(start: Mix, target: Hashable, t: float) -> Mix:
    keep, add = math.cos(t * math.pi / 2), math.sin(t * math.pi / 2)
    mixed = {key: c * keep for key, c in start.items()}
    mixed[target] = mixed.get(target, 0.0) + add
    return _normalised(mixed, squared=True)


def _normalised(mix: Mix, *, squared: bool) -> Mix:
    """The largest ``MAX_TERMS`` terms, scaled so that they (their squares) sum to 1 again."""
    terms = sorted(((k, w) for k, w in mix.items() if abs(w) > _NEGLIGIBLE), key=lambda kw: -abs(kw[1]))
    terms = terms[:MAX_TERMS]
    scale = 1.0 / math.sqrt(sum(w * w for _, w in terms)) if squared else 1.0 / sum(w for _, w in terms)
    return {k: w * scale for k, w in terms}


@dataclasses.dataclass
class _Transition(Generic[K]):
    start: Mix
    target: K
    frames: int
    done: int = 0


class _Track(Generic[K]):
    """Where one quantity is (a mix of keys) and where it is going."""

    def __init__(self, combine: Callable[[Mix, Hashable, float], Mix]):
        self.combine = combine
        self.current: Mix = {}
        self.transition: _Transition[K] | None = None

    def step(self, target: K, frames: int) -> Mix:
        if not self.current or frames <= 0:  # the first frame, or travel not asked for: jump
            self.reset(target)
            return self.current
        if self.transition is None or self.transition.target != target:
            if self.current == {target: 1.0}:
                return self.current
            self.transition = _Transition(dict(self.current), target, frames)
        transition = self.transition
        transition.done += 1
        if transition.done >= transition.frames:
            self.reset(target)
        else:
            self.current = self.combine(transition.start, target, transition.done / transition.frames)
        return self.current

    def reset(self, target: K | None = None) -> None:
        self.current = {} if target is None else {target: 1.0}
        self.transition = None


class Travel:
    """One session's prompt and seed travel."""

    def __init__(self) -> None:
        self.prompts: _Track[tuple[str, str]] = _Track(_lerp)
        self.seeds: _Track[int] = _Track(_slerp)

    def apply(self, request: ImageRequest, seed: int) -> ImageRequest:
        """``request`` as this frame runs it (``seed`` is the one it runs with): with ``prompt_blend``
        and ``seed_blend`` set while a transition is under way, unchanged otherwise."""
        prompts = self.prompts.step((request.prompt, request.negative_prompt), request.prompt_transition_frames)
        if request.seed is None:  # a random seed each frame: nothing to travel between
            self.seeds.reset()
            seeds: Mix = {}
        else:
            seeds = self.seeds.step(seed, request.seed_transition_frames)
        prompt_blend = tuple(prompts.items()) if len(prompts) > 1 else ()
        seed_blend = tuple(seeds.items()) if len(seeds) > 1 else ()
        if not (prompt_blend or seed_blend):
            return request
        return dataclasses.replace(request, prompt_blend=prompt_blend, seed_blend=seed_blend)
