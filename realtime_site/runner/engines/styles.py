"""From a prompt to a blend of the 26 built-in styles of the ``multistyle26`` network.

The network's styles come without names, so we named them after what each one paints
(README, "The stylize app"). The prompt picks styles like this:

1. Every style whose name or alias appears as a word (or two-word phrase) of the prompt gets an
   equal share. "starry mosaic city" blends ``starry`` and ``mosaic`` half and half.
2. A prompt that names no style picks two from a stable hash (SHA-256) of its normalised words,
   with a blend ratio from the same hash, so the same prompt always looks the same.
3. Styles named in ``negative_prompt`` are removed (unless that would remove all).
4. The seed mixes in up to 30 % of one more style, chosen by the seed: seeds give variations,
   and the same seed with the same input gives the same image.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

__all__ = ["NUM_STYLES", "STYLE_NAMES", "style_weights", "styles_named_in"]

# Index -> (name, aliases). Names are ours, from a contact sheet of the network's output.
_STYLES: list[tuple[str, tuple[str, ...]]] = [
    ("pastel", ("soft", "chalk")),
    ("comic", ("cartoon", "outline", "pop")),
    ("charcoal", ("sketch", "pencil", "drawing")),
    ("expressionist", ("abstract", "chaos", "wild")),
    ("watercolor", ("watercolour", "aquarelle")),
    ("fauvist", ("fauvism", "matisse", "warm")),
    ("midnight", ("night", "dark blue", "indigo")),
    ("bold", ("stained glass", "poster", "graphic")),
    ("neon", ("glow", "psychedelic", "bright")),
    ("tapestry", ("textile", "pattern", "embroidery")),
    ("sepia", ("brown", "vintage", "old photo")),
    ("golden", ("gold", "sunny", "yellow")),
    ("dream", ("dreamy", "hazy", "pale")),
    ("vibrant", ("vivid", "colorful", "colourful")),
    ("frost", ("ice", "winter", "snow")),
    ("mosaic", ("tiles", "cells", "glass")),
    ("impressionist", ("impressionism", "monet", "pointillism")),
    ("weave", ("cubist", "cubism", "bars")),
    ("ink", ("ink wash", "sumi", "calligraphy")),
    ("starry", ("van gogh", "starry night", "swirl")),
    ("fire", ("flame", "red", "inferno")),
    ("cutout", ("paper", "collage", "cut out")),
    ("woodcut", ("woodblock", "linocut", "print")),
    ("smoke", ("fog", "mist", "shadow")),
    ("porcelain", ("china", "delft", "ceramic")),
    ("etching", ("engraving", "copperplate", "hatching")),
]
NUM_STYLES = len(_STYLES)
STYLE_NAMES: list[str] = [name for name, _ in _STYLES]
_PHRASES: dict[str, int] = {}
for _index, (_name, _aliases) in enumerate(_STYLES):
    for _phrase in (_name, *_aliases):
        _PHRASES[_phrase] = _index
_WORD = re.compile(r"[a-z0-9]+")
SEED_MIX_MAX = 0.3


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def styles_named_in(text: str) -> list[int]:
    """Indices of the styles named in ``text``, in order of mention. A two-word phrase wins over
    its words: "starry night" is ``starry`` alone, not ``starry`` and ``midnight``."""
    words = _words(text)
    found: list[int] = []
    i = 0
    while i < len(words):
        pair = f"{words[i]} {words[i + 1]}" if i + 1 < len(words) else ""
        phrase, step = (pair, 2) if pair in _PHRASES else (words[i], 1)
        index = _PHRASES.get(phrase)
        if index is not None and index not in found:
            found.append(index)
        i += step
    return found


def _hashed_blend(prompt: str) -> np.ndarray:
    digest = hashlib.sha256(" ".join(_words(prompt)).encode()).digest()
    first, second = digest[0] % NUM_STYLES, digest[1] % NUM_STYLES
    share = 0.5 + 0.5 * digest[2] / 255  # the first style's share: 0.5 .. 1
    weights = np.zeros(NUM_STYLES, dtype=np.float32)
    weights[first] += share
    weights[second] += 1 - share
    return weights


def style_weights(prompt: str, negative_prompt: str = "", seed: int = 0) -> np.ndarray:
    """The network's ``style_weights`` input: 26 non-negative floats summing to 1."""
    weights = np.zeros(NUM_STYLES, dtype=np.float32)
    named = styles_named_in(prompt)
    if named:
        weights[named] = 1.0
    else:
        weights = _hashed_blend(prompt)
    excluded = styles_named_in(negative_prompt)
    if excluded and weights[[i for i in range(NUM_STYLES) if i not in excluded]].sum() > 0:
        weights[excluded] = 0.0
    weights /= weights.sum()
    rng = np.random.default_rng(seed)
    extra = int(rng.integers(NUM_STYLES))
    mix = float(rng.uniform(0.0, SEED_MIX_MAX))
    if extra in excluded:
        mix = 0.0
    weights *= 1.0 - mix
    weights[extra] += mix
    return weights.astype(np.float32)
