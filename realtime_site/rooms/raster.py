"""The room's one canvas, rasterised here on the server: the truth every member's canvas converges
to, and what the runner is sent (docs/rooms.md, "One truth for the canvas").

Ops are applied in the order the room's driver receives them, each on top of what came before, as
the members' pages draw them as they arrive. A stroke that grows after other ops were added goes on
in a new part, on top of them. The last ops are kept as ops, so that a member can undo and redo
their own (a stroke with all its parts): at most ``UNDO_DEPTH`` strokes and fills, at most ``INK_BUDGET``
of ink (what drawing them all again costs), so that an undo never costs more than a few tens of
milliseconds; older ones are folded into ``base``, an image. A stroke is drawn segment by segment,
each a line with round ends, the same calls whether it is drawn as it comes or again after an undo,
so both give the same pixels. An undo or redo marks the picture stale; it is drawn again once, when
it is next looked at (``image``, ``png``), however many came meanwhile. The eraser paints the
background: the colour of the last fill before the stroke (white before any).
"""

from __future__ import annotations

import collections
import io
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageDraw

from realtime_site.rooms.ops import CANVAS, MAX_POINTS_PER_STROKE

__all__ = ["UNDO_DEPTH", "RoomCanvas", "decode_base"]

UNDO_DEPTH = 100  # ops kept undoable; older ones are folded into the base image
INK_BUDGET = 20_000.0  # ink kept as ops: drawing it all again takes about 30 ms here (bench-measured)
INK_PER_AREA = 1 / 880  # a point costs 1 + width**2 / 880 ink: its line and dab grow with the width
MAX_OPEN_PER_CONNECTION = 4  # open strokes (fingers); a fifth ends the oldest
MAX_PARTS = 20 * UNDO_DEPTH  # ops in all (members drawing at once split their strokes into parts)
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
    stroke: int = 0  # the member's stroke this is part of (its parts are undone together); 0: its own

    def state(self) -> dict[str, Any]:
        return {"u": self.user, "k": self.kind, "c": self.color, "w": self.width, "e": self.erase,
                "p": list(self.points), "x": self.undone, "s": self.stroke}  # fmt: skip

    @classmethod
    def of(cls, state: dict[str, Any]) -> Drawn:
        return cls(int(state["u"]), str(state["k"]), str(state["c"]), float(state["w"]), bool(state["e"]),
                   [float(v) for v in state["p"]], bool(state["x"]), stroke=int(state.get("s", 0)))  # fmt: skip

    def ink(self) -> float:
        return len(self.points) / 2 * (1 + self.width**2 * INK_PER_AREA) if self.kind == "stroke" else 1.0

    def same_stroke(self, other: Drawn) -> bool:
        return other is self or other.stroke == self.stroke


def decode_base(data: bytes) -> Image.Image:
    """A picture as the canvas's starting image: RGB, ``CANVAS`` square (raises on a bad picture)."""
    with Image.open(io.BytesIO(data)) as picture:
        if picture.width * picture.height > 4096 * 4096:
            raise ValueError("the picture is too large")
        return picture.convert("RGB").resize((CANVAS, CANVAS))


@dataclass(eq=False)
class _Open:
    """An open stroke: its part being drawn, and how many points all its parts hold."""

    part: Drawn
    points: int = 0


class RoomCanvas:
    def __init__(self, base: Image.Image | None = None, background: str = WHITE, ops: list[Drawn] | None = None):
        self.base = base if base is not None else Image.new("RGB", (CANVAS, CANVAS), background)
        self.base_background = background
        self.base_version = 0  # grows whenever ops are folded into the base
        self.ops: list[Drawn] = ops or []
        self._open: dict[tuple[str, int], _Open] = {}  # open strokes by (connection, stroke number)
        self._redo: dict[int, list[Drawn]] = {}  # per user, the ops they undid, last undone last
        self._strokes = max((d.stroke for d in self.ops), default=0)  # numbers given to strokes and fills
        for drawn in self.ops:
            if drawn.stroke == 0:  # stored before ops had numbers
                self._strokes += 1
                drawn.stroke = self._strokes
        self._kept = collections.Counter(d.stroke for d in self.ops)  # parts kept, by stroke
        self._ink = sum(d.ink() for d in self.ops)
        self._image = self.base.copy()
        self._stale = True  # the picture must be drawn again from the base and the ops
        self._png: bytes | None = None

    # -- ops -------------------------------------------------------------------------------------

    def down(self, connection: str, user: int, stroke: int, color: str, width: float, erase: bool,
             points: tuple[float, ...]) -> None:  # fmt: skip
        self._end(connection, stroke)
        mine = [key for key in self._open if key[0] == connection]
        for key in mine[: max(0, len(mine) - MAX_OPEN_PER_CONNECTION + 1)]:
            self._end(*key)
        self._strokes += 1
        part = Drawn(user, "stroke", color, width, erase, [], open=True, stroke=self._strokes)
        self._open[(connection, stroke)] = _Open(part)
        self._add(part)
        self.move(connection, stroke, points)

    def move(self, connection: str, stroke: int, points: tuple[float, ...]) -> bool:
        """Extend an open stroke; False when there is none or it is full (``MAX_POINTS_PER_STROKE``)."""
        entry = self._open.get((connection, stroke))
        if entry is None or entry.points >= MAX_POINTS_PER_STROKE:
            return False
        taken = points[: 2 * (MAX_POINTS_PER_STROKE - entry.points)]
        part, start = entry.part, len(entry.part.points)
        if start and not self._is_last(part):  # others drew since: go on in a new part, on top of them
            part.open = False
            part = entry.part = Drawn(part.user, "stroke", part.color, part.width, part.erase, part.points[-2:],
                                      open=True, stroke=part.stroke)  # fmt: skip
            self._add(part, keep_redo=True)
            start = 0  # its first point, the joint, is drawn again on top too
        before = part.ink()
        part.points.extend(taken)
        entry.points += len(taken) // 2
        self._ink += part.ink() - before
        if not self._stale:
            self._draw_stroke(ImageDraw.Draw(self._image), part, self._background_of(part), start)
        self._changed()
        if self._ink > INK_BUDGET:
            self._fold()
        return True

    def up(self, connection: str, stroke: int) -> None:
        self._end(connection, stroke)

    def fill(self, user: int, color: str) -> None:
        self._strokes += 1
        self._add(Drawn(user, "fill", color, stroke=self._strokes))
        if not self._stale:
            self._image.paste(color, (0, 0, CANVAS, CANVAS))
        self._changed()

    def undo(self, user: int) -> bool:
        """Take back the user's latest op (a stroke with all its parts)."""
        for drawn in reversed(self.ops):
            if drawn.user == user and not drawn.undone and not drawn.open:
                parts = [d for d in self.ops if d.same_stroke(drawn) and not d.undone]
                if any(d.open for d in parts):
                    return False  # the stroke is still being drawn
                for part in parts:
                    part.undone = True
                self._redo.setdefault(user, []).append(drawn)
                self._stale = True
                self._changed()
                return True
        return False

    def redo(self, user: int) -> bool:
        stack = self._redo.get(user) or []
        while stack:
            drawn = stack.pop()
            parts = [d for d in self.ops if d.same_stroke(drawn)]
            if drawn in parts:  # not folded into the base meanwhile
                for part in parts:
                    part.undone = False
                self._stale = True
                self._changed()
                return True
        return False

    def left(self, connection: str) -> None:
        """A connection left: its open strokes end where they are."""
        for key in [k for k in self._open if k[0] == connection]:
            self._end(*key)

    # -- the picture -----------------------------------------------------------------------------

    @property
    def image(self) -> Image.Image:
        if self._stale:
            self._render()
        return self._image

    @property
    def background(self) -> str:
        """What the eraser paints now: the last fill's colour."""
        fills = [d.color for d in self.ops if d.kind == "fill" and not d.undone]
        return fills[-1] if fills else self.base_background

    def png(self) -> bytes:
        """The canvas as PNG (fast compression: it is sent at every change; encoded once a change)."""
        if self._png is None:
            out = io.BytesIO()
            self.image.save(out, "PNG", compress_level=1)
            self._png = out.getvalue()
        return self._png

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

    def _changed(self) -> None:
        self._png = None

    def _is_last(self, part: Drawn) -> bool:
        for drawn in reversed(self.ops):
            if drawn is part:
                return True
            if not drawn.undone:
                return False
        return False

    def _end(self, connection: str, stroke: int) -> None:
        entry = self._open.pop((connection, stroke), None)
        if entry is not None:
            entry.part.open = False

    def _add(self, drawn: Drawn, *, keep_redo: bool = False) -> None:
        if not keep_redo:
            self._redo.pop(drawn.user, None)  # a new op: what the user undid can no longer come back
        self.ops.append(drawn)
        self._kept[drawn.stroke] += 1
        self._ink += drawn.ink()
        self._fold()

    def _over(self, factor: int) -> bool:
        """More than ``UNDO_DEPTH`` strokes and fills kept (``factor`` times), or ink, or parts."""
        return (
            len(self._kept) > factor * UNDO_DEPTH
            or self._ink > factor * INK_BUDGET
            or len(self.ops) > factor * MAX_PARTS
        )

    def _fold(self) -> None:
        """Fold the oldest ops into the base while more than ``UNDO_DEPTH`` ops or ``INK_BUDGET`` ink are
        kept. A stroke left open holds the fold back only until twice that waits behind it: then it ends."""
        draw = None
        if self.ops and self.ops[0].open and self._over(2):
            for key in [k for k, e in self._open.items() if e.part is self.ops[0]]:
                self._end(*key)
        while self.ops and self._over(1) and not self.ops[0].open:
            drawn = self.ops.pop(0)
            self._ink -= drawn.ink()
            self._kept[drawn.stroke] -= 1
            if self._kept[drawn.stroke] <= 0:
                del self._kept[drawn.stroke]
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
        image = self.base.copy()
        draw = ImageDraw.Draw(image)
        background = self.base_background
        for drawn in self.ops:
            if drawn.undone:
                continue
            if drawn.kind == "fill":
                image.paste(drawn.color, (0, 0, CANVAS, CANVAS))
                background = drawn.color
            else:
                self._draw_stroke(draw, drawn, background, 0)
        self._image, self._stale = image, False

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
            # Pillow's box is inclusive: half a pixel in on each side gives the line's own width (no beads).
            draw.ellipse((x - radius + 0.5, y - radius + 0.5, x + radius - 0.5, y + radius - 0.5), fill=color)
