"""``rooms.raster``: the room's canvas as the server draws it. Strokes, fills and the eraser paint the
right pixels; a stroke drawn as it comes gives the same pixels, byte for byte, as the canvas drawn
again (after an undo and redo, from its stored state, after a fold), also when members draw at once;
undo and redo touch only the member's own ops; old ops fold into the base image; the limits hold;
PNG, state and ``decode_base``. Pure: Pillow only, no server, no database."""

from __future__ import annotations

import io
import random

import pytest
from PIL import Image

from realtime_site.rooms import raster
from realtime_site.rooms.ops import CANVAS, MAX_POINTS_PER_STROKE
from realtime_site.rooms.raster import UNDO_DEPTH, RoomCanvas, decode_base

RGB = tuple[int, int, int]
WHITE: RGB = (255, 255, 255)
RED, BLUE, GREEN = "#ff0000", "#0000ff", "#00ff00"
RED_RGB: RGB = (255, 0, 0)
BLUE_RGB: RGB = (0, 0, 255)
GREEN_RGB: RGB = (0, 255, 0)


def pixel(canvas: RoomCanvas, x: int, y: int) -> RGB:
    value = canvas.image.getpixel((x, y))
    assert isinstance(value, tuple)
    return (value[0], value[1], value[2])


def redrawn(canvas: RoomCanvas) -> RoomCanvas:
    """The canvas drawn again from what is stored of it."""
    state = canvas.state()
    return RoomCanvas.of_state(state["base"], state["background"], state["ops"])


def line(
    canvas: RoomCanvas,
    connection: str,
    user: int,
    stroke: int,
    points: list[float],
    color: str = RED,
    width: float = 8,
    erase: bool = False,
) -> None:
    """A whole stroke: down with the first point, a move for each point after it, up."""
    canvas.down(connection, user, stroke, color, width, erase, tuple(points[:2]))
    for i in range(2, len(points), 2):
        assert canvas.move(connection, stroke, tuple(points[i : i + 2]))
    canvas.up(connection, stroke)


def dot(canvas: RoomCanvas, user: int, stroke: int, x: float, y: float, color: str = RED) -> None:
    canvas.down(f"c{user}", user, stroke, color, 4, False, (x, y))
    canvas.up(f"c{user}", stroke)


# -- what is drawn -----------------------------------------------------------------------------------


def test_a_new_canvas_is_white_square_and_rgb() -> None:
    canvas = RoomCanvas()
    assert canvas.image.size == (CANVAS, CANVAS) and canvas.image.mode == "RGB"
    assert canvas.image.getcolors() == [(CANVAS * CANVAS, WHITE)]
    assert canvas.background == "#ffffff" and canvas.ops == [] and canvas.base_version == 0


def test_a_stroke_paints_its_colour_along_the_line_and_nowhere_far() -> None:
    canvas = RoomCanvas()
    line(canvas, "a", 1, 1, [100, 100, 200, 100])
    assert pixel(canvas, 150, 100) == RED_RGB  # on the segment
    assert pixel(canvas, 100, 100) == RED_RGB and pixel(canvas, 200, 100) == RED_RGB  # the ends
    assert pixel(canvas, 150, 103) == RED_RGB  # within half the width
    assert pixel(canvas, 150, 110) == WHITE  # beyond it
    assert pixel(canvas, 400, 400) == WHITE
    assert len(canvas.ops) == 1 and canvas.ops[0].points == [100, 100, 200, 100]


def test_a_stroke_of_one_point_paints_a_dab() -> None:
    canvas = RoomCanvas()
    canvas.down("a", 1, 1, BLUE, 10, False, (300, 300))
    assert pixel(canvas, 300, 300) == BLUE_RGB and pixel(canvas, 303, 300) == BLUE_RGB
    assert pixel(canvas, 310, 300) == WHITE


def test_a_stroke_drawn_as_it_comes_has_the_pixels_of_one_drawn_again() -> None:
    canvas = RoomCanvas()
    canvas.down("a", 1, 1, "#123456", 13.5, False, (50, 60, 80, 90))
    assert canvas.move("a", 1, (120, 95))
    assert canvas.move("a", 1, (160.5, 200.25, 170, 240, 90, 300))
    assert canvas.move("a", 1, (60, 280))
    canvas.up("a", 1)
    live = canvas.image.tobytes()
    assert pixel(canvas, 120, 95) == (0x12, 0x34, 0x56)

    assert redrawn(canvas).image.tobytes() == live  # from the stored state
    assert canvas.undo(1)
    assert canvas.image.getcolors() == [(CANVAS * CANVAS, WHITE)]
    assert canvas.redo(1)
    assert canvas.image.tobytes() == live  # drawn again after an undo


def test_an_open_stroke_drawn_again_has_the_same_pixels() -> None:
    canvas = RoomCanvas()
    canvas.down("a", 1, 1, RED, 20, False, (10, 10))
    for x in range(20, 300, 7):
        assert canvas.move("a", 1, (x, x / 2))
    assert redrawn(canvas).image.tobytes() == canvas.image.tobytes()


def test_strokes_drawn_at_once_by_two_members_have_the_pixels_of_the_canvas_drawn_again() -> None:
    """A's stroke begins first, B's crosses it, then A's goes on through B's: what A draws after B's line
    lies on top of it, as every member's page drew it when it came, and as the canvas drawn again
    (after an undo, a fold or a restart) has it."""
    canvas = RoomCanvas()
    canvas.down("a", 1, 1, RED, 10, False, (50, 100))
    line(canvas, "b", 2, 1, [100, 50, 100, 150], color=BLUE)
    assert canvas.move("a", 1, (150, 100))  # through B's line at (100, 100)
    canvas.down("c", 3, 1, GREEN, 6, False, (20, 300))  # C's stroke is open too
    assert canvas.move("a", 1, (150, 300, 10, 300))  # through C's
    assert canvas.move("c", 1, (200, 300))  # and C's goes on through A's
    assert pixel(canvas, 100, 100) == RED_RGB and pixel(canvas, 100, 60) == BLUE_RGB
    assert pixel(canvas, 60, 300) == GREEN_RGB
    assert redrawn(canvas).image.tobytes() == canvas.image.tobytes()
    before = canvas.image.tobytes()
    dot(canvas, 4, 1, 500, 500)
    assert canvas.undo(4)  # someone else's undo draws all again: nothing else moves
    assert canvas.image.tobytes() == before


def test_a_stroke_in_parts_is_undone_and_redone_whole() -> None:
    canvas = RoomCanvas()
    canvas.down("a", 1, 1, RED, 10, False, (50, 100))
    dot(canvas, 2, 1, 300, 300)
    assert canvas.move("a", 1, (150, 100))  # a second part, on top of the dot
    canvas.up("a", 1)
    assert [d.user for d in canvas.ops] == [1, 2, 1] and canvas.ops[0].stroke == canvas.ops[2].stroke
    assert canvas.undo(1)
    assert pixel(canvas, 100, 100) == WHITE and pixel(canvas, 300, 300) == RED_RGB
    assert canvas.redo(1)
    assert pixel(canvas, 100, 100) == RED_RGB and pixel(canvas, 52, 100) == RED_RGB


def test_a_stroke_going_on_after_a_fill_made_since_it_began_shows_on_top_of_the_fill() -> None:
    canvas = RoomCanvas()
    canvas.down("a", 1, 1, RED, 10, False, (50, 50))
    canvas.fill(2, BLUE)
    assert canvas.move("a", 1, (200, 200))  # a new part, on the fill
    assert pixel(canvas, 200, 200) == RED_RGB and pixel(canvas, 40, 40) == BLUE_RGB
    assert redrawn(canvas).image.tobytes() == canvas.image.tobytes()
    assert canvas.undo(2)  # the fill undone: all of A's stroke shows
    assert pixel(canvas, 200, 200) == RED_RGB and pixel(canvas, 125, 125) == RED_RGB


def test_fill_paints_everything_and_clear_is_a_white_fill() -> None:
    canvas = RoomCanvas()
    line(canvas, "a", 1, 1, [10, 10, 100, 100])
    canvas.fill(2, BLUE)
    assert canvas.image.getcolors() == [(CANVAS * CANVAS, BLUE_RGB)]
    assert canvas.background == BLUE
    canvas.fill(2, "#ffffff")
    assert canvas.image.getcolors() == [(CANVAS * CANVAS, WHITE)]
    assert canvas.background == "#ffffff"
    assert [d.kind for d in canvas.ops] == ["stroke", "fill", "fill"]
    assert redrawn(canvas).image.tobytes() == canvas.image.tobytes()


def test_the_eraser_paints_the_background_of_the_last_fill_before_it() -> None:
    canvas = RoomCanvas()
    canvas.fill(1, BLUE)
    line(canvas, "a", 1, 1, [100, 100, 300, 100], color=RED)
    line(canvas, "a", 1, 2, [200, 50, 200, 150], color=RED, width=12, erase=True)
    assert pixel(canvas, 200, 100) == BLUE_RGB  # erased back to the fill's blue, not white
    assert pixel(canvas, 150, 100) == RED_RGB  # the rest of the red line stays
    assert pixel(canvas, 200, 60) == BLUE_RGB
    assert redrawn(canvas).image.tobytes() == canvas.image.tobytes()


def test_the_eraser_keeps_the_background_of_its_own_time() -> None:
    """An erase made before a fill paints the background before it (white), whatever came later."""
    canvas = RoomCanvas()
    line(canvas, "a", 1, 1, [100, 100, 300, 100], color=RED)
    line(canvas, "a", 1, 2, [200, 50, 200, 150], width=12, erase=True)
    assert pixel(canvas, 200, 100) == WHITE
    canvas.fill(2, BLUE)
    assert canvas.undo(2)
    assert pixel(canvas, 200, 100) == WHITE and pixel(canvas, 150, 100) == RED_RGB


def test_an_undone_fill_no_longer_gives_the_eraser_its_colour() -> None:
    canvas = RoomCanvas()
    canvas.fill(1, BLUE)
    assert canvas.undo(1)
    assert canvas.background == "#ffffff"
    line(canvas, "a", 2, 1, [10, 10, 20, 10], erase=True)
    assert canvas.image.getcolors() == [(CANVAS * CANVAS, WHITE)]


# -- undo and redo -----------------------------------------------------------------------------------


def test_undo_and_redo_touch_only_the_members_own_ops() -> None:
    canvas = RoomCanvas()
    line(canvas, "a", 1, 1, [100, 100, 200, 100], color=RED)
    line(canvas, "b", 2, 1, [100, 300, 200, 300], color=BLUE)
    assert canvas.undo(1)
    assert pixel(canvas, 150, 100) == WHITE  # A's gone
    assert pixel(canvas, 150, 300) == BLUE_RGB  # B's stays
    assert [d.undone for d in canvas.ops] == [True, False]
    assert not canvas.undo(1)  # A has nothing more to undo: B's stroke is not theirs
    assert pixel(canvas, 150, 300) == BLUE_RGB
    assert not canvas.redo(2)  # B undid nothing
    assert canvas.redo(1)
    assert pixel(canvas, 150, 100) == RED_RGB and [d.undone for d in canvas.ops] == [False, False]
    assert not canvas.redo(1)


def test_undo_takes_the_members_latest_op_first_and_redo_brings_them_back_in_turn() -> None:
    canvas = RoomCanvas()
    dot(canvas, 1, 1, 10, 10)
    canvas.fill(1, BLUE)
    dot(canvas, 2, 1, 30, 30, color=GREEN)
    assert canvas.undo(1)
    assert [d.undone for d in canvas.ops] == [False, True, False]
    assert canvas.undo(1)
    assert [d.undone for d in canvas.ops] == [True, True, False]
    assert canvas.redo(1)
    assert [d.undone for d in canvas.ops] == [False, True, False]
    assert canvas.redo(1)
    assert [d.undone for d in canvas.ops] == [False, False, False]


def test_redo_after_a_new_op_by_the_same_member_does_nothing() -> None:
    canvas = RoomCanvas()
    dot(canvas, 1, 1, 10, 10)
    assert canvas.undo(1)
    dot(canvas, 1, 2, 50, 50)
    assert not canvas.redo(1)
    assert [d.undone for d in canvas.ops] == [True, False]
    assert pixel(canvas, 10, 10) == WHITE


def test_another_members_new_op_keeps_what_one_may_redo() -> None:
    canvas = RoomCanvas()
    dot(canvas, 1, 1, 10, 10)
    assert canvas.undo(1)
    dot(canvas, 2, 1, 50, 50)
    assert canvas.redo(1)
    assert pixel(canvas, 10, 10) == RED_RGB


def test_an_open_stroke_cannot_be_undone_until_it_ends() -> None:
    canvas = RoomCanvas()
    canvas.down("a", 1, 1, RED, 4, False, (10, 10))
    assert not canvas.undo(1)
    canvas.up("a", 1)
    assert canvas.undo(1)


def test_left_ends_the_connections_open_strokes_only() -> None:
    canvas = RoomCanvas()
    canvas.down("a", 1, 1, RED, 4, False, (10, 10))
    canvas.down("a", 1, 2, RED, 4, False, (20, 20))
    canvas.down("b", 1, 1, BLUE, 4, False, (30, 30))
    canvas.left("a")
    assert not canvas.move("a", 1, (40, 40)) and not canvas.move("a", 2, (40, 40))
    assert canvas.move("b", 1, (50, 50))  # the other connection's stroke goes on
    assert [d.open for d in canvas.ops] == [False, False, True]
    assert pixel(canvas, 10, 10) == RED_RGB  # what was drawn stays
    assert canvas.undo(1)  # the ended strokes can be undone now: the latest ended one first
    assert [d.undone for d in canvas.ops] == [False, True, False]


def test_a_down_with_a_stroke_number_in_use_ends_the_old_stroke() -> None:
    canvas = RoomCanvas()
    canvas.down("a", 1, 7, RED, 4, False, (10, 10))
    canvas.down("a", 1, 7, BLUE, 4, False, (100, 100))
    assert [d.open for d in canvas.ops] == [False, True]
    assert canvas.move("a", 7, (120, 100))
    assert canvas.ops[0].points == [10, 10] and canvas.ops[1].points == [100, 100, 120, 100]


def test_move_or_up_of_an_unknown_stroke_changes_nothing() -> None:
    canvas = RoomCanvas()
    assert not canvas.move("a", 1, (10, 10))
    canvas.up("a", 1)
    canvas.left("nobody")
    assert canvas.ops == [] and canvas.image.getcolors() == [(CANVAS * CANVAS, WHITE)]


# -- folding into the base ---------------------------------------------------------------------------


def test_old_ops_fold_into_the_base_and_the_picture_stays_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    def draw(canvas: RoomCanvas) -> None:
        canvas.fill(3, "#eeeeee")
        for i in range(UNDO_DEPTH + 10):
            color = f"#{i % 256:02x}{7 * i % 256:02x}5a"
            line(canvas, "a", 1, i, [i * 4 % 500, 10 + i * 3, 500 - i * 4 % 500, 400], color=color, width=5)
            if i == 5:
                line(canvas, "b", 2, 1, [0, 250, 512, 250], width=30, erase=True)  # paints the fill's grey

    with monkeypatch.context() as patch:
        patch.setattr(raster, "UNDO_DEPTH", 10**6)  # nothing folds: the reference picture
        reference = RoomCanvas()
        draw(reference)
        assert reference.base_version == 0 and len(reference.ops) == UNDO_DEPTH + 12

    canvas = RoomCanvas()
    draw(canvas)
    assert len(canvas.ops) == UNDO_DEPTH
    assert canvas.base_version == 12
    assert canvas.base_background == "#eeeeee"  # the folded fill is the base's background now
    assert canvas.image.tobytes() == reference.image.tobytes()  # folding changed no pixel
    assert redrawn(canvas).image.tobytes() == reference.image.tobytes()  # nor does base + ops drawn again
    assert canvas.base.getpixel((0, 0)) == (0xEE, 0xEE, 0xEE)


def test_folded_ops_can_no_longer_be_undone() -> None:
    canvas = RoomCanvas()
    line(canvas, "a", 1, 0, [100, 100, 200, 100], color=BLUE)  # the first: it is folded
    for i in range(1, UNDO_DEPTH + 1):
        dot(canvas, 1, i, 300, 300)
    assert canvas.base_version == 1 and len(canvas.ops) == UNDO_DEPTH
    for _ in range(UNDO_DEPTH):
        assert canvas.undo(1)
    assert not canvas.undo(1)
    assert pixel(canvas, 150, 100) == BLUE_RGB  # the folded stroke, in the base
    assert pixel(canvas, 300, 300) == WHITE


def test_redo_of_an_op_folded_meanwhile_skips_it_even_when_an_alike_op_is_left() -> None:
    """Two clears by one member are alike; the older, folded, is not the younger still kept."""
    canvas = RoomCanvas()
    canvas.fill(1, "#ffffff")
    canvas.fill(1, "#ffffff")
    assert canvas.undo(1) and canvas.undo(1)  # redo would bring back the older first
    for i in range(UNDO_DEPTH - 1):
        dot(canvas, 2, i, 10, 10)
    assert canvas.base_version == 1  # the older clear folded (undone: it drew nothing)
    assert canvas.redo(1)  # brings back the younger, which is still kept
    assert [d.undone for d in canvas.ops if d.user == 1] == [False]
    assert not canvas.redo(1)


def test_an_undone_op_folds_as_nothing() -> None:
    canvas = RoomCanvas()
    canvas.fill(1, BLUE)
    assert canvas.undo(1)
    for i in range(UNDO_DEPTH):
        dot(canvas, 2, i, 10, 10)
    assert canvas.base_version == 1
    assert canvas.base_background == "#ffffff" and canvas.base.getpixel((300, 300)) == WHITE
    assert not canvas.redo(1)


def test_a_stroke_left_open_forever_holds_folding_back_only_so_long() -> None:
    canvas = RoomCanvas()
    canvas.down("a", 1, 1, BLUE, 6, False, (100, 100, 200, 100))
    most = 0
    for i in range(3 * UNDO_DEPTH):
        dot(canvas, 2, i, 300, 300)
        most = max(most, len(canvas.ops))
    assert most <= 2 * UNDO_DEPTH + 1
    assert len(canvas.ops) <= UNDO_DEPTH
    assert canvas.base_version >= 2 * UNDO_DEPTH
    assert all(d.user == 2 for d in canvas.ops)  # the open stroke was ended and folded
    assert not canvas.move("a", 1, (300, 100))  # it no longer grows
    assert canvas.base.getpixel((150, 100)) == BLUE_RGB
    assert redrawn(canvas).image.tobytes() == canvas.image.tobytes()


def test_ops_restored_from_state_are_closed_undoable_and_draw_the_same() -> None:
    canvas = RoomCanvas()
    canvas.fill(1, BLUE)
    line(canvas, "a", 1, 1, [10, 10, 50, 50], erase=False)
    canvas.down("b", 2, 1, GREEN, 9, False, (70, 70, 90, 90))  # still open when stored
    assert canvas.undo(1)  # the line undone: stored as undone
    again = redrawn(canvas)
    assert [d.state() for d in again.ops] == [d.state() for d in canvas.ops]
    assert not any(d.open for d in again.ops)
    assert again.image.tobytes() == canvas.image.tobytes()
    assert again.background == BLUE
    assert again.redo(1) is False  # what may be redone is not stored
    assert again.undo(2)  # the stroke open when stored has ended


# -- limits ------------------------------------------------------------------------------------------


def test_a_stroke_holds_at_most_max_points_and_move_says_when_it_is_full() -> None:
    canvas = RoomCanvas()
    canvas.down("a", 1, 1, RED, 2, False, (0, 0))
    chunk = tuple(float(v % 500) for v in range(256))  # 128 points
    moves = 0
    while canvas.move("a", 1, chunk):
        moves += 1
        assert moves < 100
    assert len(canvas.ops[0].points) == 2 * MAX_POINTS_PER_STROKE
    assert moves == -(-(MAX_POINTS_PER_STROKE - 1) // 128)  # the last move was cut short, then it is full
    assert not canvas.move("a", 1, (1, 1))
    assert len(canvas.ops[0].points) == 2 * MAX_POINTS_PER_STROKE


# -- the picture out ---------------------------------------------------------------------------------


def test_png_decodes_to_the_pixels_of_the_image() -> None:
    canvas = RoomCanvas()
    canvas.fill(1, "#336699")
    line(canvas, "a", 1, 1, [10, 10, 500, 480, 30, 400], color="#fedcba", width=17)
    with Image.open(io.BytesIO(canvas.png())) as picture:
        assert picture.format == "PNG" and picture.size == (CANVAS, CANVAS)
        assert picture.convert("RGB").tobytes() == canvas.image.tobytes()


def test_state_holds_the_base_as_png_its_background_and_the_ops() -> None:
    canvas = RoomCanvas()
    canvas.fill(1, BLUE)
    line(canvas, "a", 2, 1, [1, 2, 3, 4], color="#010203", width=3.5, erase=True)
    state = canvas.state()
    assert state["background"] == "#ffffff"  # the base's, before the ops
    assert state["ops"] == [
        {"u": 1, "k": "fill", "c": BLUE, "w": 0.0, "e": False, "p": [], "x": False, "s": 1},
        {"u": 2, "k": "stroke", "c": "#010203", "w": 3.5, "e": True, "p": [1, 2, 3, 4], "x": False, "s": 2},
    ]
    with Image.open(io.BytesIO(state["base"])) as base:
        assert base.format == "PNG" and base.convert("RGB").tobytes() == canvas.base.tobytes()
    without = canvas.state(with_base=False)
    assert without["base"] is None
    assert without["ops"] == state["ops"] and without["background"] == state["background"]


def test_of_state_without_a_base_starts_from_the_background() -> None:
    canvas = RoomCanvas.of_state(None, "#00ff00", [])
    assert canvas.image.getcolors() == [(CANVAS * CANVAS, GREEN_RGB)]
    assert canvas.background == "#00ff00"
    assert RoomCanvas.of_state(None, "", []).background == "#ffffff"


def test_the_background_is_the_last_kept_fill_or_the_bases() -> None:
    canvas = RoomCanvas(background="#123456")
    assert canvas.background == "#123456"
    canvas.fill(1, RED)
    canvas.fill(2, BLUE)
    assert canvas.background == BLUE
    assert canvas.undo(2)
    assert canvas.background == RED
    assert canvas.undo(1)
    assert canvas.background == "#123456"
    assert canvas.image.getcolors() == [(CANVAS * CANVAS, (0x12, 0x34, 0x56))]


# -- decode_base -------------------------------------------------------------------------------------


def encoded(picture: Image.Image, kind: str = "PNG") -> bytes:
    out = io.BytesIO()
    picture.save(out, kind)
    return out.getvalue()


def test_decode_base_makes_any_picture_a_canvas_sized_rgb_image() -> None:
    picture = Image.new("RGBA", (100, 60), (10, 200, 30, 255))
    base = decode_base(encoded(picture))
    assert base.size == (CANVAS, CANVAS) and base.mode == "RGB"
    assert base.getpixel((256, 256)) == (10, 200, 30)
    grey = decode_base(encoded(Image.new("L", (1024, 2048), 99), "JPEG"))
    assert grey.size == (CANVAS, CANVAS) and grey.mode == "RGB"
    r, g, b = grey.getpixel((10, 10))  # type: ignore[misc]
    assert abs(r - 99) <= 2 and r == g == b


def test_a_decoded_base_starts_a_canvas() -> None:
    picture = Image.new("RGB", (CANVAS, CANVAS), (1, 2, 3))
    canvas = RoomCanvas(decode_base(encoded(picture)))
    assert canvas.image.tobytes() == picture.tobytes()
    line(canvas, "a", 1, 1, [10, 10, 20, 20])
    assert canvas.base.tobytes() == picture.tobytes()  # drawing leaves the base alone


@pytest.mark.parametrize("data", [b"", b"not a picture", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_decode_base_refuses_what_is_not_a_picture(data: bytes) -> None:
    with pytest.raises(OSError):
        decode_base(data)


def test_decode_base_refuses_a_truncated_picture() -> None:
    data = encoded(Image.effect_noise((256, 256), 64).convert("RGB"))
    with pytest.raises(OSError):
        decode_base(data[: len(data) // 2])


def test_decode_base_refuses_a_picture_too_large_before_decoding_it() -> None:
    data = encoded(Image.new("1", (4097, 4096)))
    with pytest.raises(ValueError, match="too large"):
        decode_base(data)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_any_mix_of_ops_by_members_at_once_keeps_the_pixels_of_the_canvas_drawn_again(
    monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """Random downs, moves, ups, fills, undos, redos and leavings by three members (a small undo depth,
    so that folds and forced ends happen too): after each, the picture is the stored state drawn again."""
    monkeypatch.setattr(raster, "UNDO_DEPTH", 6)
    chance = random.Random(seed)
    canvas = RoomCanvas()
    colors = [RED, BLUE, GREEN, "#777777"]
    for step in range(150):
        user = chance.randrange(3)
        connection, stroke = f"c{user}", chance.randrange(2)
        roll = chance.random()
        if roll < 0.2:
            canvas.down(
                connection,
                user,
                stroke,
                chance.choice(colors),
                chance.uniform(1, 40),
                chance.random() < 0.2,
                (chance.uniform(0, 512), chance.uniform(0, 512)),
            )
        elif roll < 0.65:
            canvas.move(connection, stroke, tuple(chance.uniform(-20, 530) for _ in range(2 * chance.randint(1, 4))))
        elif roll < 0.75:
            canvas.up(connection, stroke)
        elif roll < 0.8:
            canvas.fill(user, chance.choice(colors))
        elif roll < 0.9:
            canvas.undo(user)
        elif roll < 0.97:
            canvas.redo(user)
        else:
            canvas.left(connection)
        assert len({d.stroke for d in canvas.ops}) <= 2 * raster.UNDO_DEPTH + 1  # strokes, each in parts
        if step % 3 == 0:
            assert redrawn(canvas).image.tobytes() == canvas.image.tobytes(), f"step {step}"
    assert canvas.base_version > 0


def test_heavy_ink_folds_early_so_that_drawing_all_again_stays_cheap() -> None:
    """Wide strokes cost more to draw again: the ink kept as ops stays within the budget, well before
    ``UNDO_DEPTH`` ops, and the picture is unchanged by the fold."""
    canvas = RoomCanvas()
    for k in range(30):
        points = [float((7 * k + 13 * i) % 500) for i in range(2 * 1000)]
        canvas.down("a", 1, k, RED if k % 2 else BLUE, 128, False, tuple(points[:2]))
        for i in range(2, len(points), 256):
            assert canvas.move("a", k, tuple(points[i : i + 256]))
        canvas.up("a", k)
        assert sum(d.ink() for d in canvas.ops) <= raster.INK_BUDGET + canvas.ops[-1].ink()
    assert len(canvas.ops) < UNDO_DEPTH and canvas.base_version > 0
    assert redrawn(canvas).image.tobytes() == canvas.image.tobytes()


def test_undos_mark_the_picture_stale_and_it_is_drawn_again_once(monkeypatch: pytest.MonkeyPatch) -> None:
    canvas = RoomCanvas()
    for k in range(5):
        line(canvas, "a", 1, k, [10.0 * k, 10, 10.0 * k, 400])
    canvas.png()
    renders = []
    original = RoomCanvas._render
    monkeypatch.setattr(RoomCanvas, "_render", lambda self: (renders.append(1), original(self)))
    for _ in range(4):
        assert canvas.undo(1)
    assert canvas.redo(1)
    assert renders == []  # nothing drawn yet
    first = canvas.png()
    assert renders == [1] and canvas.png() is first  # drawn once, encoded once
    assert pixel(canvas, 0, 200) == RED_RGB and pixel(canvas, 20, 200) == WHITE


def test_a_connection_holds_at_most_four_strokes_open() -> None:
    canvas = RoomCanvas()
    for k in range(6):
        canvas.down("a", 1, k, RED, 4, False, (10.0 * k, 10))
    assert [d.open for d in canvas.ops] == [False, False, True, True, True, True]
    assert not canvas.move("a", 0, (50, 50)) and canvas.move("a", 5, (60, 60))


def test_members_drawing_at_once_keep_whole_strokes_undoable() -> None:
    """Eight members drawing at once split each other's strokes into many parts; the undo depth counts
    strokes, not parts, so a member's undo still takes back the whole of their latest stroke."""
    canvas = RoomCanvas()
    for step in range(60):
        for member in range(8):
            if step == 0:
                canvas.down(f"c{member}", member, 1, RED, 6, False, (20.0 + 60 * member, 10))
            else:
                assert canvas.move(f"c{member}", 1, (20.0 + 60 * member, 10.0 + 8 * step))
    for member in range(8):
        canvas.up(f"c{member}", 1)
    assert len(canvas.ops) > UNDO_DEPTH and canvas.base_version == 0
    assert canvas.undo(3)
    assert pixel(canvas, 200, 10) == WHITE and pixel(canvas, 200, 400) == WHITE  # all of member 3's stroke
    assert pixel(canvas, 260, 400) == RED_RGB
