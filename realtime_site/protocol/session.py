"""Where a session goes and how: app paths and ids, and the session's query parameters."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import parse_qsl

from realtime_site.protocol.errors import ValidationError

MAX_BUFFERING_RANGE = (1, 60)
_APP_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# A sub-path such as ``realtime`` or ``stream/v2``: plain ASCII segments, nothing a URL would re-read.
_SUB_PATH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(?:/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}){0,3}$")
_MAX_BUFFERING = re.compile(r"^[0-9]{1,3}$")  # ASCII digits only: str.isdigit() takes "²" too


class AppPath(NamedTuple):
    """An app and one of its paths: ``/owner/alias/realtime`` is ``("owner/alias", "realtime")``."""

    app_id: str
    sub_path: str

    @property
    def alias(self) -> str:
        return alias_of(self.app_id)


def alias_of(app_id: str) -> str:
    """``owner/alias`` to ``alias``: what a token's ``allowed_apps`` names."""
    return app_id.partition("/")[2]


_NUMBERED_APP = re.compile(r"^([0-9]+)-([A-Za-z0-9-]+)$")


def normalise_app_id(app_id: str) -> str:
    """``110602490-lcm-sd15-i2i`` means ``110602490/lcm-sd15-i2i``, as in fal's clients."""
    match = _NUMBERED_APP.match(app_id)
    return f"{match[1]}/{match[2]}" if match else app_id


def _is_name(segment: str) -> bool:
    return bool(_APP_SEGMENT.match(segment)) and ".." not in segment


def is_app_id(app_id: str) -> bool:
    """``owner/alias`` in the grammar of paths (what ``parse_app_path`` accepts)."""
    owner, sep, alias = app_id.partition("/")
    return bool(sep) and _is_name(owner) and _is_name(alias)


def is_sub_path(sub_path: str) -> bool:
    """A path of an app (``realtime``, ``stream/v2``), in the grammar of paths."""
    return bool(_SUB_PATH.match(sub_path)) and ".." not in sub_path


def parse_app_path(path: str) -> AppPath:
    """Split ``/owner/alias/realtime`` (a path without its query) into ``("owner/alias", "realtime")``.

    Strict: ASCII segments of letters, digits, ``_ . -`` only (no space, ``#``, ``%``, ``..``, empty
    segment), so the path can be written into an upstream URL as it is. Raises ``ValueError`` naming
    the problem for anything else.
    """
    shown = path[:80] + ("..." if len(path) > 80 else "")
    parts = path.strip("/").split("/", 2)
    if len(parts) < 3 or not parts[2]:
        raise ValueError(f"path {shown!r} is not /OWNER/ALIAS/realtime")
    owner, alias, sub = parts
    for segment in (owner, alias):
        if not _is_name(segment):
            raise ValueError(f"path {shown!r}: {segment[:80]!r} is not an app name (letters, digits, _ . -)")
    if not is_sub_path(sub):
        raise ValueError(f"path {shown!r}: {sub[:80]!r} is not a path of the app (letters, digits, _ . -)")
    return AppPath(f"{owner}/{alias}", sub)


def parse_max_buffering(raw: str | None, default: int = 1) -> int:
    """The ``max_buffering`` query value (``default`` when absent); ``ValidationError`` names the problem."""
    if raw is None:
        return default
    low, high = MAX_BUFFERING_RANGE
    if not _MAX_BUFFERING.match(raw) or not low <= int(raw) <= high:
        raise ValidationError("max_buffering", f"must be an integer from {low} to {high}, got {raw[:20]!r}")
    return int(raw)


def _flag(raw: str | None) -> bool:
    return raw in ("1", "true")


@dataclass(frozen=True, slots=True)
class SessionQuery:
    """A session's query parameters, as a client sends them to the gateway and the gateway to a runner."""

    fal_jwt_token: str | None = None
    max_buffering: int | None = None  # None: the app's own default
    timings: bool = False  # an x-fal-message timings after each result
    previews: bool = False  # intermediate images, as results marked "partial"
    report_drops: bool = False  # an x-fal-message dropped for each input the buffer displaces (gateway only)

    NAMES = ("fal_jwt_token", "max_buffering", "timings", "previews", "report_drops")

    @classmethod
    def parse(cls, query: str) -> SessionQuery:
        """Parse a query string; a repeated parameter (which of two tokens would count?) or a bad
        ``max_buffering`` is a ``ValidationError`` naming it. Other parameters are ignored."""
        values: dict[str, str] = {}
        for name, value in parse_qsl(query, keep_blank_values=True):
            if name in cls.NAMES and name in values:
                raise ValidationError(name, "given more than once")
            values.setdefault(name, value)
        raw_buffering = values.get("max_buffering")
        return cls(
            fal_jwt_token=values.get("fal_jwt_token"),
            max_buffering=None if raw_buffering is None else parse_max_buffering(raw_buffering),
            timings=_flag(values.get("timings")),
            previews=_flag(values.get("previews")),
            report_drops=_flag(values.get("report_drops")),
        )

    def upstream(self, max_buffering: int) -> str:
        """The query the gateway opens a runner session with (never the client's token)."""
        flags = [name for name in ("timings", "previews") if getattr(self, name)]
        return "&".join([f"max_buffering={max_buffering}", "report_drops=1", *(f"{name}=1" for name in flags)])
