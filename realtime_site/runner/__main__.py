"""``python -m realtime_site.runner [--host H] [--port P] [--apps ...]``: the inference runner."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from realtime_site.memory import return_large_buffers_to_the_os
from realtime_site.protocol import DEFAULT_MAX_FRAME_BYTES
from realtime_site.runner.apps import AppState, load_apps
from realtime_site.runner.config import DEFAULT_APPS, parse_apps
from realtime_site.runner.server import Runner, RunnerConfig, is_loopback

log = logging.getLogger("realtime_site.runner")


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m realtime_site.runner", description=__doc__)
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


async def _serve(runner: Runner) -> None:
    await runner.start()
    host = runner.config.host
    shown = f"[{host}]" if ":" in host else host
    print(f"runner listening on ws://{shown}:{runner.port}", flush=True)
    print(f"  health:  http://{shown}:{runner.port}/healthz", flush=True)
    print(f"  apps at: ws://{shown}:{runner.port}/OWNER/ALIAS/realtime   (Ctrl+C stops)", flush=True)
    await runner.serve_until_signalled()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return_large_buffers_to_the_os()  # a big input's buffers go back once it is answered
    # websockets logs request paths at debug level, and paths may carry tokens.
    logging.getLogger("websockets").setLevel(logging.WARNING)
    secret = os.environ.get("RUNNER_SECRET") or None
    if secret is None:
        if not is_loopback(args.host):
            print(
                f"error: refusing to bind {args.host} without RUNNER_SECRET; set it, or bind 127.0.0.1",
                file=sys.stderr,
            )
            return 2
        log.warning("RUNNER_SECRET is not set: listening on loopback only, accepting any local client")
    try:
        specs = parse_apps(args.apps)
    except ValueError as exc:
        print(f"error: --apps: {exc}", file=sys.stderr)
        return 2
    config = RunnerConfig(
        host=args.host,
        port=args.port,
        secret=secret,
        max_frame_bytes=args.max_frame_bytes,
        idle_timeout=args.idle_timeout,
        drain_timeout=args.drain_timeout,
    )
    apps = load_apps(specs)
    for app in apps:
        state = app.state.value if app.state is AppState.READY else f"unavailable: {app.reason}"
        print(f"  {app.app_id:<32} {state}", flush=True)
    try:
        asyncio.run(_serve(Runner(config, apps)))
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
