"""What a member may send in a room, checked before anything is relayed (docs/rooms.md, "Messages").

A message is a msgpack map with ``t``, its type. Strokes are drawn in canvas pixels (the canvas is
``CANVAS`` pixels square); a stroke starts with ``down``, grows with ``move`` (a few points at a
time, as they are drawn) and ends with ``up``. Everything is bounded: points per message, points
per stroke, the brush, the colours, the prompt. A message that fails a check is answered with a
named error to its sender only; it never reaches the other members or the canvas.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, TypeGuard

from realtime_site.protocol import ValidationError

__all__ = [
    "CANVAS",
    "MAX_POINTS_PER_MESSAGE",
    "MAX_POINTS_PER_STROKE",
    "Cursor",
    "Down",
    "Fill",
    "Move",
    "Op",
    "Params",
    "Simple",
    "Up",
    "parse_message",
]

CANVAS = 512  # the room's canvas, in pixels (square)
MARGIN = 64  # strokes may start a little off the canvas (a brush's edge still paints)
MAX_POINTS_PER_MESSAGE = 128
MAX_POINTS_PER_STROKE = 2000
MAX_BRUSH = 128
MAX_PROMPT = 2000
MAX_STROKE_ID = 2**31 - 1
COLOR = re.compile(r"^#[0-9a-f]{6}$")
SIZES = (256, 512)
OUTPUT_FORMATS = ("jpeg", "png")


@dataclass(frozen=True)
class Down:
    stroke: int  # the member's own number for the stroke
    color: str
    width: float
    erase: bool
    points: tuple[float, ...]  # x0, y0, x1, y1, ...


@dataclass(frozen=True)
class Move:
    stroke: int
    points: tuple[float, ...]


@dataclass(frozen=True)
class Up:
    stroke: int


@dataclass(frozen=True)
class Fill:
    color: str


@dataclass(frozen=True)
class Simple:
    kind: str  # "clear", "undo" or "redo"


@dataclass(frozen=True)
class Params:
    values: dict[str, Any]  # only the fields given, each checked


@dataclass(frozen=True)
class Cursor:
    x: float
    y: float


Op = Down | Move | Up | Fill | Simple | Params | Cursor


def parse_message(message: object) -> Op:
    """The member's message as an op, or ``ValidationError`` naming what is wrong."""
    if not isinstance(message, dict):
        raise ValidationError("message", "must be a map with a type `t`")
    kind = message.get("t")
    if kind == "down":
        points = _points(message.get("p"), at_least=2)
        return Down(
            _stroke(message), _color(message.get("c"), "c"), _width(message.get("w")), _flag(message, "e"), points
        )
    if kind == "move":
        return Move(_stroke(message), _points(message.get("p"), at_least=2))
    if kind == "up":
        return Up(_stroke(message))
    if kind == "fill":
        return Fill(_color(message.get("c"), "c"))
    if kind in ("clear", "undo", "redo"):
        return Simple(kind)
    if kind == "params":
        return Params(_params(message))
    if kind == "cursor":
        return Cursor(_coordinate(message.get("x"), "x"), _coordinate(message.get("y"), "y"))
    raise ValidationError(
        "t", f"unknown message type {kind!r}; use down, move, up, fill, clear, undo, redo, params, cursor"
    )


def _real(value: object) -> TypeGuard[float]:
    """A finite number, not a bool. An integer too large for a float is none (JSON text may carry one)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _stroke(message: dict[str, Any]) -> int:
    value = message.get("k")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_STROKE_ID:
        raise ValidationError("k", f"must be the stroke's number, an integer from 0 to {MAX_STROKE_ID}")
    return value


def _color(value: object, name: str) -> str:
    if not isinstance(value, str) or not COLOR.fullmatch(value.lower()):  # (``$`` would let "#rrggbb\n" by)
        raise ValidationError(name, "must be a colour written #rrggbb")
    return value.lower()


def _width(value: object) -> float:
    if not _real(value):
        raise ValidationError("w", f"must be the brush width, a number from 1 to {MAX_BRUSH}")
    if not 1 <= value <= MAX_BRUSH:
        raise ValidationError("w", f"must be from 1 to {MAX_BRUSH}, got {value:g}")
    return round(float(value), 2)


def _flag(message: dict[str, Any], name: str) -> bool:
    value = message.get(name, False)
    if not isinstance(value, bool):
        raise ValidationError(name, "must be true or false")
    return value


def _coordinate(value: object, name: str) -> float:
    if not _real(value):
        raise ValidationError(name, "must be a number (canvas pixels)")
    if not -MARGIN <= value <= CANVAS + MARGIN:
        raise ValidationError(name, f"must lie on the canvas (0 to {CANVAS}, give or take {MARGIN}), got {value:g}")
    return round(float(value), 1)


def _points(value: object, *, at_least: int) -> tuple[float, ...]:
    if not isinstance(value, list | tuple) or len(value) < at_least or len(value) % 2:
        raise ValidationError("p", "must be a flat list of coordinates: x0, y0, x1, y1, ...")
    if len(value) > 2 * MAX_POINTS_PER_MESSAGE:
        raise ValidationError("p", f"at most {MAX_POINTS_PER_MESSAGE} points in one message, got {len(value) // 2}")
    return tuple(_coordinate(v, "p") for v in value)


def _params(message: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if "prompt" in message:
        prompt = message["prompt"]
        if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT:
            raise ValidationError("prompt", f"must be text of at most {MAX_PROMPT} characters")
        values["prompt"] = prompt
    if "strength" in message:
        values["strength"] = _number(message["strength"], "strength", 0.0, 1.0)
    if "num_inference_steps" in message:
        values["num_inference_steps"] = int(
            _number(message["num_inference_steps"], "num_inference_steps", 1, 8, whole=True)
        )
    if "seed" in message:
        values["seed"] = int(_number(message["seed"], "seed", 0, 2**32 - 1, whole=True))
    if "image_size" in message:
        if message["image_size"] not in SIZES:
            raise ValidationError("image_size", f"must be one of {', '.join(map(str, SIZES))}")
        values["image_size"] = message["image_size"]
    if "output_format" in message:
        if message["output_format"] not in OUTPUT_FORMATS:
            raise ValidationError("output_format", f"must be one of {', '.join(OUTPUT_FORMATS)}")
        values["output_format"] = message["output_format"]
    if "app" in message:
        raise ValidationError("app", "a room's app is chosen when it is made")
    if not values:
        raise ValidationError("params", "name at least one of prompt, strength, num_inference_steps, seed, image_size")
    return values


def _number(value: object, name: str, low: float, high: float, *, whole: bool = False) -> float:
    if not _real(value) or (whole and value != int(value)) or not low <= value <= high:  # type: ignore[operator, arg-type]
        kind = "a whole number" if whole else "a number"
        raise ValidationError(name, f"must be {kind} from {low:g} to {high:g}")
    return float(value)  # type: ignore[arg-type]
