"""One client connection to one app: read frames, validate, schedule, deliver results in order."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from realtime_site.protocol import (
    DEFAULT_MAX_FRAME_BYTES,
    SEED_MAX,
    Encoding,
    ErrorCode,
    ImageRequest,
    ProtocolError,
    ValidationError,
    decode_frame,
    dropped_message,
    encode_frame,
    error_message,
    parse_request,
    result_payload,
    timings_message,
)
from realtime_site.runner.apps import RunnerApp
from realtime_site.runner.engines import Engine, EngineOutput
from realtime_site.runner.engines.base import OnPreview, Preview

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


@dataclass(frozen=True, slots=True)
class _Job:
    request: ImageRequest
    encoding: Encoding
    previews: bool = False
    # Previews handed to the event loop, in order; the result goes out after them.
    previews_sent: list[concurrent.futures.Future[None]] = field(default_factory=list)


def _seed_of(request: ImageRequest) -> int:
    """The input's seed, or a random one (returned in the result so the image can be repeated)."""
    return request.seed if request.seed is not None else secrets.randbelow(SEED_MAX + 1)


def _timed_infer(
    engine: Engine, request: ImageRequest, seed: int, on_preview: OnPreview | None
) -> tuple[EngineOutput, float]:
    started = time.perf_counter()
    if on_preview is None:
        output = engine.infer(request, seed)
    else:
        output = engine.infer_with_previews(request, seed, on_preview)
    return output, time.perf_counter() - started


Outcome = tuple[bytes | str, float] | ProtocolError


def encode_result(
    job: _Job, output: EngineOutput, seed: int, seconds: float, step: tuple[int, int] | None = None
) -> tuple[bytes | str, float]:
    payload = result_payload(
        job.request,
        image=output.image,
        width=output.width,
        height=output.height,
        content_type=output.content_type,
        seed=seed,
        inference_seconds=seconds,
        encoding=job.encoding,
        step=step,
    )
    return encode_frame(payload, job.encoding), seconds


async def execute_one(
    app: RunnerApp, job: _Job, *, seed: int | None = None, on_preview: OnPreview | None = None
) -> Outcome:
    """Run the engine on one input in a worker thread and encode the answer; never raises."""
    request = job.request
    seed = _seed_of(request) if seed is None else seed
    loop = asyncio.get_running_loop()
    try:
        output, seconds = await loop.run_in_executor(app.executor, _timed_infer, app.engine, request, seed, on_preview)
    except ProtocolError as exc:
        exc.request_id = request.request_id
        return exc
    except Exception:
        log.exception("app %s: inference failed", app.app_id)
        return ProtocolError("inference failed", code=ErrorCode.INTERNAL_ERROR, request_id=request.request_id)
    return encode_result(job, output, seed, seconds)


def _timed_infer_batch(
    engine: Engine, requests: list[ImageRequest], seeds: list[int]
) -> tuple[list[EngineOutput], float]:
    started = time.perf_counter()
    outputs = engine.infer_batch(requests, seeds)
    return outputs, time.perf_counter() - started


async def execute_batch(app: RunnerApp, jobs: list[_Job]) -> list[Outcome]:
    """Inputs of several connections in one engine call (each frame's timing is the call's)."""
    seeds = [_seed_of(job.request) for job in jobs]
    requests = [job.request for job in jobs]
    loop = asyncio.get_running_loop()
    try:
        outputs, seconds = await loop.run_in_executor(app.executor, _timed_infer_batch, app.engine, requests, seeds)
    except Exception:  # one bad input must not fail its neighbours: answer each on its own
        return [await execute_one(app, job) for job in jobs]
    return [encode_result(job, out, seed, seconds) for job, out, seed in zip(jobs, outputs, seeds, strict=True)]


class Session:
    def __init__(self, ws: ServerConnection, app: RunnerApp, options: SessionOptions, *, draining: asyncio.Event):
        assert app.engine is not None and app.scheduler is not None
        self.ws = ws
        self.app = app
        self.engine = app.engine
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
        job = _Job(request, encoding, previews=self.options.previews)
        if not self.lane.busy:  # nothing ahead of it: an answer that needs no work goes out at once
            outcome = self._answer_without_work(job)
            if outcome is not None:
                await self._deliver(job, outcome)
                return
        dropped = self.lane.submit(job)
        if dropped is not None and self.options.report_drops:
            with contextlib.suppress(ConnectionClosed):
                await self.ws.send(dropped_message(dropped.request.request_id))

    def _answer_without_work(self, job: _Job) -> Outcome | None:
        started = time.perf_counter()
        try:
            output = self.engine.answer_without_work(job.request)
        except ProtocolError as exc:
            exc.request_id = job.request.request_id
            return exc
        except Exception as exc:  # the quick header check is on the frame path: never let it end a session
            log.warning("app %s: quick answer failed: %s: %s", self.app.app_id, type(exc).__name__, exc)
            return ValidationError("image", f"cannot be read ({type(exc).__name__})", request_id=job.request.request_id)
        if output is None:
            return None
        return encode_result(job, output, _seed_of(job.request), time.perf_counter() - started)

    async def _execute(self, job: _Job) -> Outcome:
        quick = self._answer_without_work(job)
        if quick is not None:
            return quick
        if not job.previews:
            return await execute_one(self.app, job)
        seed, started, loop = _seed_of(job.request), time.perf_counter(), asyncio.get_running_loop()

        def on_preview(preview: Preview) -> None:  # in the worker thread: encoded there, sent by the loop
            frame, _ = encode_result(
                job, preview.output, seed, time.perf_counter() - started, (preview.step, preview.steps)
            )
            job.previews_sent.append(asyncio.run_coroutine_threadsafe(self._send_preview(frame), loop))

        return await execute_one(self.app, job, seed=seed, on_preview=on_preview)

    async def _send_preview(self, frame: bytes | str) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(frame)
            self.previews_out += 1

    async def _deliver(self, job: _Job, outcome: Outcome) -> None:
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
