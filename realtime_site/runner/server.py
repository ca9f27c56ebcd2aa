"""The runner's WebSocket server: admission, ``/healthz``, and the process lifecycle.

Startup loads every app, then listens; SIGTERM refuses new sessions (503, and ``/healthz`` says
``draining``), lets the inputs already in inference finish and be delivered, closes every connection
with 1001, stops listening and returns.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import signal
import time
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from realtime_site.protocol import (
    CloseCode,
    ErrorCode,
    Refusal,
    SessionQuery,
    ValidationError,
    close_reason,
    closing_frame_bytes,
    error_message,
    parse_app_path,
)
from realtime_site.runner.apps import AppState, RunnerApp, load_apps
from realtime_site.runner.config import RunnerConfig
from realtime_site.runner.session import Session, SessionOptions

__all__ = ["Runner"]

log = logging.getLogger("realtime_site.runner")


class Runner:
    def __init__(self, config: RunnerConfig):
        self.config = config
        self.apps: dict[str, RunnerApp] = {}
        self.draining = asyncio.Event()
        self.started = time.time()
        self.server: Server | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> Server:
        """Load every app (engines load and warm up in threads), then listen."""
        apps = await asyncio.to_thread(load_apps, list(self.config.apps))
        self.apps = {app.app_id: app for app in apps}
        self.server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            process_request=self._process_request,
            compression=None,  # images are compressed already; deflate costs ~10 ms a frame
            # Frames over the cap are refused with PAYLOAD_TOO_LARGE and the connection lives on;
            # only frames over twice the cap close it (1009), bounding memory per connection.
            max_size=closing_frame_bytes(self.config.max_frame_bytes),
            ping_interval=20,
            ping_timeout=20,
            close_timeout=5,
            server_header="realtime-runner",
        )
        return self.server

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def serve_until_signalled(self) -> None:
        """Until SIGTERM or SIGINT, then a graceful shutdown; a second signal exits at once."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if stop.is_set():
                log.warning("second signal: exiting now, without finishing the inputs in inference")
                os._exit(1)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        await stop.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        """Finish the inputs in inference, then close every connection with 1001 and stop listening.
        While it drains the runner still listens: ``/healthz`` answers 503 ``draining`` and a new
        session is refused with 503, so a gateway sees the drain rather than a refused connection."""
        assert self.server is not None
        log.info("shutting down: finishing inputs in inference")
        self.draining.set()
        schedulers = [app.scheduler for app in self.apps.values() if app.scheduler is not None]
        try:
            await asyncio.wait_for(asyncio.gather(*(s.stop() for s in schedulers)), self.config.drain_timeout)
        except TimeoutError:
            log.warning("drain timeout after %.0f s; closing anyway", self.config.drain_timeout)
        self.server.close(close_connections=True, code=CloseCode.GOING_AWAY, reason="runner shutting down")
        await self.server.wait_closed()
        for app in self.apps.values():
            await asyncio.to_thread(app.shutdown)
        log.info("stopped")

    # -- HTTP ---------------------------------------------------------------------------------

    def session_settings(self, app: RunnerApp) -> dict[str, float]:
        """What a session of ``app`` gets when its client asks for nothing (reported in ``/healthz``)."""
        timeout = app.spec.session_timeout if app.spec.session_timeout is not None else self.config.idle_timeout
        return {"buffering": app.spec.buffering or 1, "session_timeout": timeout}

    def health(self) -> dict:
        apps = [app.describe() | self.session_settings(app) for app in self.apps.values()]
        return {
            "status": "draining" if self.draining.is_set() else "ok",
            "apps": apps,
            "connections": sum(a.get("load", {}).get("connections", 0) for a in apps),
            "uptime_seconds": round(time.time() - self.started, 1),
            "auth": "secret" if self.config.secret else "loopback-only",
        }

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path == "/healthz":
            body = json.dumps(self.health()).encode()
            status = 503 if self.draining.is_set() else 200
            headers = Headers(
                [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(body))),
                    ("Cache-Control", "no-store"),
                    ("Connection", "close"),
                ]
            )
            return Response(status, "OK" if status == 200 else "Service Unavailable", headers, body)
        if self.draining.is_set():
            return connection.respond(503, "runner is shutting down\n")
        return None

    # -- WebSocket ----------------------------------------------------------------------------

    def _admit(self, ws: ServerConnection) -> tuple[RunnerApp, SessionOptions]:
        request = ws.request
        assert request is not None
        if self.config.secret is not None:
            given = request.headers.get("Authorization", "")
            expected = f"Bearer {self.config.secret}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                raise Refusal(ErrorCode.UNAUTHORIZED, "this runner accepts only its gateway", CloseCode.UNAUTHORIZED)
        url = urlsplit(request.path)
        try:
            app_id, sub_path = parse_app_path(url.path)
        except ValueError as exc:
            raise Refusal(ErrorCode.APP_UNAVAILABLE, str(exc), CloseCode.NOT_FOUND) from None
        app = self.apps.get(app_id)
        if app is None:
            raise Refusal(ErrorCode.APP_UNAVAILABLE, f"no app {app_id!r} on this runner", CloseCode.NOT_FOUND)
        if sub_path not in app.spec.paths:
            paths = ", ".join(app.spec.paths)
            raise Refusal(
                ErrorCode.APP_UNAVAILABLE,
                f"app {app_id!r} has no path {sub_path!r} (paths: {paths})",
                CloseCode.NOT_FOUND,
            )
        if app.state is not AppState.READY:
            raise Refusal(
                ErrorCode.APP_UNAVAILABLE, f"app {app_id!r} is unavailable: {app.reason}", CloseCode.UNAVAILABLE
            )
        try:
            query = SessionQuery.parse(url.query)
        except ValidationError as exc:
            raise Refusal(exc.code, exc.reason, CloseCode.BAD_REQUEST) from None
        defaults = self.session_settings(app)
        return app, SessionOptions(
            max_buffering=query.max_buffering or int(defaults["buffering"]),
            timings=query.timings,
            report_drops=query.report_drops,
            previews=query.previews,
            max_frame_bytes=self.config.max_frame_bytes,
            idle_timeout=defaults["session_timeout"],
        )

    async def _handle(self, ws: ServerConnection) -> None:
        try:
            app, options = self._admit(ws)
        except Refusal as refusal:
            log.info("connection refused: %s (%s)", refusal.code.value, refusal.reason)
            try:
                await ws.send(error_message(refusal.code, refusal.reason))
                await ws.close(int(refusal.close_code), close_reason(refusal.reason))
            except ConnectionClosed:
                pass
            return
        log.info("connection open: app=%s max_buffering=%d", app.app_id, options.max_buffering)
        await Session(ws, app, options, draining=self.draining).run()
