"""Prompt and seed travel as a session steps it (no engine: the weights each frame is made of)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from realtime_site.protocol import ImageRequest
from realtime_site.runner.travel import MAX_TERMS, Travel


def frame(prompt: str = "a cat", seed: int | None = 1, prompts: int = 0, seeds: int = 0) -> ImageRequest:
    return ImageRequest(
        prompt=prompt, image=b"x", width=64, height=64, seed=seed,
        prompt_transition_frames=prompts, seed_transition_frames=seeds,
    )  # fmt: skip


def weights(request: ImageRequest) -> dict[str, float]:
    return {prompt: round(weight, 6) for (prompt, _negative), weight in request.prompt_blend}


def test_off_by_default_every_frame_is_its_own_prompt_and_seed() -> None:
    travel = Travel()
    for request in (frame(), frame("a dog", seed=2), frame("a fox", seed=None), frame()):
        assert travel.apply(request, request.seed or 99) is request


def test_a_new_prompt_is_reached_over_the_frames_asked_for() -> None:
    travel = Travel()
    travel.apply(frame("a cat", prompts=4), 1)
    steps = [weights(travel.apply(frame("a dog", prompts=4), 1)) for _ in range(3)]
    assert steps == [{"a cat": 0.75, "a dog": 0.25}, {"a cat": 0.5, "a dog": 0.5}, {"a dog": 0.75, "a cat": 0.25}]
    arrived = travel.apply(frame("a dog", prompts=4), 1)
    assert arrived.prompt_blend == () and arrived.prompt == "a dog"  # the fourth frame is the new prompt
    assert travel.apply(frame("a dog", prompts=4), 1).prompt_blend == ()


def test_a_change_on_the_way_starts_from_where_the_picture_is() -> None:
    travel = Travel()
    travel.apply(frame("a cat", prompts=2), 1)
    assert weights(travel.apply(frame("a dog", prompts=2), 1)) == {"a cat": 0.5, "a dog": 0.5}
    # Half way to "a dog", "a fox" is asked for: from the half-and-half mix, over 2 frames.
    assert weights(travel.apply(frame("a fox", prompts=2), 1)) == {"a cat": 0.25, "a dog": 0.25, "a fox": 0.5}
    assert travel.apply(frame("a fox", prompts=2), 1).prompt_blend == ()


def test_going_back_on_the_way_and_zero_frames_jump() -> None:
    travel = Travel()
    travel.apply(frame("a cat", prompts=4), 1)
    travel.apply(frame("a dog", prompts=4), 1)  # a quarter of the way
    assert weights(travel.apply(frame("a cat", prompts=4), 1)) == {"a cat": 0.8125, "a dog": 0.1875}
    assert travel.apply(frame("a fox", prompts=0), 1).prompt_blend == ()  # 0: jump, whatever was under way


def test_a_frame_is_made_of_a_few_prompts_at_most_and_they_sum_to_one() -> None:
    travel = Travel()
    travel.apply(frame("p0", prompts=60), 1)
    for n in range(1, 12):
        request = travel.apply(frame(f"p{n}", prompts=60), 1)
        assert len(request.prompt_blend) <= MAX_TERMS
        assert math.isclose(sum(w for _, w in request.prompt_blend), 1.0)
    assert f"p{n}" in weights(request)  # the newest is kept


def test_the_negative_prompt_travels_with_its_prompt() -> None:
    travel = Travel()
    travel.apply(dataclasses.replace(frame(prompts=2), negative_prompt="blurry"), 1)
    request = travel.apply(dataclasses.replace(frame(prompts=2), negative_prompt="dark"), 1)
    assert dict(request.prompt_blend) == {("a cat", "blurry"): 0.5, ("a cat", "dark"): 0.5}


def test_a_new_seed_is_reached_by_slerp_of_the_noise() -> None:
    travel = Travel()
    travel.apply(frame(seed=1, seeds=3), 1)
    first = travel.apply(frame(seed=2, seeds=3), 2)
    assert dict(first.seed_blend) == pytest.approx({1: math.cos(math.pi / 6), 2: math.sin(math.pi / 6)})
    second = travel.apply(frame(seed=2, seeds=3), 2)
    assert dict(second.seed_blend) == pytest.approx({1: 0.5, 2: math.sqrt(3) / 2})
    assert travel.apply(frame(seed=2, seeds=3), 2).seed_blend == ()
    for blend in (first.seed_blend, second.seed_blend):  # unit variance: the squares sum to 1
        assert math.isclose(sum(c * c for _, c in blend), 1.0)
    assert first.prompt_blend == ()  # the prompt did not change


def test_random_seeds_do_not_travel() -> None:
    travel = Travel()
    travel.apply(frame(seed=1, seeds=3), 1)
    assert travel.apply(frame(seed=None, seeds=3), 12345).seed_blend == ()
    assert travel.apply(frame(seed=5, seeds=3), 5).seed_blend == ()  # after a random one: nothing to come from
