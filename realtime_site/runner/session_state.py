"""A session's rules with no socket (sans-I/O, as ``websockets`` keeps its protocol): what each client
message becomes, and what goes back for each answer. ``session.Session`` pumps a real socket through
it; the tests drive it in-process.

``receive(message)`` returns a ``Job`` to run, or the error message to send at once. ``answer(job,
outcome)`` returns the messages that answer the job (its result, then timings if asked, or its
error). Counters are kept here, so the pump only moves bytes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

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
from realtime_site.runner.engines.base import Preview
from realtime_site.runner.execution import Job, Outcome, encode_result
from realtime_site.runner.travel import Travel

__all__ = ["SessionOptions", "SessionState"]

log = logging.getLogger("realtime_site.runner")


@dataclass(frozen=True)
class SessionOptions:
    max_buffering: int = 1
    timings: bool = False  # send x-fal-message timings after each result
    report_drops: bool = False  # send x-fal-message dropped when the buffer displaces an input
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    idle_timeout: float = 300.0
    previews: bool = False  # send each intermediate image as a result marked "partial" (opt-in)


class SessionState:
    def __init__(self, options: SessionOptions, app_id: str = "") -> None:
        self.options = options
        self.app_id = app_id
        self.frames_in = 0
        self.results_out = 0
        self.previews_out = 0
        self.errors = 0
        self.travel = Travel()

    def receive(self, message: bytes | str, *, draining: bool = False) -> Job | str:
        """One client message: the job it asks for, or the error that answers it now."""
        self.frames_in += 1
        size = len(message) if isinstance(message, bytes) else len(message.encode())
        cap = self.options.max_frame_bytes
        if size > cap:
            return self.error(ErrorCode.PAYLOAD_TOO_LARGE, f"frame is {size} bytes; the limit is {cap} bytes")
        if draining:
            return self.error(ErrorCode.RUNNER_UNAVAILABLE, "the runner is shutting down")
        try:
            frame, encoding = decode_frame(message)
            request = parse_request(frame, encoding=encoding)
        except ProtocolError as exc:
            return self.error(exc.code, exc.reason, exc.request_id)
        except Exception as exc:  # a decoder's unforeseen failure is still the frame's fault
            log.warning("app %s: frame not decodable: %s: %s", self.app_id, type(exc).__name__, exc)
            return self.error(ErrorCode.VALIDATION_ERROR, f"frame: cannot be decoded ({type(exc).__name__})")
        return Job(request, encoding, previews=self.options.previews, number=self.frames_in, travel=self.travel)

    def answer(self, job: Job, outcome: Outcome) -> list[bytes | str]:
        """The messages that answer ``job``: its result (then timings, if asked), or its error."""
        if isinstance(outcome, ProtocolError):
            return [self.error(outcome.code, outcome.reason, outcome.request_id)]
        frame, seconds = outcome
        self.results_out += 1
        return [frame, timings_message(seconds)] if self.options.timings else [frame]

    def preview(self, job: Job, preview: Preview, seed: int, seconds: float) -> bytes | str:
        """An intermediate image of ``job``, as a result marked partial (encoded where it is made)."""
        self.previews_out += 1
        frame, _ = encode_result(job, preview.output, seed, seconds, (preview.step, preview.steps))
        return frame

    def dropped(self, job: Job) -> str | None:
        """The report for an input the buffer displaced, when the gateway asked for reports."""
        return dropped_message(job.request.request_id, job.number) if self.options.report_drops else None

    def error(self, code: ErrorCode, reason: str, request_id: Any = None) -> str:
        self.errors += 1
        return error_message(code, reason, request_id)

    def idle_timeout(self) -> tuple[str, str]:
        """The TIMEOUT error and the close reason for a session idle too long."""
        reason = f"no input for {self.options.idle_timeout:g} seconds"
        return self.error(ErrorCode.TIMEOUT, reason), reason
