"""One client connection to one app: the socket pumped through ``SessionState`` (the rules, no I/O)
and the app's scheduler (fair turns at the engine); results go back in input order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from realtime_site.protocol import CloseCode, ErrorCode
from realtime_site.runner.apps import RunnerApp
from realtime_site.runner.engines.base import Preview
from realtime_site.runner.execution import Abandoned, Job, Outcome, answer_without_work, execute, seed_of
from realtime_site.runner.session_state import SessionOptions, SessionState

__all__ = ["Session", "SessionOptions"]

log = logging.getLogger("realtime_site.runner")


class Session:
    def __init__(self, ws: ServerConnection, app: RunnerApp, options: SessionOptions, *, draining: asyncio.Event):
        assert app.engine is not None and app.scheduler is not None
        self.ws = ws
        self.app = app
        self.options = options
        self.draining = draining
        self.state = SessionState(options, app.app_id)
        self.lane = app.scheduler.open_lane(options.max_buffering, self._execute, self._deliver)
        self.closed = False  # the client's connection ended: work in hand stops at its next step

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._last_input = loop.time()
        watchdog = loop.create_task(self._close_when_idle())
        try:
            async for message in self.ws:
                self._last_input = loop.time()
                try:
                    await self._on_message(message)
                except (ConnectionClosed, asyncio.CancelledError):
                    raise
                except Exception:  # a bug met by one frame must not end the session
                    log.exception("app %s: frame handling failed", self.app.app_id)
                    await self._send(self.state.error(ErrorCode.INTERNAL_ERROR, "the frame could not be handled"))
        except ConnectionClosed:
            pass
        finally:
            self.closed = True
            watchdog.cancel()
            self.lane.close()
            state = self.state
            log.info(
                "connection closed: app=%s frames_in=%d results_out=%d previews_out=%d errors=%d dropped=%d",
                self.app.app_id,
                state.frames_in,
                state.results_out,
                state.previews_out,
                state.errors,
                self.lane.buffer.dropped,
            )

    async def _close_when_idle(self) -> None:
        """TIMEOUT after ``idle_timeout`` seconds with no input and nothing in hand (one timer, not one per frame)."""
        loop = asyncio.get_running_loop()
        idle = self.options.idle_timeout
        while True:
            await asyncio.sleep(max(0.0, self._last_input + idle - loop.time()))
            if self.lane.busy:
                self._last_input = loop.time()
            elif loop.time() - self._last_input >= idle:
                error, reason = self.state.idle_timeout()
                await self._send(error)
                await self.ws.close(CloseCode.NORMAL.value, reason)
                return

    async def _on_message(self, message: bytes | str) -> None:
        job = self.state.receive(message, draining=self.draining.is_set())
        if not isinstance(job, Job):
            await self._send(job)
            return
        if not self.lane.busy:  # nothing ahead of it: an answer that needs no work goes out at once
            outcome = answer_without_work(self.app, job)
            if outcome is not None:
                await self._deliver(job, outcome)
                return
        dropped = self.lane.submit(job)
        report = self.state.dropped(dropped) if dropped is not None else None
        if report is not None:
            await self._send(report)

    async def _execute(self, job: Job) -> Outcome:
        if not job.previews:
            return await execute(self.app, job)
        seed, started, loop = seed_of(job.request), time.perf_counter(), asyncio.get_running_loop()

        def on_preview(preview: Preview) -> None:  # in the worker thread: encoded there, sent by the loop
            if self.closed:  # nobody will see the rest: stop the engine at this step
                log.info(
                    "app %s: input abandoned at step %d of %d (connection closed)",
                    self.app.app_id,
                    preview.step,
                    preview.steps,
                )
                raise Abandoned()
            frame = self.state.preview(job, preview, seed, time.perf_counter() - started)
            job.previews_sent.append(asyncio.run_coroutine_threadsafe(self._send(frame), loop))

        return await execute(self.app, job, seed=seed, on_preview=on_preview)

    async def _deliver(self, job: Job, outcome: Outcome) -> None:
        if job.previews_sent:  # the result comes after its previews
            await asyncio.gather(*(asyncio.wrap_future(sent) for sent in job.previews_sent), return_exceptions=True)
        for message in self.state.answer(job, outcome):
            await self._send(message)

    async def _send(self, message: bytes | str) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(message)
