"""The gateway's view of its runners: health from ``/healthz``, least-loaded choice per app.

One pool per process. A background task polls every runner's ``/healthz`` every
``RUNNER_HEALTH_INTERVAL`` seconds. Only a runner's own failure marks it down: a refused or timed-out
connection, a failed health check, or the runner saying it is going away. A session that ends oddly
(which one client's input can cause) only asks for an early health check.

The pool also keeps the catalog of apps and their paths from every health check answered since the
process started, so a client's path is judged against the real app list whether or not a runner is
up at the moment (unknown ids never reach a runner, a usage row or a metric label).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import websockets
from django.conf import settings
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidHandshake, InvalidStatus

from realtime_site.protocol import ErrorCode

__all__ = ["NoRunner", "RunnerPool", "RunnerState", "get_pool"]

log = logging.getLogger("realtime_site.gateway")
UPSTREAM_OPEN_TIMEOUT = 5.0


class NoRunner(Exception):
    """No runner can take this app's session now; ``code`` says why to the client (APP_UNAVAILABLE,
    RUNNER_UNAVAILABLE, or INTERNAL_ERROR for a handshake that failed for no fault of the runner)."""

    def __init__(self, code: ErrorCode, reason: str, *, known: bool):
        super().__init__(reason)
        self.code, self.reason, self.known = code, reason, known


@dataclass
class RunnerState:
    url: str  # ws://host:port
    healthy: bool = False
    error: str | None = None
    apps: dict[str, dict[str, Any]] = field(default_factory=dict)  # app id -> healthz entry
    remote_connections: int = 0  # as the runner reported it
    local_sessions: int = 0  # this process's sessions on it, counted live

    @property
    def health_url(self) -> str:
        parts = urlsplit(self.url)
        scheme = "https" if parts.scheme == "wss" else "http"
        return f"{scheme}://{parts.netloc}/healthz"

    @property
    def load(self) -> int:
        return max(self.remote_connections, self.local_sessions)


class RunnerPool:
    def __init__(self, urls: list[str], *, interval: float):
        self.runners = [RunnerState(url.rstrip("/")) for url in urls]
        self.interval = interval
        self._poller: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._first_check: asyncio.Task[None] | None = None
        self._rechecks: dict[str, asyncio.Task[None]] = {}
        self.catalog: dict[str, tuple[str, ...]] = {}  # app id -> its paths, as any runner reported them
        self.buffering: dict[str, int] = {}  # app id -> its sessions' default buffer, as reported

    async def ready(self) -> None:
        """Start polling (once per process) and wait for the first round of health checks."""
        if self._poller is None or self._poller.done():
            self._client = httpx.AsyncClient(timeout=2.0)
            self._first_check = asyncio.get_running_loop().create_task(self.check_all())
            self._poller = asyncio.get_running_loop().create_task(self._poll())
        assert self._first_check is not None
        await asyncio.shield(self._first_check)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.check_all()

    async def check_all(self) -> None:
        await asyncio.gather(*(self._check(runner) for runner in self.runners))

    async def _check(self, runner: RunnerState) -> None:
        assert self._client is not None
        try:
            response = await self._client.get(runner.health_url)
            health = response.json()
            runner.apps = {app["id"]: app for app in health.get("apps", [])}
            for app_id, app in runner.apps.items():
                self.catalog[app_id] = tuple(str(p) for p in app.get("paths") or ("realtime",))
                buffering = app.get("buffering")
                if isinstance(buffering, int) and not isinstance(buffering, bool) and buffering >= 1:
                    self.buffering[app_id] = buffering
            runner.remote_connections = int(health.get("connections", 0))
            runner.healthy = response.status_code == 200 and health.get("status") == "ok"
            runner.error = None if runner.healthy else f"status {health.get('status')!r}"
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            if runner.healthy:
                log.warning("runner %s is down: %s", runner.url, exc)
            runner.healthy, runner.error = False, f"{type(exc).__name__}: {exc}"

    def check_soon(self, url: str) -> None:
        """Check one runner's health now (at most one check in flight per runner): after a session
        ended oddly, the check, not the session, decides whether the runner is down."""
        if url in self._rechecks or self._client is None:
            return
        for runner in self.runners:
            if runner.url == url:
                task = asyncio.get_running_loop().create_task(self._check(runner))
                self._rechecks[url] = task
                task.add_done_callback(lambda _: self._rechecks.pop(url, None))

    def known_path(self, app_id: str, sub_path: str) -> None:
        """Raise ``NoRunner`` unless ``app_id`` with ``sub_path`` is an app some runner has reported."""
        if not self.catalog:
            raise NoRunner(ErrorCode.RUNNER_UNAVAILABLE, "no runner has answered yet; try again shortly", known=False)
        paths = self.catalog.get(app_id)
        if paths is None:
            raise NoRunner(ErrorCode.APP_UNAVAILABLE, f"no app {app_id!r} on this server", known=False)
        if sub_path not in paths:
            raise NoRunner(
                ErrorCode.APP_UNAVAILABLE,
                f"app {app_id!r} has no path {sub_path!r} (paths: {', '.join(paths)})",
                known=False,
            )

    def default_buffering(self, app_id: str) -> int:
        """The buffer a session of ``app_id`` gets when its client asks for none (the app's option)."""
        return self.buffering.get(app_id, 1)

    def mark_down(self, url: str, reason: str) -> None:
        for runner in self.runners:
            if runner.url == url and runner.healthy:
                log.warning("runner %s lost: %s", url, reason)
                runner.healthy, runner.error = False, reason

    def choose(self, app_id: str, *, avoid: str | None = None) -> RunnerState:
        """The least-loaded healthy runner with ``app_id`` ready (``avoid`` only if it is the only one)."""
        up = [r for r in self.runners if r.healthy]
        ready = [r for r in up if r.apps.get(app_id, {}).get("state") == "ready"]
        if ready:
            return min([r for r in ready if r.url != avoid] or ready, key=lambda r: r.load)
        if not up:
            raise NoRunner(ErrorCode.RUNNER_UNAVAILABLE, "no runner is reachable; try again shortly", known=True)
        reasons = sorted({str(r.apps[app_id].get("reason") or "not ready") for r in up if app_id in r.apps})
        if reasons:
            raise NoRunner(
                ErrorCode.APP_UNAVAILABLE, f"app {app_id!r} is unavailable: {'; '.join(reasons)}", known=True
            )
        if any(app_id in r.apps for r in self.runners):
            raise NoRunner(ErrorCode.RUNNER_UNAVAILABLE, f"no runner serving {app_id!r} is up", known=True)
        raise NoRunner(ErrorCode.APP_UNAVAILABLE, f"no app {app_id!r} on this server", known=False)

    async def open_session(
        self, app_id: str, target: str, *, avoid: str | None = None
    ) -> tuple[ClientConnection, RunnerState]:
        """A WebSocket session at ``target`` (``app/path?query``) on the least-loaded runner with the
        app, trying the next when one cannot be reached or is draining (and marking it down); a runner
        that answers but refuses ends the search. Raises ``NoRunner``."""
        headers = {"Authorization": f"Bearer {settings.RUNNER_SECRET}"} if settings.RUNNER_SECRET else {}
        for _ in range(len(self.runners)):
            runner = self.choose(app_id, avoid=avoid)
            runner.local_sessions += 1  # counted before the await, so sessions opening together spread out
            try:
                ws = await websockets.connect(
                    f"{runner.url}/{target}",
                    additional_headers=headers,
                    compression=None,
                    max_size=None,  # the runner enforces its own cap
                    open_timeout=UPSTREAM_OPEN_TIMEOUT,
                    ping_interval=20,
                )
            except (OSError, TimeoutError) as exc:  # refused or no answer: the runner's own failure
                runner.local_sessions -= 1
                self.mark_down(runner.url, f"cannot connect: {exc}")
                avoid = runner.url
                continue
            except InvalidStatus as exc:  # it answered over HTTP, so it is up
                runner.local_sessions -= 1
                status = exc.response.status_code
                if status == 503:  # draining: it says so itself
                    self.mark_down(runner.url, "draining")
                    avoid = runner.url
                    continue
                log.warning("runner %s refused an upstream handshake with HTTP %s", runner.url, status)
                reason = f"the runner refused this session (HTTP {status})"
                raise NoRunner(ErrorCode.APP_UNAVAILABLE, reason, known=True) from None
            except (InvalidHandshake, ValueError) as exc:  # never a reason to doubt the runner
                runner.local_sessions -= 1
                log.warning("upstream handshake with %s failed: %s", runner.url, exc)
                reason = "the session to the runner could not be opened"
                raise NoRunner(ErrorCode.INTERNAL_ERROR, reason, known=True) from None
            return ws, runner
        raise NoRunner(ErrorCode.RUNNER_UNAVAILABLE, "no runner could be reached; try again shortly", known=True)

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "url": r.url,
                "healthy": r.healthy,
                "error": r.error,
                "load": r.load,
                "apps": {
                    app_id: {
                        "state": a.get("state"),
                        "reason": a.get("reason"),
                        "details": _details(a),
                        "previews": a.get("previews") is True,
                    }
                    for app_id, a in r.apps.items()
                },
            }
            for r in self.runners
        ]


def _details(app: dict[str, Any]) -> dict[str, Any]:
    details = app.get("details")
    return details if isinstance(details, dict) else {}


_pool: RunnerPool | None = None


def get_pool() -> RunnerPool:
    global _pool
    if _pool is None:
        _pool = RunnerPool(settings.RUNNER_URLS, interval=settings.RUNNER_HEALTH_INTERVAL)
    return _pool
