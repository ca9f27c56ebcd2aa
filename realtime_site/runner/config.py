"""Which apps a runner serves: the built-in catalogue and the ``--apps`` syntax.

``--apps`` is a comma-separated list. Each item is a catalogue app id (``local/stylize``) or
``APP_ID=ENGINE`` with options as a query string: ``test/slow=echo?delay_ms=300&workers=1``.
The option ``paths`` lists the app's WebSocket paths joined by ``+`` (default ``realtime``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

__all__ = ["CATALOGUE", "DEFAULT_APPS", "AppSpec", "parse_apps"]

_APP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PATH = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


@dataclass(frozen=True)
class AppSpec:
    app_id: str
    engine: str
    options: dict[str, str] = field(default_factory=dict)
    paths: tuple[str, ...] = ("realtime",)


CATALOGUE: dict[str, AppSpec] = {
    spec.app_id: spec
    for spec in (
        AppSpec("fal-ai/fast-lcm-diffusion", "lcm"),
        AppSpec("fal-ai/fast-turbo-diffusion", "turbo"),
        AppSpec("local/stylize", "stylize"),
        AppSpec("local/echo", "echo"),
    )
}
DEFAULT_APPS = ",".join(CATALOGUE)


def _normalise_app_id(app_id: str) -> str:
    """``110602490-lcm-sd15-i2i`` means ``110602490/lcm-sd15-i2i``, as in fal's clients."""
    match = re.match(r"^([0-9]+)-([A-Za-z0-9-]+)$", app_id)
    return f"{match[1]}/{match[2]}" if match else app_id


def _parse_item(item: str) -> AppSpec:
    app_id, sep, engine_part = item.partition("=")
    app_id = _normalise_app_id(app_id.strip())
    if not _APP_ID.match(app_id):
        raise ValueError(f"app id {app_id!r} is not OWNER/ALIAS")
    if not sep:
        if app_id not in CATALOGUE:
            raise ValueError(f"unknown app {app_id!r}; known: {', '.join(CATALOGUE)} (or use ID=ENGINE)")
        return CATALOGUE[app_id]
    engine, _, query = engine_part.partition("?")
    if not engine:
        raise ValueError(f"app {app_id!r}: engine name missing after '='")
    options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    paths = tuple(re.split(r"[+\s]+", options.pop("paths", "realtime").strip()))  # "+" may arrive as a space
    for path in paths:
        if not _PATH.match(path):
            raise ValueError(f"app {app_id!r}: invalid path {path!r}")
    return AppSpec(app_id, engine, options, paths)


def parse_apps(text: str) -> list[AppSpec]:
    specs = [_parse_item(item) for item in text.split(",") if item.strip()]
    if not specs:
        raise ValueError("no apps given")
    seen: set[str] = set()
    for spec in specs:
        if spec.app_id in seen:
            raise ValueError(f"app {spec.app_id!r} is listed twice")
        seen.add(spec.app_id)
    return specs
