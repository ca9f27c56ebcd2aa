"""One client connection to one app: read frames, validate, schedule, deliver results in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from realtime_site.protocol import (
    DEFAULT_MAX_FRAME_BYTES,
    ErrorCode,
    ProtocolError,
    decode_frame,
    dropped_message,
    error_message,
    parse_request,
    timings_message,
)
from realtime_site.runner.apps import RunnerApp
from realtime_site.runner.engines.base import Preview
from realtime_site.runner.execution import Job, Outcome, answer_without_work, encode_result, execute, seed_of

__all__ = ["Session", "SessionOptions"]

log = logging.getLogger("realtime_site.runner")


@dataclass(frozen=True)
class SessionOptions:
    max_buffering: int = 1
    timings: bool = False  # send x-fal-message timings after each result
    report_drops: bool = False  # send x-fal-message dropped when the buffer displaces an input
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    idle_timeout: float = 300.0
    previews: bool = False  # send each intermediate image as a result marked "partial" (opt-in)


class Session:
    def __init__(self, ws: ServerConnection, app: RunnerApp, options: SessionOptions, *, draining: asyncio.Event):
        assert app.engine is not None and app.scheduler is not None
        self.ws = ws
        self.app = app
        self.options = options
        self.draining = draining
        self.lane = app.scheduler.open_lane(options.max_buffering, self._execute, self._deliver)
        self.frames_in = 0
        self.results_out = 0
        self.previews_out = 0
        self.errors = 0

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
                    await self._send_error(ErrorCode.INTERNAL_ERROR, "the frame could not be handled")
        except ConnectionClosed:
            pass
        finally:
            watchdog.cancel()
            self.lane.close()
            log.info(
                "connection closed: app=%s frames_in=%d results_out=%d previews_out=%d errors=%d dropped=%d",
                self.app.app_id,
                self.frames_in,
                self.results_out,
                self.previews_out,
                self.errors,
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
                reason = f"no input for {idle:g} seconds"
                await self._send_error(ErrorCode.TIMEOUT, reason)
                await self.ws.close(1000, reason)
                return

    async def _on_message(self, message: bytes | str) -> None:
        self.frames_in += 1
        size = len(message) if isinstance(message, bytes) else len(message.encode())
        if size > self.options.max_frame_bytes:
            await self._send_error(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"frame is {size} bytes; the limit is {self.options.max_frame_bytes} bytes",
            )
            return
        if self.draining.is_set():
            await self._send_error(ErrorCode.RUNNER_UNAVAILABLE, "the runner is shutting down")
            return
        try:
            frame, encoding = decode_frame(message)
            request = parse_request(frame, encoding=encoding)
        except ProtocolError as exc:
            await self._send_error(exc.code, exc.reason, exc.request_id)
            return
        except Exception as exc:  # a decoder's unforeseen failure is still the frame's fault
            log.warning("app %s: frame not decodable: %s: %s", self.app.app_id, type(exc).__name__, exc)
            await self._send_error(ErrorCode.VALIDATION_ERROR, f"frame: cannot be decoded ({type(exc).__name__})")
            return
        job = Job(request, encoding, previews=self.options.previews, number=self.frames_in)
        if not self.lane.busy:  # nothing ahead of it: an answer that needs no work goes out at once
            outcome = answer_without_work(self.app, job)
            if outcome is not None:
                await self._deliver(job, outcome)
                return
        dropped = self.lane.submit(job)
        if dropped is not None and self.options.report_drops:
            with contextlib.suppress(ConnectionClosed):
                await self.ws.send(dropped_message(dropped.request.request_id, dropped.number))

    async def _execute(self, job: Job) -> Outcome:
        if not job.previews:
            return await execute(self.app, job)
        seed, started, loop = seed_of(job.request), time.perf_counter(), asyncio.get_running_loop()

        def on_preview(preview: Preview) -> None:  # in the worker thread: encoded there, sent by the loop
            frame, _ = encode_result(
                job, preview.output, seed, time.perf_counter() - started, (preview.step, preview.steps)
            )
            job.previews_sent.append(asyncio.run_coroutine_threadsafe(self._send_preview(frame), loop))

        return await execute(self.app, job, seed=seed, on_preview=on_preview)

    async def _send_preview(self, frame: bytes | str) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(frame)
            self.previews_out += 1

    async def _deliver(self, job: Job, outcome: Outcome) -> None:
        if job.previews_sent:  # the result comes after its previews
            await asyncio.gather(*(asyncio.wrap_future(sent) for sent in job.previews_sent), return_exceptions=True)
        if isinstance(outcome, ProtocolError):
            await self._send_error(outcome.code, outcome.reason, outcome.request_id)
            return
        frame, seconds = outcome
        try:
            await self.ws.send(frame)
            self.results_out += 1
            if self.options.timings:
                await self.ws.send(timings_message(seconds))
        except ConnectionClosed:
            pass

    async def _send_error(self, code: ErrorCode, reason: str, request_id: Any = None) -> None:
        self.errors += 1
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(error_message(code, reason, request_id))
