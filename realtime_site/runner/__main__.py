"""``python -m realtime_site.runner [--host H] [--port P] [--apps ...]``: the inference runner."""

from __future__ import annotations

import asyncio
import logging
import sys

from realtime_site.memory import return_large_buffers_to_the_os
from realtime_site.runner.apps import AppState
from realtime_site.runner.config import ConfigError, RunnerConfig, build_parser
from realtime_site.runner.server import Runner

__all__ = ["build_parser", "main"]

log = logging.getLogger("realtime_site.runner")


async def _serve(runner: Runner) -> None:
    await runner.start()
    for app in runner.apps.values():
        state = app.state.value if app.state is AppState.READY else f"unavailable: {app.reason}"
        print(f"  {app.app_id:<32} {state}", flush=True)
    host = runner.config.host
    shown = f"[{host}]" if ":" in host else host
    print(f"runner listening on ws://{shown}:{runner.port}", flush=True)
    print(f"  health:  http://{shown}:{runner.port}/healthz", flush=True)
    print(f"  apps at: ws://{shown}:{runner.port}/OWNER/ALIAS/realtime   (Ctrl+C stops)", flush=True)
    await runner.serve_until_signalled()


def main(argv: list[str] | None = None) -> int:
    try:
        config = RunnerConfig.from_args(argv)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return_large_buffers_to_the_os()  # a big input's buffers go back once it is answered
    # websockets logs request paths at debug level, and paths may carry tokens.
    logging.getLogger("websockets").setLevel(logging.WARNING)
    if config.secret is None:
        log.warning("RUNNER_SECRET is not set: listening on loopback only, accepting any local client")
    try:
        asyncio.run(_serve(Runner(config)))
    except OSError as exc:
        print(f"error: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
