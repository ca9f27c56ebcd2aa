"""A new connection's fast path on a real stack: two daphne processes on Redis and a runner.

A credential admitted a moment ago is admitted again from the cache, and the connection starts on a
runner session opened ahead. What must not change: a revocation refuses the credential's next
connection at once on every gateway, before any input is answered; what the revocation feed does
not carry (the user's allowed apps) is caught by the database's confirmation. Another user's session
keeps getting results throughout.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.accounts.live import (
    JPEG,
    closed_with,
    connected,
    jti_of,
    new_user,
    round_trip,
    shell,
    staff_client,
    token_from,
    two_gateways,
    victim_session,
    with_key,
)
from tests.gateway.stack import GatewayStack
from tests.runner.wsclient import open_ws, pack, recv

REDIS_URL = "redis://127.0.0.1:6379/10"  # a database of its own: group names repeat across test stacks


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayStack, GatewayStack]]:
    with two_gateways(tmp_path_factory.mktemp("fast-connect"), REDIS_URL, "vic") as stacks:
        yield stacks


@pytest.fixture
async def victim(cluster) -> AsyncIterator[ClientConnection]:
    """Another user's live session on gateway a: it must keep working through every test."""
    async for ws in victim_session(cluster[0]):
        yield ws


def counter(stack: GatewayStack, name: str, label: str) -> float:
    with staff_client(stack) as http:
        text = http.get("/metrics").text
    match = re.search(rf'^{name}_total\{{[a-z]+="{label}"\}} ([0-9.e+]+)$', text, re.M)
    assert match, f"{name} {label} not in /metrics"
    return float(match[1])


async def once(stack: GatewayStack, query: str = "", headers: dict | None = None) -> None:
    """Connect, get one result, close (the gateway then keeps what it learnt)."""
    ws = await connected(stack, query, headers)
    await ws.close()


async def refused_before_any_answer(stack: GatewayStack, query: str = "", headers: dict | None = None) -> str:
    """Connect and send an input at once: the first thing back must be the refusal (4401)."""
    ws = await open_ws(f"{stack.ws}/local/echo/realtime{query}", additional_headers=headers or {})
    await ws.send(pack(prompt="x", image_bytes=JPEG, width=64, height=64, request_id="too-early"))
    first = await recv(ws, timeout=20)
    assert first.get("type") == "x-fal-error", f"answered before the refusal: {str(first)[:200]}"
    assert first["error"] == "UNAUTHORIZED", first
    with pytest.raises(ConnectionClosed):
        while True:
            await recv(ws, timeout=20)
    assert ws.close_code == 4401
    return first["reason"]


async def test_a_reconnect_is_admitted_from_the_cache_on_a_runner_session_opened_ahead(cluster, victim) -> None:
    a, _ = cluster
    _, key = await asyncio.to_thread(new_user, a, "ron")
    await once(a, headers=with_key(key))
    await asyncio.sleep(0.5)  # the session opened ahead, after the first answer
    cached_before = await asyncio.to_thread(counter, a, "realtime_admissions", "cache")
    warm_before = await asyncio.to_thread(counter, a, "realtime_upstream_opens", "warm")
    ws = await connected(a, headers=with_key(key))
    await round_trip(ws, "second")
    await ws.close()
    assert await asyncio.to_thread(counter, a, "realtime_admissions", "cache") == cached_before + 1
    assert await asyncio.to_thread(counter, a, "realtime_upstream_opens", "warm") >= warm_before + 1


async def test_a_revoked_key_is_refused_at_once_on_every_gateway_though_it_was_cached(cluster, victim) -> None:
    a, b = cluster
    _, key = await asyncio.to_thread(new_user, a, "kay")
    for stack in (a, b):
        await once(stack, headers=with_key(key))  # admitted from the database, then cached
    live = [await connected(stack, headers=with_key(key)) for stack in (a, b)]  # from the cache
    await asyncio.to_thread(
        shell, a, f"from realtime_site.accounts.revocation import revoke_keys; "
        f"revoke_keys(ApiKey.objects.filter(key_id={key.split(':')[0]!r}))"
    )  # fmt: skip
    for ws in live:
        assert await closed_with(ws, "UNAUTHORIZED", 4401) == "this API key was revoked"
    for stack in (a, b):
        from_cache = await asyncio.to_thread(counter, stack, "realtime_admissions", "cache")
        assert await refused_before_any_answer(stack, headers=with_key(key)) == "this API key was revoked"
        assert await asyncio.to_thread(counter, stack, "realtime_admissions", "cache") == from_cache


async def test_a_revoked_token_is_refused_at_once_though_it_was_cached(cluster, victim) -> None:
    a, b = cluster
    _, key = await asyncio.to_thread(new_user, a, "tom")
    token = await asyncio.to_thread(token_from, a, key)
    await once(b, f"?fal_jwt_token={token}")
    await once(b, f"?fal_jwt_token={token}")  # the second from the cache
    jti = jti_of(token)
    await asyncio.to_thread(
        shell, a, f"from realtime_site.accounts.revocation import revoke_tokens; "
        f"revoke_tokens(IssuedToken.objects.filter(jti={jti!r}))"
    )  # fmt: skip
    await asyncio.sleep(0.5)  # no live connection of it to wait for: the feed's message is on its way
    from_cache = await asyncio.to_thread(counter, b, "realtime_admissions", "cache")
    assert await refused_before_any_answer(b, f"?fal_jwt_token={token}") == "token was revoked"
    assert await asyncio.to_thread(counter, b, "realtime_admissions", "cache") == from_cache  # by admission


async def test_a_deactivated_user_is_refused_at_once_though_cached(cluster, victim) -> None:
    a, _ = cluster
    pk, key = await asyncio.to_thread(new_user, a, "dee")
    await once(a, headers=with_key(key))
    ws = await connected(a, headers=with_key(key))
    await asyncio.to_thread(
        shell, a, f"from django.contrib.auth import get_user_model; "
        f"u = get_user_model().objects.get(pk={pk}); u.is_active = False; u.save()"
    )  # fmt: skip
    await closed_with(ws, "UNAUTHORIZED", 4401)
    reason = await refused_before_any_answer(a, headers=with_key(key))
    assert "inactive" in reason or "deactivated" in reason, reason


async def test_what_the_feed_does_not_carry_is_caught_by_the_confirmation(cluster, victim) -> None:
    """Allowed apps changed in the database alone: the cached admission lets the connection start,
    and the confirmation closes it as admission now refuses it (4403)."""
    a, _ = cluster
    pk, key = await asyncio.to_thread(new_user, a, "amy")
    await once(a, headers=with_key(key))
    await asyncio.to_thread(
        shell, a, f"from realtime_site.accounts.models import UserLimits; "
        f"UserLimits.objects.update_or_create(user_id={pk}, defaults={{'allowed_apps': ['stylize']}})"
    )  # fmt: skip
    from_cache = await asyncio.to_thread(counter, a, "realtime_admissions", "cache")
    ws = await open_ws(f"{a.ws}/local/echo/realtime", additional_headers=with_key(key))
    assert "not allowed to use app" in await closed_with(ws, "FORBIDDEN", 4403)
    assert await asyncio.to_thread(counter, a, "realtime_admissions", "cache") == from_cache + 1
    # the entry is gone: the next connection is refused by admission itself
    ws = await open_ws(f"{a.ws}/local/echo/realtime", additional_headers=with_key(key))
    assert "not allowed to use app" in await closed_with(ws, "FORBIDDEN", 4403)
    assert await asyncio.to_thread(counter, a, "realtime_admissions", "cache") == from_cache + 1


# -- HTTP calls: the same cache, the database's check run while the runner works --------------------

INPUT = {"prompt": "x", "image_url": "data:image/jpeg;base64," + base64.b64encode(JPEG).decode()}


def call(stack: GatewayStack, key: str, mode: str = "run") -> httpx.Response:
    suffix = "/stream" if mode == "stream" else ""
    return httpx.post(f"{stack.http}/local/echo{suffix}", json=INPUT, headers=with_key(key), timeout=30)


async def test_a_second_call_is_admitted_from_the_cache_and_answered(cluster, victim) -> None:
    a, _ = cluster
    _, key = await asyncio.to_thread(new_user, a, "cal")
    assert (await asyncio.to_thread(call, a, key)).status_code == 200  # from the database
    from_cache = await asyncio.to_thread(counter, a, "realtime_admissions", "cache")
    for mode in ("run", "stream"):
        response = await asyncio.to_thread(call, a, key, mode)
        assert response.status_code == 200, response.text
        assert '"images"' in response.text
    assert await asyncio.to_thread(counter, a, "realtime_admissions", "cache") == from_cache + 2
    await round_trip(victim, "victim-after-calls")


async def test_a_revoked_key_is_refused_its_next_call_at_once_on_every_gateway(cluster, victim) -> None:
    a, b = cluster
    _, key = await asyncio.to_thread(new_user, a, "rev")
    for stack in (a, b):
        assert (await asyncio.to_thread(call, stack, key)).status_code == 200  # cached on both
    await asyncio.to_thread(
        shell, a, f"from realtime_site.accounts.revocation import revoke_keys; "
        f"revoke_keys(ApiKey.objects.filter(key_id={key.split(':')[0]!r}))"
    )  # fmt: skip
    await asyncio.sleep(0.5)  # no live connection of it to wait for: the feed's message is on its way
    for stack in (a, b):
        from_cache = await asyncio.to_thread(counter, stack, "realtime_admissions", "cache")
        for mode in ("run", "stream"):
            response = await asyncio.to_thread(call, stack, key, mode)
            assert response.status_code == 401 and "revoked" in response.json()["detail"], response.text
        assert await asyncio.to_thread(counter, stack, "realtime_admissions", "cache") == from_cache
    await round_trip(victim, "victim-after-revocation")


@pytest.mark.parametrize("mode", ["run", "stream"])
async def test_a_cached_call_the_database_now_refuses_gets_no_result(cluster, victim, mode: str) -> None:
    """Allowed apps changed in the database alone: the cached call is refused (403, no result, no
    event) by the check that ran while the runner worked, and the entry is forgotten."""
    a, _ = cluster
    pk, key = await asyncio.to_thread(new_user, a, f"narrow-{mode}")
    assert (await asyncio.to_thread(call, a, key, mode)).status_code == 200
    await asyncio.to_thread(
        shell, a, f"from realtime_site.accounts.models import UserLimits; "
        f"UserLimits.objects.update_or_create(user_id={pk}, defaults={{'allowed_apps': ['stylize']}})"
    )  # fmt: skip
    from_cache = await asyncio.to_thread(counter, a, "realtime_admissions", "cache")
    for _ in range(2):  # the first from the cache, refused on confirmation; then by admission itself
        response = await asyncio.to_thread(call, a, key, mode)
        assert response.status_code == 403, response.text
        assert "not allowed to use app" in response.json()["detail"] and "images" not in response.text
        assert await asyncio.to_thread(counter, a, "realtime_admissions", "cache") == from_cache + 1
    await round_trip(victim, f"victim-after-{mode}")
