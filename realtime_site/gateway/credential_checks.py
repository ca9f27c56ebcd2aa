"""What keeps a realtime connection's credential checked while it lives: the database's confirmation
behind the first answer, the staff groups (an administrator's or a revocation's close), and a second
look when the channel layer comes back. The consumer (``consumer.py``) is built on this."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from channels.auth import get_user
from channels.db import database_sync_to_async

from realtime_site.gateway import cached_admission
from realtime_site.gateway.admission import (
    Admission,
    admit_with_limits,
    has_credentials,
    revoked_since,
)
from realtime_site.gateway.admission_cache import admission_cache
from realtime_site.gateway.groups import key_group, token_group, user_group
from realtime_site.gateway.limits import EffectiveLimits
from realtime_site.gateway.staff_reach import StaffReachableConsumer
from realtime_site.gateway.warm_upstreams import warm_upstreams
from realtime_site.protocol import AppPath, CloseCode, ErrorCode, Refusal

__all__ = ["CONFIRM_AFTER_SECONDS", "CredentialChecks"]

log = logging.getLogger("realtime_site.gateway")
# A new connection's check against the database (and the next runner session opened ahead) waits for
# its first answer, at most this long.
CONFIRM_AFTER_SECONDS = 0.2


class CredentialChecks(StaffReachableConsumer):
    admission: Admission | None = None
    limits: EffectiveLimits | None = None
    closing = False
    answered: asyncio.Event  # set by the consumer at its first answer
    # The consumer provides _client_error, _close and _upstream_target.

    async def layer_back(self) -> None:
        """A revocation's close may have been lost while the layer was away: ask again."""
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

    async def _admit_from_database(self) -> tuple[Admission, EffectiveLimits]:
        session_user = None
        if not has_credentials(self.scope) and "session" in self.scope:
            user = await get_user(self.scope)
            session_user = user if user.is_authenticated else None
        return await database_sync_to_async(admit_with_limits)(self.scope, session_user)

    async def _after_first_answer(self, path: AppPath, cached: bool) -> None:
        """What a new connection does once its first answer is on its way (the client waits for that):
        the next runner session opened ahead, and the database's confirmation."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.answered.wait(), CONFIRM_AFTER_SECONDS)
        assert self.admission is not None
        warm_upstreams().open_ahead(self.admission.app_id, self._upstream_target())  # its own task
        await self._confirm(path, again=cached)

    async def _confirm(self, path: AppPath, *, again: bool) -> None:
        """Behind the first frames: join the staff groups, then ask the database whether the credential
        still holds. ``again``: admitted from the cache, so admission runs again in full (the fresh
        limits then apply); otherwise only what a revocation during admission changed. A refusal
        closes the connection as admission would have refused it."""
        admission = self.admission
        assert admission is not None
        await self._join_groups(admission)
        try:
            if again:
                self.limits = await cached_admission.confirm(
                    self.scope, path, admission.user.pk, self._admit_from_database
                )
            else:
                revoked = await database_sync_to_async(revoked_since)(admission)
                if revoked is not None:  # revoked while this connection was being admitted
                    raise Refusal(ErrorCode.UNAUTHORIZED, revoked, CloseCode.UNAUTHORIZED)
        except Refusal as refusal:
            admission_cache().discard(self.scope, path)
            log.info("refused on confirmation: %s (%s)", refusal.code.value, refusal.reason)
            await self._client_error(refusal.code, refusal.reason)
            await self._close(refusal.close_code, refusal.reason)
        except Exception as exc:  # the database away: the connection goes on, as open ones do
            log.warning("could not confirm an admission (%s)", type(exc).__name__)

    # -- staff actions, from any gateway process through the channel layer ----------------------

    async def _join_groups(self, admission: Admission) -> None:
        """Groups by which staff reach this connection: its user, and its key or token."""
        groups = [user_group(admission.user.pk)]
        if admission.api_key_id is not None:
            groups.append(key_group(admission.api_key_id))
        if admission.token_id is not None:
            groups.append(token_group(admission.token_id))
        await self.join_staff_groups(tuple(groups))

    async def realtime_kick(self, event: dict[str, Any]) -> None:
        """Close this connection now, telling the client why (admin disconnect or revocation)."""
        code = ErrorCode(event.get("error", ErrorCode.FORBIDDEN.value))
        reason = str(event.get("reason", "closed by an administrator"))
        await self._client_error(code, reason)
        await self._close(int(event.get("close_code", CloseCode.FORBIDDEN)), reason)
