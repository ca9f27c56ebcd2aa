"""Running inputs on an app's engine: one at a time or several in one call, and the answers encoded.

One policy for an answer that needs no work (``answer_without_work``: echo's pass-through, a header
check that refuses the image): asked first, on the event loop, wherever an input is about to run.
Nothing here raises for an input's fault; every input gets an ``Outcome``: its encoded result or the
``ProtocolError`` its client is told.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Protocol

from realtime_site.protocol import (
    SEED_MAX,
    Encoding,
    ErrorCode,
    ImageRequest,
    ProtocolError,
    ValidationError,
    encode_frame,
    result_payload,
)
from realtime_site.runner.engines import Engine, EngineOutput
from realtime_site.runner.engines.base import OnPreview
from realtime_site.runner.travel import Travel

__all__ = [
    "Abandoned",
    "Job",
    "Outcome",
    "answer_without_work",
    "as_run",
    "encode_result",
    "execute",
    "execute_batch",
    "seed_of",
]

log = logging.getLogger("realtime_site.runner")

Outcome = tuple[bytes | str, float] | ProtocolError  # (the encoded result, its inference seconds)


class Abandoned(ProtocolError):
    """Raised from a preview callback when the session has closed: the engine stops at that step."""

    def __init__(self) -> None:
        super().__init__("the connection closed: the work was abandoned", code=ErrorCode.RUNNER_UNAVAILABLE)


class Runs(Protocol):
    """What execution needs of an app (``apps.RunnerApp``)."""

    app_id: str
    engine: Engine | None
    executor: concurrent.futures.ThreadPoolExecutor | None


@dataclass(frozen=True, slots=True)
class Job:
    """One validated input of a session."""

    request: ImageRequest
    encoding: Encoding
    previews: bool = False
    number: int = 0  # its place among the session's messages, from 1
    travel: Travel | None = None  # the session's prompt and seed travel, stepped when the job runs
    # Previews handed to the event loop, in order; the result goes out after them.
    previews_sent: list[concurrent.futures.Future[None]] = field(default_factory=list)


def seed_of(request: ImageRequest) -> int:
    """The input's seed, or a random one (returned in the result so the image can be repeated)."""
    return request.seed if request.seed is not None else secrets.randbelow(SEED_MAX + 1)


def as_run(job: Job, seed: int) -> ImageRequest:
    """The request as the engine runs it: with the session's travel applied (once per job)."""
    return job.travel.apply(job.request, seed) if job.travel is not None else job.request


def encode_result(
    job: Job, output: EngineOutput, seed: int, seconds: float, step: tuple[int, int] | None = None
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


def answer_without_work(app: Runs, job: Job) -> Outcome | None:
    """The engine's answer that needs no pixel work, given on the event loop; None: run it."""
    assert app.engine is not None
    if job.request.control_image is not None and (refusal := app.engine.control_refusal()):
        return ValidationError("control_image", refusal, request_id=job.request.request_id)
    started = time.perf_counter()
    try:
        output = app.engine.answer_without_work(job.request)
    except ProtocolError as exc:
        exc.request_id = job.request.request_id
        return exc
    except Exception as exc:  # the quick header check is on the frame path: never let it end a session
        log.warning("app %s: quick answer failed: %s: %s", app.app_id, type(exc).__name__, exc)
        return ValidationError("image", f"cannot be read ({type(exc).__name__})", request_id=job.request.request_id)
    if output is None:
        return None
    return encode_result(job, output, seed_of(job.request), time.perf_counter() - started)


def _timed_infer(
    engine: Engine, request: ImageRequest, seed: int, on_preview: OnPreview | None
) -> tuple[EngineOutput, float]:
    started = time.perf_counter()
    if on_preview is None:
        output = engine.infer(request, seed)
    else:
        output = engine.infer_with_previews(request, seed, on_preview)
    return output, time.perf_counter() - started


async def execute(app: Runs, job: Job, *, seed: int | None = None, on_preview: OnPreview | None = None) -> Outcome:
    """Answer one input: without work if the engine can, else in a worker thread."""
    quick = answer_without_work(app, job)
    if quick is not None:
        return quick
    seed = seed_of(job.request) if seed is None else seed
    return await _infer(app, job, as_run(job, seed), seed, on_preview)


async def _infer(app: Runs, job: Job, request: ImageRequest, seed: int, on_preview: OnPreview | None) -> Outcome:
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


async def execute_batch(app: Runs, jobs: list[Job]) -> list[Outcome]:
    """Inputs of several connections in one engine call (each frame's timing is the call's); the ones
    with an answer that needs no work are answered without it."""
    outcomes: list[Outcome | None] = [answer_without_work(app, job) for job in jobs]
    work = [index for index, outcome in enumerate(outcomes) if outcome is None]
    if not work:
        return [outcome for outcome in outcomes if outcome is not None]
    seeds = [seed_of(jobs[index].request) for index in work]
    requests = [as_run(jobs[index], seed) for index, seed in zip(work, seeds, strict=True)]
    loop = asyncio.get_running_loop()
    try:
        outputs, seconds = await loop.run_in_executor(app.executor, _timed_infer_batch, app.engine, requests, seeds)
    except Exception:  # one bad input must not fail its neighbours: answer each on its own
        for index, request, seed in zip(work, requests, seeds, strict=True):
            outcomes[index] = await _infer(app, jobs[index], request, seed, None)
    else:
        for index, output, seed in zip(work, outputs, seeds, strict=True):
            outcomes[index] = encode_result(jobs[index], output, seed, seconds)
    return [outcome for outcome in outcomes if outcome is not None]
