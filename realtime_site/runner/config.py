"""The runner's configuration, from its arguments and the environment (``RunnerConfig``), and which
apps it serves: the built-in catalogue and the ``--apps`` syntax.

``--apps`` is a comma-separated list. Each item is a catalogue app id (``local/stylize``) or
``APP_ID=ENGINE`` with options as a query string: ``test/slow=echo?delay_ms=300&workers=1``.
The option ``paths`` lists the app's WebSocket paths joined by ``+`` (default ``realtime``).
Two options set the app's sessions, as a fal app's ``@realtime(buffering=, session_timeout=)`` does:
``buffering`` is the buffer a session gets when its client asks for none (``max_buffering``; default
1, latest input wins) and ``session_timeout`` the seconds of no input after which a session ends
(default: the runner's ``--idle-timeout``).
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from realtime_site.protocol import (
    DEFAULT_MAX_FRAME_BYTES,
    ValidationError,
    is_app_id,
    is_sub_path,
    normalise_app_id,
    parse_max_buffering,
)

__all__ = [
    "CATALOGUE",
    "DEFAULT_APPS",
    "AppSpec",
    "ConfigError",
    "RunnerConfig",
    "build_parser",
    "is_loopback",
    "parse_apps",
]

SESSION_TIMEOUT_MAX = 86_400.0  # a day: a session with no input is never held longer


@dataclass(frozen=True)
class AppSpec:
    app_id: str
    engine: str
    options: dict[str, str] = field(default_factory=dict)
    paths: tuple[str, ...] = ("realtime",)
    buffering: int | None = None  # None: 1, latest input wins
    session_timeout: float | None = None  # None: the runner's idle timeout


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


def _parse_item(item: str) -> AppSpec:
    app_id, sep, engine_part = item.partition("=")
    app_id = normalise_app_id(app_id.strip())
    if not is_app_id(app_id):
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
        if not is_sub_path(path):
            raise ValueError(f"app {app_id!r}: invalid path {path!r}")
    buffering = _buffering(app_id, options.pop("buffering", None))
    session_timeout = _session_timeout(app_id, options.pop("session_timeout", None))
    return AppSpec(app_id, engine, options, paths, buffering, session_timeout)


def _buffering(app_id: str, raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        return parse_max_buffering(raw)
    except ValidationError as exc:
        raise ValueError(f"app {app_id!r}: buffering {exc.reason.partition(': ')[2]}") from None


def _session_timeout(app_id: str, raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 < value <= SESSION_TIMEOUT_MAX:  # also false for NaN
        raise ValueError(
            f"app {app_id!r}: session_timeout must be seconds above 0 and at most {SESSION_TIMEOUT_MAX:g}, got {raw!r}"
        )
    return value


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


class ConfigError(ValueError):
    """A setting the runner cannot start with; the message names it."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class RunnerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    secret: str | None = None  # RUNNER_SECRET: the gateway's bearer token; None: loopback only
    apps: tuple[AppSpec, ...] = ()
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    idle_timeout: float = 300.0
    drain_timeout: float = 30.0
    log_level: str = "INFO"

    @classmethod
    def from_args(cls, argv: list[str] | None = None, environ: Mapping[str, str] = os.environ) -> RunnerConfig:
        """From the command line, over ``RUNNER_*`` variables; ``ConfigError`` names what cannot be."""
        args = build_parser(environ).parse_args(argv)
        secret = environ.get("RUNNER_SECRET") or None
        if secret is None and not is_loopback(args.host):
            raise ConfigError(f"refusing to bind {args.host} without RUNNER_SECRET; set it, or bind 127.0.0.1")
        try:
            apps = tuple(parse_apps(args.apps))
        except ValueError as exc:
            raise ConfigError(f"--apps: {exc}") from None
        return cls(
            host=args.host,
            port=args.port,
            secret=secret,
            apps=apps,
            max_frame_bytes=args.max_frame_bytes,
            idle_timeout=args.idle_timeout,
            drain_timeout=args.drain_timeout,
            log_level=args.log_level.upper(),
        )


def build_parser(environ: Mapping[str, str] = os.environ) -> argparse.ArgumentParser:
    env = environ.get
    parser = argparse.ArgumentParser(
        prog="python -m realtime_site.runner", description="The inference runner (docs/protocol.md section 5)."
    )
    parser.add_argument("--host", default=env("RUNNER_HOST", "127.0.0.1"), help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=int(env("RUNNER_PORT", "8765")), help="port (0: any free port)")
    parser.add_argument(
        "--apps",
        default=env("RUNNER_APPS", DEFAULT_APPS),
        help="comma-separated app ids, or ID=ENGINE?opt=value (default: %(default)s)",
    )
    parser.add_argument(
        "--max-frame-bytes", type=int, default=int(env("RUNNER_MAX_FRAME_BYTES", str(DEFAULT_MAX_FRAME_BYTES)))
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=float(env("RUNNER_IDLE_TIMEOUT", "300")),
        help="seconds without input before a connection is closed (TIMEOUT)",
    )
    parser.add_argument("--drain-timeout", type=float, default=30.0, help="at most this long to finish work on SIGTERM")
    parser.add_argument("--log-level", default=env("RUNNER_LOG_LEVEL", "INFO"))
    return parser
