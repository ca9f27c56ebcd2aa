"""The prompt's choice of built-in styles."""

from __future__ import annotations

import numpy as np

from realtime_site.runner.engines.styles import NUM_STYLES, STYLE_NAMES, style_weights, styles_named_in


def test_twenty_six_named_styles() -> None:
    assert NUM_STYLES == 26 and len(set(STYLE_NAMES)) == 26


def test_prompt_words_pick_styles_in_order_of_mention() -> None:
    starry, mosaic = STYLE_NAMES.index("starry"), STYLE_NAMES.index("mosaic")
    assert styles_named_in("A Mosaic of a starry city") == [mosaic, starry]
    assert styles_named_in("in the style of Van Gogh") == [starry]  # two-word alias
    assert styles_named_in("a cat on a sofa") == []
    assert styles_named_in("Starry Night over stained glass") == [starry, STYLE_NAMES.index("bold")]


def test_weights_sum_to_one_and_blend_named_styles() -> None:
    weights = style_weights("starry mosaic", seed=0)
    assert abs(weights.sum() - 1) < 1e-5 and (weights >= 0).all()
    starry, mosaic = STYLE_NAMES.index("starry"), STYLE_NAMES.index("mosaic")
    top_two = set(np.argsort(weights)[-2:])
    assert {starry, mosaic} <= top_two | {int(np.argmax(weights))}


def test_unnamed_prompt_hash_is_stable_and_prompt_dependent() -> None:
    assert np.array_equal(style_weights("a cat on a sofa", seed=5), style_weights("A cat, on a sofa!", seed=5))
    assert not np.array_equal(style_weights("a cat on a sofa", seed=5), style_weights("a dog in a park", seed=5))


def test_seed_varies_the_blend_deterministically() -> None:
    assert np.array_equal(style_weights("fire", seed=1), style_weights("fire", seed=1))
    assert not np.array_equal(style_weights("fire", seed=1), style_weights("fire", seed=2))
    assert style_weights("fire", seed=1)[STYLE_NAMES.index("fire")] >= 0.7 - 1e-6


def test_negative_prompt_removes_styles_but_never_all() -> None:
    starry, mosaic = STYLE_NAMES.index("starry"), STYLE_NAMES.index("mosaic")
    weights = style_weights("starry mosaic", "no mosaic", seed=3)
    assert weights[mosaic] == 0 and weights[starry] > 0.5
    only = style_weights("starry", "starry", seed=3)
    assert abs(only.sum() - 1) < 1e-5
