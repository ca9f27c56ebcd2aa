"""The realtime consumer: admit once at connect, then relay frames between client and runner.

The frame path (``receive`` and ``_relay_from_runner``) touches no database, no session and no
channel layer: a size check, the in-memory limiter, counters, and a send. Frames are relayed as they
came (no image is decoded or re-encoded); only the runner's small JSON messages are parsed, and a
result's ``timings`` is read without copying its image.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from django.conf import settings
from django.db import InterfaceError, OperationalError
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from realtime_site.gateway import cached_admission, lifecycle
from realtime_site.gateway.admission import (
    Admission,
    app_path_of,
    session_query,
)
from realtime_site.gateway.backpressure import ResultOutbox
from realtime_site.gateway.connect_rate import connect_rate
from realtime_site.gateway.credential_checks import CredentialChecks
from realtime_site.gateway.limits import EffectiveLimits, limiter
from realtime_site.gateway.relay import Kind, RelayAccount, usage_of
from realtime_site.gateway.runners import NoRunner, RunnerState, get_pool
from realtime_site.gateway.warm_upstreams import warm_upstreams
from realtime_site.protocol import CloseCode, ErrorCode, Refusal, closing_frame_bytes, error_message
from realtime_site.usage import metrics
from realtime_site.usage.recorder import Usage, recorder

__all__ = ["RealtimeConsumer"]

log = logging.getLogger("realtime_site.gateway")
# Close codes with which a runner refuses a connection, after an x-fal-error we relay.
RUNNER_REFUSALS = {CloseCode.BAD_REQUEST, CloseCode.FORBIDDEN, CloseCode.NOT_FOUND, CloseCode.UNAVAILABLE}
# How a runner session's odd end is told to the client; none of them is blamed on the runner.
SESSION_END_ERRORS = {
    CloseCode.TOO_LARGE: (ErrorCode.PAYLOAD_TOO_LARGE, "the runner closed this session: a frame was too large (1009)"),
    CloseCode.INTERNAL_ERROR: (ErrorCode.INTERNAL_ERROR, "the runner closed this session: an internal error (1011)"),
}


class ClientGone(Exception):
    """The client's connection closed while something was being sent to it."""


class RealtimeConsumer(CredentialChecks):
    admission: Admission | None = None
    limits: EffectiveLimits | None = None
    usage: Usage | None = None
    upstream: ClientConnection | None = None
    runner: RunnerState | None = None
    reader: asyncio.Task[None] | None = None
    confirmer: asyncio.Task[None] | None = None
    outbox: ResultOutbox | None = None
    closed_with: int | None = None  # the code this side closed with, for the usage record
    closing = False
    finished = False
    slot_taken = False
    account: RelayAccount | None = None
    max_buffering = 1  # the client's, or else the app's default

    async def ended(self) -> None:
        await self._finish(CloseCode.GOING_AWAY)

    # -- connect ------------------------------------------------------------------------------

    async def connect(self) -> None:
        await self.accept()
        try:
            await self._admit()
        except Refusal as refusal:
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
            reason = "the server could not admit you (an internal error)"
            await self._refuse(ErrorCode.INTERNAL_ERROR, reason, CloseCode.INTERNAL_ERROR)
            return
        await self._open_upstream()

    async def _refuse(self, code: ErrorCode, reason: str, close_code: int) -> None:
        self.closed_with = int(close_code)
        with contextlib.suppress(Exception):
            await self.send(text_data=error_message(code, reason))
            await self._close(close_code, reason)

    async def _close(self, code: int, reason: str) -> None:
        """Close with ``code``, and ``reason`` in the close frame (clients show it beside the code)."""
        code = int(code)  # autobahn takes plain ints only, not a CloseCode
        self.closed_with = self.closed_with or code
        if not lifecycle.close_with_code(self.scope, code, reason):
            await self.close(code if code == 1000 or 3000 <= code <= 4999 else 1000)

    async def _admit(self) -> None:
        """Cheap refusals first (address rate, path grammar, the app catalog), then the database."""
        address = str((self.scope.get("client") or ("",))[0])
        refusal = connect_rate().refusal(address)
        if refusal is not None:
            raise refusal
        path = app_path_of(self.scope)
        session_query(self.scope)  # a repeated parameter is refused before the database too
        pool = get_pool()
        await pool.ready()
        try:
            pool.known_path(path.app_id, path.sub_path)
        except NoRunner as exc:
            close_code = CloseCode.UNAVAILABLE if exc.code is ErrorCode.RUNNER_UNAVAILABLE else CloseCode.NOT_FOUND
            raise Refusal(exc.code, exc.reason, close_code) from None
        # Admitted from the cache, the database confirms it behind the first frames (_confirm).
        admission, limits, cached = await cached_admission.admit(self.scope, path, self._admit_from_database)
        try:
            pool.choose(admission.app_id)
        except NoRunner as exc:
            if exc.code is ErrorCode.APP_UNAVAILABLE:
                raise Refusal(exc.code, exc.reason, CloseCode.UNAVAILABLE) from None
            # RUNNER_UNAVAILABLE: a known app with no runner up now; the first input tries again.
        over = limiter.connect(admission.user.pk, limits)
        if over is not None:
            raise Refusal(ErrorCode.RATE_LIMITED, over, CloseCode.TOO_MANY)
        self.slot_taken = True
        self.admission, self.limits = admission, limits
        self.max_buffering = admission.session.max_buffering or pool.default_buffering(admission.app_id)
        self.usage = usage_of(admission, self.scope)
        if settings.USAGE_RECORDING:
            recorder.open(self.usage)
        lifecycle.register(self)
        app = admission.app_id
        self.account = RelayAccount(self.usage)
        self.m_active = metrics.ACTIVE.labels(app)
        metrics.SESSIONS.labels(app, "realtime").inc()
        self.m_active.inc()
        self.outbox = ResultOutbox(
            self.scope,
            self._send_to_client,
            capacity=self.max_buffering,
            stall_limit=settings.REALTIME_STALLED_CLIENT_SECONDS,
            on_drop=self._result_dropped,
            on_stall=self._client_stalled,
        )
        self.answered = asyncio.Event()
        self.confirmer = asyncio.get_running_loop().create_task(self._after_first_answer(path, cached))
        log.info(
            "admitted: user=%s app=%s auth=%s%s",
            admission.user.pk,
            admission.app_id,
            admission.auth_method,
            " (cached)" if cached else "",
        )

    # -- client -> runner ---------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        admission, limits, account = self.admission, self.limits, self.account
        if admission is None or limits is None or account is None:
            return  # refused: the close is on its way
        data: bytes | str = bytes_data if bytes_data is not None else (text_data or "")
        size = len(data) if isinstance(data, bytes) else len(data.encode())
        account.frame_in(size)
        if self.closed_with is not None:
            return  # this side is closing: what the client still sends goes to no runner
        if size > settings.REALTIME_MAX_FRAME_BYTES:
            limit = settings.REALTIME_MAX_FRAME_BYTES
            await self._client_error(ErrorCode.PAYLOAD_TOO_LARGE, f"frame is {size} bytes; the limit is {limit} bytes")
            if size > closing_frame_bytes(limit):  # as the runner does: the connection ends (1009)
                await self._close(CloseCode.TOO_LARGE, "frame far over the size limit")
            return
        refusal = limiter.frame(admission.user.pk, limits)
        if refusal is not None:
            await self._client_error(*refusal)
            return
        if self.upstream is None and not await self._open_upstream():
            return
        assert self.upstream is not None
        account.relayed()
        with contextlib.suppress(ConnectionClosed):  # a lost runner is reported by the reader
            await self.upstream.send(data)

    # -- runner -> client ---------------------------------------------------------------------

    async def _open_upstream(self) -> bool:
        """A session on the least-loaded runner with the app; on failure tell the client, return False."""
        assert self.admission is not None and self.usage is not None
        admission = self.admission
        target = self._upstream_target()
        try:
            ws, runner = await warm_upstreams().open(
                admission.app_id, target, avoid=self.runner.url if self.runner else None
            )
        except NoRunner as exc:
            await self._client_error(exc.code, exc.reason)
            return False
        self.upstream, self.runner = ws, runner
        self.usage.runner = runner.url
        self.reader = asyncio.get_running_loop().create_task(self._relay_from_runner(ws, runner))
        return True

    def _upstream_target(self) -> str:
        """The runner session's path and query (``app/path?options``)."""
        assert self.admission is not None
        admission = self.admission
        return f"{admission.app_id}/{admission.sub_path}?{admission.session.upstream(self.max_buffering)}"

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
            self.account.runner_session_ended()  # those inputs are lost with it
            await self._runner_closed(ws, runner, last_error)

    async def _relay_one(self, message: bytes | str) -> str | None:
        """Count and relay one message from the runner; returns the code of an error."""
        assert self.account is not None and self.admission is not None
        answer = self.account.answer(message)
        kind = answer.kind
        if kind is Kind.DROPPED or (
            kind is Kind.MESSAGE and answer.action == "timings" and not self.admission.session.timings
        ):
            return None  # the runner's report for the gateway; timings not asked for
        await self._to_client(message, kind)
        self.answered.set()
        return answer.error_code if kind is Kind.ERROR else None

    async def _runner_closed(self, ws: ClientConnection, runner: RunnerState, last_error: str | None) -> None:
        """The runner ended this session. Only what the runner says of itself (going away, refusing
        the gateway's secret) marks it down; any other end only asks for a health check."""
        code = ws.close_code
        pool = get_pool()
        if last_error == ErrorCode.TIMEOUT.value:
            await self._close(CloseCode.NORMAL, ws.close_reason or "idle timeout")  # the runner's, relayed
            return
        if code in RUNNER_REFUSALS:
            await self._close(code, ws.close_reason or "refused by the runner")  # it said why, too
            return
        if code in (CloseCode.GOING_AWAY, CloseCode.UNAUTHORIZED):
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

    async def _to_client(self, message: bytes | str, kind: Kind = Kind.MESSAGE) -> None:
        """Through the outbox: while the client is not reading, the newest results wait and previews
        are skipped (before admission, straight out)."""
        if self.outbox is None:
            await self._send_to_client(message)
        elif kind is Kind.RESULT:
            await self.outbox.result(message)
        elif kind is Kind.PREVIEW:
            await self.outbox.preview(message)
        else:
            await self.outbox.message(message)

    def _result_dropped(self) -> None:
        """A result waiting for a slow reader was displaced by a newer one (latest wins)."""
        if self.account is not None:
            self.account.result_dropped_for_a_slow_reader()

    async def _client_stalled(self) -> None:
        """Not reading for too long: closed, so the gateway holds nothing for it any more."""
        limit = settings.REALTIME_STALLED_CLIENT_SECONDS
        log.info("closing a client that read nothing for %g s", limit)
        if self.account is not None:
            self.account.error(ErrorCode.TIMEOUT.value)
        reason = f"results not read for {limit:g} seconds"
        with contextlib.suppress(Exception):
            await self.send(text_data=error_message(ErrorCode.TIMEOUT, reason))
        with contextlib.suppress(Exception):
            await self._close(CloseCode.STALLED, reason)

    # -- errors and close ---------------------------------------------------------------------

    async def _client_error(self, code: ErrorCode, reason: str) -> None:
        if self.account is not None:
            self.account.error(code.value)
        with contextlib.suppress(Exception):
            await self._to_client(error_message(code, reason))

    async def disconnect(self, code: int) -> None:
        await self._finish(code)

    async def shutdown(self) -> None:
        """The server is stopping: tell the client (1001) while the reactor can still deliver it, then
        write the usage record."""
        with contextlib.suppress(Exception):
            await self._close(CloseCode.GOING_AWAY, "server shutting down")
        await self._finish(CloseCode.GOING_AWAY)

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
        if self.confirmer is not None:
            self.confirmer.cancel()
        if self.outbox is not None:
            self.outbox.close()
        if self.slot_taken and self.admission is not None:
            limiter.disconnect(self.admission.user.pk)
            self.m_active.dec()
        await self.leave_staff_groups()
        if self.usage is not None and settings.USAGE_RECORDING:
            try:
                await recorder.close(self.usage, close_code)
            except BaseException:
                log.exception("could not write the usage record of %s", self.usage.id)
                raise
            log.info("closed (%s): %s", close_code, self.usage.id)
