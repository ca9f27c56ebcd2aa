"""The room's one canvas, rasterised here on the server: the truth every member's canvas converges
to, and what the runner is sent (docs/rooms.md, "One truth for the canvas").

Ops are applied in the order the room's driver receives them. The last ``UNDO_DEPTH`` ops are kept
as ops, so that a member can undo and redo their own; older ones are folded into ``base``, an image.
A stroke is drawn segment by segment, each a line with round ends, the same calls whether it is
drawn as it comes or again after an undo, so both give the same pixels. The eraser paints the
background: the colour of the last fill before the stroke (white before any).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageDraw

from realtime_site.rooms.ops import CANVAS, MAX_POINTS_PER_STROKE

__all__ = ["UNDO_DEPTH", "RoomCanvas", "decode_base"]

UNDO_DEPTH = 100  # ops kept undoable; older ones are folded into the base image
WHITE = "#ffffff"


@dataclass(eq=False)  # each op is itself: two alike (two clears) are still two (``redo`` looks one up)
class Drawn:
    """One op in the canvas's history: a stroke or a fill (a clear is a white fill)."""

    user: int
    kind: str  # "stroke" or "fill"
    color: str
    width: float = 0.0
    erase: bool = False
    points: list[float] = field(default_factory=list)
    undone: bool = False
    open: bool = False  # a stroke still being drawn

    def state(self) -> dict[str, Any]:
        return {"u": self.user, "k": self.kind, "c": self.color, "w": self.width, "e": self.erase,
                "p": list(self.points), "x": self.undone}  # fmt: skip

    @classmethod
    def of(cls, state: dict[str, Any]) -> Drawn:
        return cls(int(state["u"]), str(state["k"]), str(state["c"]), float(state["w"]), bool(state["e"]),
                   [float(v) for v in state["p"]], bool(state["x"]))  # fmt: skip


def decode_base(data: bytes) -> Image.Image:
    """A picture as the canvas's starting image: RGB, ``CANVAS`` square (raises on a bad picture)."""
    with Image.open(io.BytesIO(data)) as picture:
        if picture.width * picture.height > 4096 * 4096:
            raise ValueError("the picture is too large")
        return picture.convert("RGB").resize((CANVAS, CANVAS))


class RoomCanvas:
    def __init__(self, base: Image.Image | None = None, background: str = WHITE, ops: list[Drawn] | None = None):
        self.base = base if base is not None else Image.new("RGB", (CANVAS, CANVAS), background)
        self.base_background = background
        self.base_version = 0  # grows whenever ops are folded into the base
        self.ops: list[Drawn] = ops or []
        self._strokes: dict[tuple[str, int], Drawn] = {}  # open strokes by (connection, stroke number)
        self._redo: dict[int, list[Drawn]] = {}  # per user, the ops they undid, last undone last
        self.image = self.base.copy()
        self._render()

    # -- ops -------------------------------------------------------------------------------------

    def down(self, connection: str, user: int, stroke: int, color: str, width: float, erase: bool,
             points: tuple[float, ...]) -> None:  # fmt: skip
        self._end(connection, stroke)
        drawn = Drawn(user, "stroke", color, width, erase, [], open=True)
        self._strokes[(connection, stroke)] = drawn
        self._add(drawn)
        self.move(connection, stroke, points)

    def move(self, connection: str, stroke: int, points: tuple[float, ...]) -> bool:
        """Extend an open stroke; False when there is none or it is full (``MAX_POINTS_PER_STROKE``)."""
        drawn = self._strokes.get((connection, stroke))
        if drawn is None or len(drawn.points) // 2 >= MAX_POINTS_PER_STROKE:
            return False
        room = 2 * MAX_POINTS_PER_STROKE - len(drawn.points)
        start = len(drawn.points)
        drawn.points.extend(points[:room])
        # What came after the stroke began stays on top of it, as when all is drawn again (an undo, a fold).
        later = self.ops[next(i for i in range(len(self.ops) - 1, -1, -1) if self.ops[i] is drawn) + 1 :]
        later = [d for d in later if not d.undone]
        if any(d.kind == "fill" for d in later):
            return True  # under a fill made since: the new points show nowhere
        draw, background = ImageDraw.Draw(self.image), self._background_of(drawn)
        self._draw_stroke(draw, drawn, background, start)
        for other in later:  # strokes only, on the same background (no fill since)
            self._draw_stroke(draw, other, background, 0)
        return True

    def up(self, connection: str, stroke: int) -> None:
        self._end(connection, stroke)

    def fill(self, user: int, color: str) -> None:
        drawn = Drawn(user, "fill", color)
        self._add(drawn)
        self.image.paste(color, (0, 0, CANVAS, CANVAS))

    def undo(self, user: int) -> bool:
        for drawn in reversed(self.ops):
            if drawn.user == user and not drawn.undone and not drawn.open:
                drawn.undone = True
                self._redo.setdefault(user, []).append(drawn)
                self._render()
                return True
        return False

    def redo(self, user: int) -> bool:
        stack = self._redo.get(user) or []
        while stack:
            drawn = stack.pop()
            if drawn in self.ops:  # not folded into the base meanwhile
                drawn.undone = False
                self._render()
                return True
        return False

    def left(self, connection: str) -> None:
        """A connection left: its open strokes end where they are."""
        for key in [k for k in self._strokes if k[0] == connection]:
            self._strokes.pop(key).open = False

    # -- the picture -----------------------------------------------------------------------------

    @property
    def background(self) -> str:
        """What the eraser paints now: the last fill's colour."""
        fills = [d.color for d in self.ops if d.kind == "fill" and not d.undone]
        return fills[-1] if fills else self.base_background

    def png(self) -> bytes:
        """The canvas as PNG (fast compression: it is sent at every change)."""
        out = io.BytesIO()
        self.image.save(out, "PNG", compress_level=1)
        return out.getvalue()

    def state(self, *, with_base: bool = True) -> dict[str, Any]:
        """What is stored: the base image (PNG; None without ``with_base``), its background, the ops since."""
        base = None
        if with_base:
            out = io.BytesIO()
            self.base.save(out, "PNG", compress_level=6)
            base = out.getvalue()
        return {"base": base, "background": self.base_background, "ops": [d.state() for d in self.ops]}

    @classmethod
    def of_state(cls, base: bytes | None, background: str, ops: list[dict[str, Any]]) -> RoomCanvas:
        return cls(decode_base(base) if base else None, background or WHITE, [Drawn.of(o) for o in ops])

    # -- inside ----------------------------------------------------------------------------------

    def _end(self, connection: str, stroke: int) -> None:
        drawn = self._strokes.pop((connection, stroke), None)
        if drawn is not None:
            drawn.open = False

    def _add(self, drawn: Drawn) -> None:
        self._redo.pop(drawn.user, None)  # a new op: what the user undid can no longer come back
        self.ops.append(drawn)
        self._fold()

    def _fold(self) -> None:
        """Fold the oldest ops into the base while more than ``UNDO_DEPTH`` are kept. A stroke left open
        holds the fold back only until ``2 * UNDO_DEPTH`` ops wait behind it: then it is ended."""
        draw = None
        if len(self.ops) > 2 * UNDO_DEPTH and self.ops[0].open:
            for key in [k for k, d in self._strokes.items() if d is self.ops[0]]:
                del self._strokes[key]
            self.ops[0].open = False
        while len(self.ops) > UNDO_DEPTH and not self.ops[0].open:
            drawn = self.ops.pop(0)
            self.base_version += 1
            if drawn.undone:
                continue
            if drawn.kind == "fill":
                self.base.paste(drawn.color, (0, 0, CANVAS, CANVAS))
                self.base_background = drawn.color
            else:
                draw = draw or ImageDraw.Draw(self.base)
                self._draw_stroke(draw, drawn, self.base_background, 0)

    def _background_of(self, target: Drawn) -> str:
        background = self.base_background
        for drawn in self.ops:
            if drawn is target:
                break
            if drawn.kind == "fill" and not drawn.undone:
                background = drawn.color
        return background

    def _render(self) -> None:
        self.image = self.base.copy()
        draw = ImageDraw.Draw(self.image)
        background = self.base_background
        for drawn in self.ops:
            if drawn.undone:
                continue
            if drawn.kind == "fill":
                self.image.paste(drawn.color, (0, 0, CANVAS, CANVAS))
                background = drawn.color
            else:
                self._draw_stroke(draw, drawn, background, 0)

    @staticmethod
    def _draw_stroke(draw: ImageDraw.ImageDraw, drawn: Drawn, background: str, start: int) -> None:
        """Points from index ``start`` on (each point a round dab, each segment a line to the one before)."""
        color = background if drawn.erase else drawn.color
        width = max(1, round(drawn.width))
        radius = drawn.width / 2
        points = drawn.points
        for i in range(start, len(points) - 1, 2):
            x, y = points[i], points[i + 1]
            if i >= 2:
                draw.line((points[i - 2], points[i - 1], x, y), fill=color, width=width)
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=color)
