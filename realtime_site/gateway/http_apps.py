"""The HTTP forms of every app: ``POST /{owner}/{alias}/stream`` (server-sent events, a preview per
step, then the result) and ``POST /{owner}/{alias}`` (one JSON result), as fal's ``stream`` and
``run`` call them (docs/protocol.md section 1, "HTTP: stream and run").

One call is one input. It is admitted like a realtime connection (token in the query, API key,
or the session cookie from this site's own pages; from the admission cache when its credential was
admitted a moment ago, confirmed by the database while the runner works and before anything is
answered), counted against the same limits, recorded with its mode, and relayed over a runner
session kept open between calls (``upstreams``). Errors before
the response starts are a JSON body with ``detail`` and ``message`` and their HTTP status; after
an event stream has started, a last event ``{"type": "x-fal-error", ...}``. The stream's wire form
is what the published parsers accept: ``data: <ASCII JSON>`` blocks and ``:`` comment heartbeats
only (no ``id:``, ``retry:`` or ``event:`` lines: httpx-sse turns those into empty events).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from websockets.exceptions import ConnectionClosed

from realtime_site.gateway import cached_admission
from realtime_site.gateway.admission import Admission, admit_with_limits, has_credentials
from realtime_site.gateway.connect_rate import connect_rate
from realtime_site.gateway.limits import EffectiveLimits, limiter
from realtime_site.gateway.relay import Kind, RelayAccount, usage_of
from realtime_site.gateway.runners import NoRunner, get_pool
from realtime_site.gateway.upstreams import UpstreamSessions
from realtime_site.protocol import (
    AppPath,
    Encoding,
    ErrorCode,
    ProtocolError,
    Refusal,
    ValidationError,
    error_message,
    http_status,
    parse_app_path,
    parse_request,
)
from realtime_site.usage import metrics
from realtime_site.usage.recorder import Usage, recorder

__all__ = ["CallAnswer", "CallRequest", "answer", "error_answer"]

log = logging.getLogger("realtime_site.gateway")
HEARTBEAT_SECONDS = 10.0  # a comment line while a step takes long, so proxies keep the stream open
UPSTREAM_QUERY = {"stream": "max_buffering=1&report_drops=1&previews=1", "run": "max_buffering=1&report_drops=1"}
NORMAL, CLIENT_LEFT = 1000, 1001  # what the usage record's close code says of a call


class CallRefused(Exception):
    """A call refused before its answer starts: the code, the reason, and its HTTP status."""

    def __init__(self, code: ErrorCode, reason: str, status: int | None = None):
        super().__init__(reason)
        self.code, self.reason = code, reason
        self.status = status or http_status(code)

    @classmethod
    def of(cls, refusal: Refusal) -> CallRefused:
        return cls(refusal.code, refusal.reason, http_status(refusal.code, refusal.close_code))


@dataclass
class CallRequest:
    """What a call needs of its HTTP request, whoever parsed it (Django's view or ``app_calls``)."""

    scope: dict[str, Any]
    method: str
    body: bytes | None  # None: over the size limit
    session_user: Callable[[], Awaitable[Any]] | None = None  # the session's user, when there is a session


@dataclass
class CallAnswer:
    """The answer: a status, headers, and a body, or the events of a stream as they come."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    events: AsyncIterator[bytes] | None = None


def error_answer(code: ErrorCode | str, reason: str, status: int, request_id: str | None = None) -> CallAnswer:
    """fal's clients read ``message`` (and ``detail`` on a 422)."""
    body = json.dumps({"error": str(code), "detail": reason, "message": f"{code}: {reason}"}).encode()
    headers = {"Content-Type": "application/json"}
    if request_id:
        headers["x-fal-request-id"] = request_id
    if status == 429:
        headers["Retry-After"] = "1"
    return CallAnswer(status, headers, body)


_upstreams: UpstreamSessions | None = None


def upstreams() -> UpstreamSessions:
    global _upstreams
    if _upstreams is None:
        _upstreams = UpstreamSessions(get_pool(), max_idle=settings.REALTIME_UPSTREAM_IDLE_SECONDS)
    return _upstreams


@dataclass
class Call:
    """One admitted HTTP call: who, which app, its counters, its request id."""

    mode: str
    admission: Admission
    limits: EffectiveLimits
    usage: Usage
    account: RelayAccount
    body: str  # the input, JSON text, as the runner takes it
    request_id: str
    # Admitted from the cache: the database's check, run while the runner works; it raises Refusal.
    confirmation: asyncio.Task[None] | None = None
    refused_with: int | None = None  # the close code of a refusal on confirmation, for the record

    @property
    def target(self) -> str:
        return f"{self.admission.app_id}/realtime?{UPSTREAM_QUERY[self.mode]}"


async def _admit(request: CallRequest, owner: str, alias: str, mode: str) -> Call:
    """Cheap refusals first (the app catalog, method, address rate, size, input), then the database."""
    scope = request.scope
    try:
        path = parse_app_path(f"/{owner}/{alias}/realtime")
    except ValueError as exc:
        raise CallRefused(ErrorCode.APP_UNAVAILABLE, str(exc), status=404) from None
    pool = get_pool()
    await pool.ready()
    try:
        pool.known_path(path.app_id, path.sub_path)  # an unknown app is an unknown page: 404
    except NoRunner as exc:
        raise CallRefused(exc.code, exc.reason, status=None if exc.known else 404) from None
    if request.method != "POST":
        raise CallRefused(ErrorCode.VALIDATION_ERROR, f"use POST, not {request.method}", status=405)
    refusal = connect_rate().refusal(str((scope.get("client") or ("",))[0]))
    if refusal is not None:
        raise CallRefused.of(refusal)
    body = _body(request.body)
    try:
        admission, limits, cached = await cached_admission.admit(
            scope, path, lambda: _admit_from_database(request, path)
        )
    except Refusal as refusal:
        raise CallRefused.of(refusal) from None
    call = _counted(mode, admission, limits, scope, body, path)
    if cached:
        call.confirmation = asyncio.ensure_future(_confirm(request, path, call))
    return call


async def _admit_from_database(request: CallRequest, path: AppPath) -> tuple[Admission, EffectiveLimits]:
    session_user = None
    if not has_credentials(request.scope) and request.session_user is not None:
        user = await request.session_user()
        session_user = user if user.is_authenticated else None
    return await database_sync_to_async(admit_with_limits)(request.scope, session_user, path)


async def _confirm(request: CallRequest, path: AppPath, call: Call) -> None:
    """A cached admission checked in full against the database (as a realtime connection's is); a
    refusal forgets the entry, is counted on the call and raised. The database away: the cached
    admission stands."""
    try:
        await cached_admission.confirm(
            request.scope, path, call.admission.user.pk, lambda: _admit_from_database(request, path)
        )
    except Refusal as refusal:
        log.info("call refused on confirmation: %s (%s)", refusal.code.value, refusal.reason)
        call.refused_with = int(refusal.close_code)
        call.account.error(refusal.code.value)
        raise
    except Exception as exc:
        log.warning("could not confirm a cached admission (%s)", type(exc).__name__)


async def _refused_on_confirmation(call: Call, work: asyncio.Future[Any]) -> CallAnswer | None:
    """Wait for a cached call's confirmation; refused (or the client gone), stop the work. The
    refusal is answered as admission would have answered it."""
    if call.confirmation is None:
        return None
    try:
        await call.confirmation
    except (Refusal, asyncio.CancelledError) as stopped:
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        if not isinstance(stopped, Refusal):
            raise
        refused = CallRefused.of(stopped)
        return error_answer(refused.code, refused.reason, refused.status)
    return None


def _body(raw: bytes | None) -> str:
    """The input: a JSON object that is a valid input, checked here so a bad one gets its status."""
    limit = settings.REALTIME_MAX_FRAME_BYTES  # daphne_bodies refused bodies far over it as they came
    if raw is None or len(raw) > limit:
        raise CallRefused(ErrorCode.PAYLOAD_TOO_LARGE, f"the body is over the limit of {limit} bytes")
    try:
        text = raw.decode("utf-8")
        data = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise CallRefused(ErrorCode.VALIDATION_ERROR, "the body is not a JSON object (UTF-8)") from None
    if not isinstance(data, dict):
        raise CallRefused(ErrorCode.VALIDATION_ERROR, "the body must be a JSON object: the app's input")
    try:
        parse_request(data, encoding=Encoding.JSON)
    except ValidationError as exc:
        raise CallRefused(exc.code, exc.reason) from None
    return text


def _counted(
    mode: str, admission: Admission, limits: EffectiveLimits, scope: dict[str, Any], body: str, path: AppPath
) -> Call:
    """Take a connection slot and one frame of the user's limits; open the usage record."""
    user = admission.user.pk
    over = limiter.connect(user, limits)
    if over is not None:
        raise CallRefused(ErrorCode.RATE_LIMITED, over)
    refused = limiter.frame(user, limits)
    if refused is not None:
        limiter.disconnect(user)
        raise CallRefused(*refused)
    usage = usage_of(admission, scope)
    usage.mode = mode
    account = RelayAccount(usage)
    account.frame_in(len(body.encode()))
    if settings.USAGE_RECORDING:
        recorder.open(usage)
    metrics.SESSIONS.labels(path.app_id, mode).inc()
    log.info("admitted %s call: user=%s app=%s auth=%s", mode, user, path.app_id, admission.auth_method)
    return Call(mode, admission, limits, usage, account, body, uuid.uuid4().hex)


async def _finish(call: Call, close_code: int) -> None:
    """Free the slot and hand the record to the writer; the answer does not wait for the database
    (but a cached call's record waits for its confirmation, which may refuse it)."""
    limiter.disconnect(call.admission.user.pk)
    if call.confirmation is not None:
        await asyncio.gather(call.confirmation, return_exceptions=True)
    if settings.USAGE_RECORDING:
        recorder.close_soon(call.usage, call.refused_with or close_code, batched=True)


async def _answers(call: Call) -> AsyncIterator[tuple[Kind, str]]:
    """The runner's answers to the call's input: previews, then the result or an error. The session
    goes back to the pool when it answered; abandoned (the client left) or broken, it is closed."""
    try:
        lease = await upstreams().lease(call.admission.app_id, call.target)
    except NoRunner as exc:
        call.account.error(exc.code.value)
        yield Kind.ERROR, error_message(exc.code, exc.reason)
        return
    call.usage.runner = lease.runner.url
    done = False
    try:
        call.account.relayed()
        await lease.ws.send(call.body)
        while not done:
            message = await lease.ws.recv()
            text = message if isinstance(message, str) else message.decode("utf-8", "replace")
            answer = call.account.answer(text)
            if answer.kind in (Kind.PREVIEW, Kind.RESULT, Kind.ERROR):
                done = answer.kind is not Kind.PREVIEW
                yield answer.kind, text
    except ConnectionClosed:
        get_pool().check_soon(lease.runner.url)
        reason = "the runner session ended before the result; try again"
        call.account.error(ErrorCode.RUNNER_UNAVAILABLE.value)
        yield Kind.ERROR, error_message(ErrorCode.RUNNER_UNAVAILABLE, reason)
    finally:
        if done and lease.ws.close_code is None:
            upstreams().give_back(lease)
        else:
            await upstreams().discard(lease)


def _event(text: str) -> bytes:
    """One server-sent event. The runner's JSON is ASCII already; anything else is escaped."""
    if not text.isascii():
        text = json.dumps(json.loads(text), separators=(",", ":"))
    return b"data: " + text.encode("ascii") + b"\n\n"


async def _stream_events(
    call: Call, answers: AsyncGenerator[tuple[Kind, str]], next_answer: asyncio.Future[tuple[Kind, str]]
) -> AsyncIterator[bytes]:
    """The stream's events; ``next_answer``, the first, was started before the response."""
    close_code = CLIENT_LEFT  # unless the stream reaches its end
    try:
        yield b": stream open\n\n"  # headers and a first byte now: the client knows it was accepted
        while True:
            done, _ = await asyncio.wait({next_answer}, timeout=HEARTBEAT_SECONDS)
            if not done:
                yield b": ping\n\n"
                continue
            try:
                _, text = next_answer.result()
            except StopAsyncIteration:
                break
            yield _event(text)
            next_answer = asyncio.ensure_future(anext(answers))
        close_code = NORMAL
    finally:
        if not next_answer.done():  # the client left mid-stream: stop reading, the session is closed
            next_answer.cancel()
        await asyncio.gather(next_answer, return_exceptions=True)
        await answers.aclose()
        await _finish(call, close_code)


async def _run_result(call: Call) -> CallAnswer:
    close_code = CLIENT_LEFT
    try:
        async with contextlib.aclosing(_answers(call)) as answers:  # closed at once: the session goes back
            async for kind, text in answers:
                if kind is Kind.RESULT:
                    close_code = NORMAL
                    headers = {"Content-Type": "application/json", "x-fal-request-id": call.request_id}
                    return CallAnswer(200, headers, text.encode())
                if kind is Kind.ERROR:
                    close_code = NORMAL
                    error = json.loads(text)
                    code = str(error.get("error", ErrorCode.INTERNAL_ERROR))
                    status = http_status(ErrorCode(code)) if code in ErrorCode.__members__ else 500
                    return error_answer(code, str(error.get("reason", "")), status, call.request_id)
        raise ProtocolError("the runner gave no result")  # unreachable: _answers ends with one
    finally:
        await _finish(call, close_code)


async def answer(request: CallRequest, owner: str, alias: str, mode: str) -> CallAnswer:
    """One call of ``owner/alias`` in ``mode`` (``stream`` or ``run``)."""
    try:
        call = await _admit(request, owner, alias, mode)
    except CallRefused as refused:
        return error_answer(refused.code, refused.reason, refused.status)
    if mode == "run":
        result = asyncio.ensure_future(_run_result(call))  # the runner works while a cached call is confirmed
        try:
            return await _refused_on_confirmation(call, result) or await result
        except Exception:  # a bug: logged, and told as JSON like every other error
            log.exception("run call of %s failed", call.admission.app_id)
            return error_answer(ErrorCode.INTERNAL_ERROR, "the call failed (an internal error)", 500)
    answers = _answers(call)
    first: asyncio.Future[tuple[Kind, str]] = asyncio.ensure_future(anext(answers))
    try:
        refused = await _refused_on_confirmation(call, first)
    except asyncio.CancelledError:  # the client left before the stream began
        await answers.aclose()
        await _finish(call, CLIENT_LEFT)
        raise
    if refused is not None:
        await answers.aclose()
        await _finish(call, NORMAL)
        return refused
    headers = {
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-store",
        "X-Accel-Buffering": "no",  # nginx: pass each event on at once
        "x-fal-request-id": call.request_id,
    }
    return CallAnswer(200, headers, events=_stream_events(call, answers, first))
