"""The realtime consumer: admit once at connect, then relay frames between client and runner.

The frame path (``receive`` and ``_relay_from_runner``) touches no database, no session and no
channel layer: a size check, the in-memory limiter, counters, and a send. Frames are relayed as they
came (no image is decoded or re-encoded); only the runner's small JSON messages are parsed, and a
result's ``timings`` is read without copying its image.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import time
from typing import Any

import msgpack
import websockets
from channels.auth import get_user
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import InterfaceError, OperationalError
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from realtime_site.gateway import lifecycle
from realtime_site.gateway.admission import (
    Admission,
    CloseCode,
    Refused,
    admit,
    app_path_of,
    has_credentials,
    revoked_since,
    session_query,
)
from realtime_site.gateway.backpressure import ResultOutbox
from realtime_site.gateway.connect_rate import ConnectRate
from realtime_site.gateway.groups import key_group, token_group, user_group
from realtime_site.gateway.limits import EffectiveLimits, limiter, load_limits
from realtime_site.gateway.runners import NoRunner, RunnerState, get_pool
from realtime_site.protocol import ErrorCode, error_message
from realtime_site.usage import metrics
from realtime_site.usage.recorder import GATEWAY_NAME, Usage, recorder

__all__ = ["RealtimeConsumer", "result_facts"]

log = logging.getLogger("realtime_site.gateway")
RUNNER_META_PREFIX = '{"type": "x-fal-'  # how the runner's errors and meta messages begin
UPSTREAM_OPEN_TIMEOUT = 5.0
# Close codes with which a runner refuses a connection, after an x-fal-error we relay.
RUNNER_REFUSALS = {CloseCode.BAD_REQUEST, CloseCode.FORBIDDEN, CloseCode.NOT_FOUND, CloseCode.UNAVAILABLE}
# How a runner session's odd end is told to the client; none of them is blamed on the runner.
SESSION_END_ERRORS = {
    1009: (ErrorCode.PAYLOAD_TOO_LARGE, "the runner closed this session: a frame was too large (1009)"),
    1011: (ErrorCode.INTERNAL_ERROR, "the runner closed this session after an internal error (1011)"),
}


def _admit_with_limits(scope: dict[str, Any], session_user: Any) -> tuple[Admission, EffectiveLimits]:
    """Admission and the user's limits in one trip to the database thread."""
    admission = admit(scope, session_user)
    return admission, load_limits(admission.user.pk)


_connect_rate: ConnectRate | None = None


def connect_rate() -> ConnectRate:
    global _connect_rate
    if _connect_rate is None:
        _connect_rate = ConnectRate(settings.REALTIME_CONNECTS_PER_SECOND, settings.REALTIME_CONNECT_BURST)
    return _connect_rate


class ClientGone(Exception):
    """The client's connection closed while something was being sent to it."""


def result_facts(result: bytes | str) -> tuple[float, bool]:
    """``timings.inference`` of a result and whether it is a preview (``partial``): msgpack read
    without copying its image, or JSON."""
    if isinstance(result, str) or result[:1] == b"{":
        try:
            payload = json.loads(result)
        except ValueError:
            return 0.0, False
        if not isinstance(payload, dict):
            return 0.0, False
        timings = payload.get("timings")
        return _seconds(timings.get("inference") if isinstance(timings, dict) else None), payload.get("partial") is True
    seconds, partial = 0.0, False
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(result)
    try:
        for _ in range(unpacker.read_map_header()):
            key = unpacker.unpack()
            if key == "timings":
                timings = unpacker.unpack()
                seconds = _seconds(timings.get("inference") if isinstance(timings, dict) else None)
            elif key == "partial":
                partial = unpacker.unpack() is True
            else:
                unpacker.skip()
    except (ValueError, msgpack.UnpackException, msgpack.OutOfData):
        pass
    return seconds, partial


def _seconds(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


class RealtimeConsumer(AsyncWebsocketConsumer):
    admission: Admission | None = None
    limits: EffectiveLimits | None = None
    usage: Usage | None = None
    upstream: ClientConnection | None = None
    runner: RunnerState | None = None
    reader: asyncio.Task[None] | None = None
    outbox: ResultOutbox | None = None
    closed_with: int | None = None  # the code this side closed with, for the usage record
    closing = False
    finished = False
    slot_taken = False
    max_buffering = 1  # the client's, or else the app's default
    # Not `groups`: Channels discards those itself at disconnect, raising when the layer is away.
    staff_groups: tuple[str, ...] = ()

    async def __call__(self, scope, receive, send) -> None:
        """Channels' loop, except that the channel layer is not on the critical path: frames come
        from the client alone, and a Redis outage only pauses staff actions (they resume with it)."""
        self.scope = scope
        self.base_send = send
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        layer_task = None
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()
            layer_task = asyncio.get_running_loop().create_task(self._follow_channel_layer())
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        finally:
            if layer_task is not None:
                layer_task.cancel()
            # Also on shutdown, when the server cancels this task: the usage record is written.
            await asyncio.shield(self._finish(1001))

    async def _follow_channel_layer(self) -> None:
        """Staff messages for this connection; after a layer outage, join the groups again."""
        delay, rejoin = 0.5, False
        while True:
            try:
                if rejoin:
                    await self._add_to_groups()
                    rejoin, delay = False, 0.5
                    log.info("channel layer back; %s rejoined its groups", self.channel_name)
                    await self._check_still_admitted()  # a revocation's close may have been lost meanwhile
                await self.dispatch(await self.channel_layer.receive(self.channel_name))
            except asyncio.CancelledError:
                raise
            except StopConsumer:
                return
            except Exception as exc:  # Redis away: the relay goes on without staff actions
                if not rejoin:
                    log.warning("channel layer unavailable (%s); retrying", type(exc).__name__)
                rejoin = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _check_still_admitted(self) -> None:
        admission = self.admission
        if admission is None or self.closing:
            return
        try:
            revoked = await database_sync_to_async(revoked_since)(admission)
        except Exception as exc:  # the database away too: the next rejoin or reconnect decides
            log.warning("could not re-check a credential after the layer came back (%s)", type(exc).__name__)
            return
        if revoked is not None:
            await self._client_error(ErrorCode.UNAUTHORIZED, revoked)
            await self._close(CloseCode.UNAUTHORIZED, revoked)

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels would first close stale database connections in the database thread: one thread
        # hop per frame. Frames never touch the database, so they skip it.
        if message["type"] == "websocket.receive":
            await self.websocket_receive(message)
        else:
            await super().dispatch(message)

    # -- connect ------------------------------------------------------------------------------

    async def connect(self) -> None:
        await self.accept()
        try:
            await self._admit()
        except Refused as refusal:
            log.info("refused: %s (%s)", refusal.code.value, refusal.reason)
            await self._refuse(refusal.code, refusal.reason, refusal.close_code)
            return
        except (OperationalError, InterfaceError):
            log.warning("admission failed: the database is unavailable")
            reason = "the database is unavailable; try again shortly"
            await self._refuse(ErrorCode.INTERNAL_ERROR, reason, CloseCode.UNAVAILABLE)
            return
        except Exception:
            log.exception("admission failed")
            await self._refuse(ErrorCode.INTERNAL_ERROR, "the server could not admit you (an internal error)", 1011)
            return
        await self._open_upstream()

    async def _refuse(self, code: ErrorCode, reason: str, close_code: int) -> None:
        self.closed_with = close_code
        with contextlib.suppress(Exception):
            await self.send(text_data=error_message(code, reason))
            await self._close(close_code, reason)

    async def _close(self, code: int, reason: str) -> None:
        """Close with ``code``, and ``reason`` in the close frame (clients show it beside the code)."""
        self.closed_with = self.closed_with or code
        if not lifecycle.close_with_code(self.scope, code, reason):
            await self.close(code if code == 1000 or 3000 <= code <= 4999 else 1000)

    async def _admit(self) -> None:
        """Cheap refusals first (address rate, path grammar, the app catalog), then the database."""
        address = str((self.scope.get("client") or ("",))[0])
        wait = connect_rate().take(address)
        if wait is not None:
            per_second = settings.REALTIME_CONNECTS_PER_SECOND
            reason = f"too many new connections from your address (at most {per_second:g} a second)"
            raise Refused(ErrorCode.RATE_LIMITED, f"{reason}; try again in {math.ceil(wait)} s", CloseCode.TOO_MANY)
        app_id, sub_path = app_path_of(self.scope)
        session_query(self.scope)  # a repeated parameter is refused before the database too
        pool = get_pool()
        await pool.ready()
        try:
            pool.known_path(app_id, sub_path)
        except NoRunner as exc:
            close_code = CloseCode.UNAVAILABLE if exc.code is ErrorCode.RUNNER_UNAVAILABLE else CloseCode.NOT_FOUND
            raise Refused(exc.code, exc.reason, close_code) from None
        session_user = None
        if not has_credentials(self.scope) and "session" in self.scope:
            user = await get_user(self.scope)
            session_user = user if user.is_authenticated else None
        admission, limits = await database_sync_to_async(_admit_with_limits)(self.scope, session_user)
        try:
            pool.choose(admission.app_id)
        except NoRunner as exc:
            if exc.code is ErrorCode.APP_UNAVAILABLE:
                raise Refused(exc.code, exc.reason, CloseCode.UNAVAILABLE) from None
            # RUNNER_UNAVAILABLE: a known app with no runner up now; the first input tries again.
        over = limiter.connect(admission.user.pk, limits)
        if over is not None:
            raise Refused(ErrorCode.RATE_LIMITED, over, CloseCode.TOO_MANY)
        self.slot_taken = True
        self.admission, self.limits = admission, limits
        self.max_buffering = admission.max_buffering or pool.default_buffering(admission.app_id)
        headers = dict(self.scope.get("headers", []))
        client = self.scope.get("client") or ("", 0)
        self.usage = Usage(
            user_id=admission.user.pk,
            app=admission.app_id,
            auth_method=admission.auth_method,
            api_key_id=admission.api_key_id,
            key_id=admission.key_id,
            token_id=admission.token_id,
            username=admission.user.get_username(),
            client_address=str(client[0]),
            user_agent=headers.get(b"user-agent", b"").decode("latin-1"),
            gateway=GATEWAY_NAME,
        )
        if settings.USAGE_RECORDING:
            recorder.open(self.usage)
        lifecycle.register(self)
        app = admission.app_id
        self.pending: collections.deque[float] = collections.deque()  # arrival times of relayed frames
        self.m_frames, self.m_results = metrics.FRAMES.labels(app), metrics.RESULTS.labels(app)
        self.m_latency, self.m_active = metrics.LATENCY.labels(app), metrics.ACTIVE.labels(app)
        self.m_active.inc()
        self.outbox = ResultOutbox(
            self.scope,
            self._send_to_client,
            capacity=self.max_buffering,
            stall_limit=settings.REALTIME_STALLED_CLIENT_SECONDS,
            on_drop=self._result_dropped,
            on_stall=self._client_stalled,
        )
        await self._join_groups(admission)
        revoked = await database_sync_to_async(revoked_since)(admission)
        if revoked is not None:  # revoked while this connection was being admitted
            raise Refused(ErrorCode.UNAUTHORIZED, revoked, CloseCode.UNAUTHORIZED)
        log.info("admitted: user=%s app=%s auth=%s", admission.user.pk, admission.app_id, admission.auth_method)

    # -- client -> runner ---------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        usage, admission, limits = self.usage, self.admission, self.limits
        if usage is None or admission is None or limits is None:
            return  # refused: the close is on its way
        data: bytes | str = bytes_data if bytes_data is not None else (text_data or "")
        size = len(data) if isinstance(data, bytes) else len(data.encode())
        usage.frames_in += 1
        usage.bytes_in += size
        self.m_frames.inc()
        if size > settings.REALTIME_MAX_FRAME_BYTES:
            limit = settings.REALTIME_MAX_FRAME_BYTES
            await self._client_error(ErrorCode.PAYLOAD_TOO_LARGE, f"frame is {size} bytes; the limit is {limit} bytes")
            if size > 2 * limit:  # as the runner does: far over the cap, the connection ends (1009)
                await self._close(1009, "frame far over the size limit")
            return
        refusal = limiter.frame(admission.user.pk, limits)
        if refusal is not None:
            await self._client_error(*refusal)
            return
        if self.upstream is None and not await self._open_upstream():
            return
        assert self.upstream is not None
        self.pending.append(time.perf_counter())
        with contextlib.suppress(ConnectionClosed):  # a lost runner is reported by the reader
            await self.upstream.send(data)

    # -- runner -> client ---------------------------------------------------------------------

    async def _open_upstream(self) -> bool:
        """Connect to the least-loaded runner with the app; on failure tell the client and return False."""
        assert self.admission is not None and self.usage is not None
        pool, admission = get_pool(), self.admission
        avoid = self.runner.url if self.runner else None
        for _ in range(len(pool.runners)):
            try:
                runner = pool.choose(admission.app_id, avoid=avoid)
            except NoRunner as exc:
                await self._client_error(exc.code, exc.reason)
                return False
            query = f"max_buffering={self.max_buffering}&report_drops=1"
            if admission.timings:
                query += "&timings=1"
            if admission.previews:
                query += "&previews=1"
            url = f"{runner.url}/{admission.app_id}/{admission.sub_path}?{query}"
            headers = {"Authorization": f"Bearer {settings.RUNNER_SECRET}"} if settings.RUNNER_SECRET else {}
            runner.local_sessions += 1  # counted before the await, so sessions opening together spread out
            try:
                ws = await websockets.connect(
                    url,
                    additional_headers=headers,
                    compression=None,
                    max_size=None,  # the runner enforces its own cap
                    open_timeout=UPSTREAM_OPEN_TIMEOUT,
                    ping_interval=20,
                )
            except (OSError, TimeoutError) as exc:  # refused or no answer: the runner's own failure
                runner.local_sessions -= 1
                pool.mark_down(runner.url, f"cannot connect: {exc}")
                avoid = runner.url
                continue
            except InvalidStatus as exc:  # it answered over HTTP, so it is up
                runner.local_sessions -= 1
                status = exc.response.status_code
                if status == 503:  # draining: it says so itself
                    pool.mark_down(runner.url, "draining")
                    avoid = runner.url
                    continue
                log.warning("runner %s refused an upstream handshake with HTTP %s", runner.url, status)
                await self._client_error(ErrorCode.APP_UNAVAILABLE, f"the runner refused this session (HTTP {status})")
                return False
            except (InvalidHandshake, ValueError) as exc:  # never a reason to doubt the runner
                runner.local_sessions -= 1
                log.warning("upstream handshake with %s failed: %s", runner.url, exc)
                await self._client_error(ErrorCode.INTERNAL_ERROR, "the session to the runner could not be opened")
                return False
            self.upstream, self.runner = ws, runner
            self.usage.runner = runner.url
            self.reader = asyncio.get_running_loop().create_task(self._relay_from_runner(ws, runner))
            return True
        await self._client_error(ErrorCode.RUNNER_UNAVAILABLE, "no runner could be reached; try again shortly")
        return False

    async def _relay_from_runner(self, ws: ClientConnection, runner: RunnerState) -> None:
        last_error: str | None = None
        try:
            async for message in ws:
                if self.closing:
                    break
                last_error = await self._relay_one(message) or last_error
        except ConnectionClosed:
            pass
        except ClientGone:  # an ordinary disconnect: the runner's state is not touched
            self.closing = True
        except Exception:  # a bug: logged, never an unretrieved task error, never blamed on the runner
            if not self.closing:
                log.exception("relay from %s failed", runner.url)
        finally:
            runner.local_sessions -= 1
        if self.upstream is ws and not self.closing:
            self.upstream = None
            self.pending.clear()  # those inputs are lost with the runner session
            await self._runner_closed(ws, runner, last_error)

    async def _relay_one(self, message: bytes | str) -> str | None:
        """Count and relay one message from the runner; returns the code of an error."""
        usage = self.usage
        assert usage is not None
        if isinstance(message, str) and message.startswith(RUNNER_META_PREFIX):
            return await self._relay_runner_text(message)
        usage.bytes_out += len(message)
        seconds, partial = result_facts(message)
        if partial:  # a preview answers nothing yet; a slow reader goes without it
            if self.outbox is None:
                await self._send_to_client(message)
            else:
                await self.outbox.preview(message)
            return None
        usage.results_out += 1
        self._answered(oldest=True)
        usage.inference_seconds += seconds
        await self._result(message)
        return None

    async def _relay_runner_text(self, message: str) -> str | None:
        """Relay an x-fal-error or x-fal-message; returns the error code of an error."""
        usage = self.usage
        assert usage is not None and self.admission is not None
        try:
            meta = json.loads(message)
        except ValueError:
            meta = {}
        kind, action = meta.get("type"), meta.get("action")
        if kind == "x-fal-message" and action == "dropped":
            usage.frames_dropped += 1
            # The buffer drops its oldest input: the second pending frame when one is in inference.
            if len(self.pending) >= 2:
                del self.pending[1]
            elif self.pending:
                self.pending.popleft()
            return None
        if kind == "x-fal-message" and action == "timings" and not self.admission.timings:
            return None  # not asked for; any other meta message is the app's and is relayed, as fal does
        usage.bytes_out += len(message)
        await self._message(message)
        if kind == "x-fal-error":
            code = str(meta.get("error", "UNKNOWN"))
            usage.errors[code] += 1
            metrics.ERRORS.labels(self.admission.app_id, code).inc()
            self._answered(oldest=False)  # a refused input is answered as soon as it arrives
            return code
        return None

    def _answered(self, *, oldest: bool) -> None:
        """Account one answer: a result answers the oldest pending frame, in order."""
        if not self.pending:
            return
        arrived = self.pending.popleft() if oldest else self.pending.pop()
        if not oldest or self.usage is None:
            return
        seconds = time.perf_counter() - arrived
        self.usage.latency_buckets[metrics.bucket_index(seconds * 1000)] += 1
        self.m_latency.observe(seconds)
        self.m_results.inc()

    async def _runner_closed(self, ws: ClientConnection, runner: RunnerState, last_error: str | None) -> None:
        """The runner ended this session. Only what the runner says of itself (going away, refusing
        the gateway's secret) marks it down; any other end only asks for a health check."""
        code = ws.close_code
        pool = get_pool()
        if last_error == ErrorCode.TIMEOUT.value:
            await self._close(1000, ws.close_reason or "idle timeout")  # the runner's, already relayed
            return
        if code in RUNNER_REFUSALS:
            await self._close(code, ws.close_reason or "refused by the runner")  # it said why, too
            return
        if code in (1001, CloseCode.UNAUTHORIZED):
            pool.mark_down(
                runner.url, "refused the gateway's secret" if code == CloseCode.UNAUTHORIZED else "going away"
            )
        else:
            pool.check_soon(runner.url)
        error, reason = SESSION_END_ERRORS.get(
            code or 0, (ErrorCode.RUNNER_UNAVAILABLE, f"the runner session ended ({code})")
        )
        await self._client_error(error, f"{reason}; your next input opens a new session")

    # -- to the client --------------------------------------------------------------------------

    async def _send_to_client(self, message: bytes | str) -> None:
        try:
            if isinstance(message, bytes):
                await self.send(bytes_data=message)
            else:
                await self.send(text_data=message)
        except Exception as exc:  # daphne or autobahn raise when the socket is gone
            raise ClientGone() from exc

    async def _result(self, message: bytes | str) -> None:
        if self.outbox is None:
            await self._send_to_client(message)
        else:
            await self.outbox.result(message)

    async def _message(self, message: str) -> None:
        if self.outbox is None:
            await self._send_to_client(message)
        else:
            await self.outbox.message(message)

    def _result_dropped(self) -> None:
        """A result waiting for a slow reader was displaced by a newer one (latest wins)."""
        if self.usage is not None and self.admission is not None:
            self.usage.frames_dropped += 1
            metrics.SLOW_CLIENT_DROPS.labels(self.admission.app_id).inc()

    async def _client_stalled(self) -> None:
        """Not reading for too long: closed, so the gateway holds nothing for it any more."""
        limit = settings.REALTIME_STALLED_CLIENT_SECONDS
        log.info("closing a client that read nothing for %g s", limit)
        if self.usage is not None and self.admission is not None:
            self.usage.errors[ErrorCode.TIMEOUT.value] += 1
            metrics.ERRORS.labels(self.admission.app_id, ErrorCode.TIMEOUT.value).inc()
        reason = f"results not read for {limit:g} seconds"
        with contextlib.suppress(Exception):
            await self.send(text_data=error_message(ErrorCode.TIMEOUT, reason))
        with contextlib.suppress(Exception):
            await self._close(CloseCode.STALLED, reason)

    # -- errors and close ---------------------------------------------------------------------

    async def _client_error(self, code: ErrorCode, reason: str) -> None:
        if self.usage is not None and self.admission is not None:
            self.usage.errors[code.value] += 1
            metrics.ERRORS.labels(self.admission.app_id, code.value).inc()
        with contextlib.suppress(Exception):
            await self._message(error_message(code, reason))

    # -- staff actions, from any gateway process through the channel layer ----------------------

    async def _join_groups(self, admission: Admission) -> None:
        """Groups by which staff reach this connection: its user, and its key or token."""
        groups = [user_group(admission.user.pk)]
        if admission.api_key_id is not None:
            groups.append(key_group(admission.api_key_id))
        if admission.token_id is not None:
            groups.append(token_group(admission.token_id))
        self.staff_groups = tuple(groups)
        try:
            await self._add_to_groups()
        except Exception as exc:  # the layer loop joins them once the layer is back
            log.warning("could not join staff groups yet (%s)", type(exc).__name__)

    async def _add_to_groups(self) -> None:
        if self.channel_layer is not None:
            for group in self.staff_groups:
                await self.channel_layer.group_add(group, self.channel_name)

    async def realtime_kick(self, event: dict[str, Any]) -> None:
        """Close this connection now, telling the client why (admin disconnect or revocation)."""
        code = ErrorCode(event.get("error", ErrorCode.FORBIDDEN.value))
        reason = str(event.get("reason", "closed by an administrator"))
        await self._client_error(code, reason)
        await self._close(int(event.get("close_code", CloseCode.FORBIDDEN)), reason)

    async def disconnect(self, code: int) -> None:
        await self._finish(code)

    async def shutdown(self) -> None:
        """The server is stopping: tell the client (1001) while the reactor can still deliver it, then
        write the usage record."""
        with contextlib.suppress(Exception):
            await self._close(1001, "server shutting down")
        await self._finish(1001)

    async def _finish(self, close_code: int) -> None:
        if self.finished:
            return
        close_code = self.closed_with or close_code  # why this side closed, not how the socket ended
        self.finished = True
        self.closing = True
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(upstream.close(), 2)
        if self.reader is not None:
            self.reader.cancel()
        if self.outbox is not None:
            self.outbox.close()
        if self.slot_taken and self.admission is not None:
            limiter.disconnect(self.admission.user.pk)
            self.m_active.dec()
        for group in self.staff_groups:
            with contextlib.suppress(Exception):
                await self.channel_layer.group_discard(group, self.channel_name)
        if self.usage is not None and settings.USAGE_RECORDING:
            try:
                await recorder.close(self.usage, close_code)
            except BaseException:
                log.exception("could not write the usage record of %s", self.usage.id)
                raise
            log.info("closed (%s): %s", close_code, self.usage.id)
