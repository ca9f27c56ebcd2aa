"""``rooms.ops.parse_message``: what a room member may send. Every message type is accepted with good
values (colours lower-cased, numbers rounded); every bad input is refused with a ``ValidationError``
whose ``field`` names what is wrong. Pure: no server, no database."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from realtime_site.protocol import ValidationError
from realtime_site.rooms.ops import (
    CANVAS,
    MARGIN,
    MAX_BRUSH,
    MAX_POINTS_PER_MESSAGE,
    MAX_PROMPT,
    MAX_STROKE_ID,
    Cursor,
    Down,
    Fill,
    Move,
    Params,
    Simple,
    Up,
    parse_message,
)


def down(**fields: Any) -> dict[str, Any]:
    return {"t": "down", "k": 1, "c": "#112233", "w": 8, "p": [10, 20], **fields}


def refused(message: object) -> str:
    """The field the refusal names (fails the test if the message is accepted)."""
    with pytest.raises(ValidationError) as caught:
        parse_message(message)
    return caught.value.field


# -- accepted ----------------------------------------------------------------------------------------


def test_down_is_parsed_with_its_stroke_colour_width_flag_and_points() -> None:
    op = parse_message(down(k=7, c="#A0B1C2", w=12.3456, e=True, p=[0, 0, 512, 512.25]))
    assert op == Down(stroke=7, color="#a0b1c2", width=12.35, erase=True, points=(0.0, 0.0, 512.0, 512.2))
    assert all(isinstance(v, float) for v in op.points)


def test_down_erase_defaults_to_false() -> None:
    op = parse_message(down())
    assert isinstance(op, Down) and op.erase is False and op.width == 8.0


def test_move_up_fill_and_the_simple_ops_are_parsed() -> None:
    assert parse_message({"t": "move", "k": 3, "p": [1, 2, 3, 4]}) == Move(3, (1.0, 2.0, 3.0, 4.0))
    assert parse_message({"t": "up", "k": 3}) == Up(3)
    assert parse_message({"t": "fill", "c": "#FFAA00"}) == Fill("#ffaa00")
    for kind in ("clear", "undo", "redo"):
        assert parse_message({"t": kind}) == Simple(kind)


def test_cursor_is_parsed_and_rounded_to_a_tenth() -> None:
    assert parse_message({"t": "cursor", "x": 12.345, "y": 0}) == Cursor(12.3, 0.0)


def test_params_keep_only_the_fields_given_each_checked() -> None:
    op = parse_message(
        {
            "t": "params",
            "prompt": "a cat",
            "strength": 0.25,
            "num_inference_steps": 4.0,
            "seed": 2**32 - 1,
            "image_size": 256,
            "output_format": "png",
            "unknown": "ignored",
        }
    )
    assert op == Params(
        {
            "prompt": "a cat",
            "strength": 0.25,
            "num_inference_steps": 4,
            "seed": 2**32 - 1,
            "image_size": 256,
            "output_format": "png",
        }
    )
    assert isinstance(op, Params) and type(op.values["num_inference_steps"]) is int and type(op.values["seed"]) is int
    assert parse_message({"t": "params", "prompt": ""}) == Params({"prompt": ""})
    assert parse_message({"t": "params", "prompt": "x" * MAX_PROMPT}) == Params({"prompt": "x" * MAX_PROMPT})


def test_the_limits_themselves_are_accepted() -> None:
    edge = [-MARGIN, CANVAS + MARGIN] * MAX_POINTS_PER_MESSAGE
    op = parse_message(down(k=MAX_STROKE_ID, w=MAX_BRUSH, p=edge))
    assert isinstance(op, Down) and op.stroke == MAX_STROKE_ID and op.width == MAX_BRUSH
    assert len(op.points) == 2 * MAX_POINTS_PER_MESSAGE
    assert parse_message(down(k=0, w=1)) == Down(0, "#112233", 1.0, False, (10.0, 20.0))
    assert parse_message({"t": "params", "strength": 0, "num_inference_steps": 8, "seed": 0}) == Params(
        {"strength": 0.0, "num_inference_steps": 8, "seed": 0}
    )


def test_a_message_as_json_text_parses_the_same() -> None:
    message = down(p=[1.5, 2.5, 3, 4])
    assert parse_message(json.loads(json.dumps(message))) == parse_message(message)


# -- refused -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("message", [None, [], "down", 3, b"\x81"])
def test_a_message_that_is_not_a_map_is_refused(message: object) -> None:
    assert refused(message) == "message"


@pytest.mark.parametrize("kind", [None, "draw", "DOWN", 1, ""])
def test_an_unknown_or_missing_type_is_refused(kind: object) -> None:
    assert refused({"t": kind} if kind is not None else {}) == "t"


@pytest.mark.parametrize(
    "color",
    ["red", "#12345", "#1234567", "#12345g", "112233", "", None, 0x112233, "#112233\n", " #112233", "#" + "\uff46" * 6],
)
def test_a_bad_colour_is_refused(color: object) -> None:
    assert refused(down(c=color)) == "c"
    assert refused({"t": "fill", "c": color}) == "c"


def test_a_missing_colour_is_refused() -> None:
    assert refused({"t": "fill"}) == "c"


@pytest.mark.parametrize("width", [0, 0.99, 500, MAX_BRUSH + 0.01, -1, math.nan, math.inf, True, False, "8", None])
def test_a_bad_width_is_refused(width: object) -> None:
    assert refused(down(w=width)) == "w"


@pytest.mark.parametrize(
    "value", [-MARGIN - 0.1, CANVAS + MARGIN + 0.1, 10_000, math.nan, math.inf, -math.inf, "10", None, True, [1]]
)
def test_a_bad_coordinate_is_refused_in_points_and_cursors(value: object) -> None:
    assert refused(down(p=[10, value])) == "p"
    assert refused({"t": "move", "k": 1, "p": [value, 10]}) == "p"
    assert refused({"t": "cursor", "x": value, "y": 10}) == "x"
    assert refused({"t": "cursor", "x": 10, "y": value}) == "y"


@pytest.mark.parametrize(
    "points",
    [[], [1], [1, 2, 3], None, "1,2", {"x": 1}, [1, 2] * (MAX_POINTS_PER_MESSAGE + 1)],
    ids=["empty", "one-number", "odd", "none", "string", "map", "too-many"],
)
def test_a_bad_point_list_is_refused(points: object) -> None:
    assert refused(down(p=points)) == "p"
    assert refused({"t": "move", "k": 1, "p": points}) == "p"


def test_a_down_or_move_without_points_is_refused() -> None:
    assert refused({"t": "down", "k": 1, "c": "#000000", "w": 2}) == "p"
    assert refused({"t": "move", "k": 1}) == "p"


@pytest.mark.parametrize("stroke", [-1, MAX_STROKE_ID + 1, 1.0, "1", None, True, False])
def test_a_bad_stroke_number_is_refused(stroke: object) -> None:
    assert refused(down(k=stroke)) == "k"
    assert refused({"t": "move", "k": stroke, "p": [1, 2]}) == "k"
    assert refused({"t": "up", "k": stroke}) == "k"


@pytest.mark.parametrize("flag", [1, 0, "true", None])
def test_a_bad_erase_flag_is_refused(flag: object) -> None:
    assert refused(down(e=flag)) == "e"


def test_params_with_nothing_to_set_are_refused() -> None:
    assert refused({"t": "params"}) == "params"
    assert refused({"t": "params", "unknown": 1}) == "params"


def test_params_may_not_change_the_app() -> None:
    assert refused({"t": "params", "app": "other"}) == "app"
    assert refused({"t": "params", "prompt": "a cat", "app": "other"}) == "app"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("prompt", "x" * (MAX_PROMPT + 1)),
        ("prompt", 3),
        ("prompt", None),
        ("strength", -0.01),
        ("strength", 1.01),
        ("strength", math.nan),
        ("strength", math.inf),
        ("strength", True),
        ("strength", "0.5"),
        ("num_inference_steps", 0),
        ("num_inference_steps", 9),
        ("num_inference_steps", 2.5),
        ("num_inference_steps", True),
        ("num_inference_steps", "4"),
        ("seed", -1),
        ("seed", 2**32),
        ("seed", 1.5),
        ("seed", False),
        ("seed", math.nan),
        ("image_size", 300),
        ("image_size", "512"),
        ("image_size", None),
        ("image_size", [512]),
        ("output_format", "gif"),
        ("output_format", "PNG"),
        ("output_format", None),
    ],
)
def test_a_bad_param_is_refused(name: str, value: object) -> None:
    assert refused({"t": "params", name: value}) == name
    assert refused({"t": "params", "seed": 1, name: value}) == name  # a good field beside it changes nothing


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"t": "cursor", "x": 10**400, "y": 1}, "x"),
        ({"t": "down", "k": 1, "c": "#000000", "w": 10**400, "p": [1, 2]}, "w"),
        ({"t": "move", "k": 1, "p": [1, -(10**400)]}, "p"),
        ({"t": "params", "seed": 10**400}, "seed"),
        ({"t": "params", "strength": 10**400}, "strength"),
    ],
)
def test_an_integer_too_large_for_a_float_is_refused_not_an_overflow(message: dict[str, Any], field: str) -> None:
    """JSON text may carry a 400-digit integer; it is a bad value, not an ``OverflowError``."""
    assert refused(json.loads(json.dumps(message))) == field


def test_a_refusal_says_the_field_in_its_reason() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_message(down(w=500))
    assert caught.value.field == "w"
    assert "w" in str(caught.value) and "500" in str(caught.value)
