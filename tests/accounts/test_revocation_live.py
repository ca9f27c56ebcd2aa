"""Revocation on a real stack: two daphne processes on Redis, a runner, the admin and manage.py shell.

Each test closes one user's connections in one way and checks that another user's session, on the
same gateways, keeps getting results.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from websockets.asyncio.client import ClientConnection

from tests.accounts.live import (
    admin_action,
    admin_delete,
    closed_with,
    connected,
    jti_of,
    key_pk,
    new_user,
    refused,
    shell,
    token_from,
    two_gateways,
    victim_session,
    with_key,
)
from tests.gateway.stack import GatewayStack

REDIS_URL = "redis://127.0.0.1:6379/11"  # a database of its own: group names repeat across test stacks


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayStack, GatewayStack]]:
    with two_gateways(tmp_path_factory.mktemp("revocation"), REDIS_URL, "eve") as stacks:
        yield stacks


@pytest.fixture
async def victim(cluster) -> AsyncIterator[ClientConnection]:
    """Another user's live session on gateway a: it must keep working through every test."""
    async for ws in victim_session(cluster[0]):
        yield ws


async def test_revoking_a_key_in_the_admin_closes_its_tokens_connections_and_refuses_its_tokens(
    cluster, victim
) -> None:
    a, b = cluster
    _, key = await asyncio.to_thread(new_user, a, "kim")
    live, spare = [await asyncio.to_thread(token_from, b, key) for _ in range(2)]
    ws = await connected(b, f"?fal_jwt_token={live}")  # the default path of the Python client
    pk = await asyncio.to_thread(key_pk, a, key)
    await asyncio.to_thread(admin_action, a, "/admin/accounts/apikey/", "revoke", pk)
    assert await closed_with(ws, "UNAUTHORIZED", 4401) == "the API key that issued this token was revoked"
    assert await refused(b, f"?fal_jwt_token={spare}") == "token was revoked"
    assert await refused(a, headers=with_key(key)) == "this API key was revoked"


async def test_revoking_a_key_in_code_closes_its_connections_on_every_gateway(cluster, victim) -> None:
    a, b = cluster
    _, key = await asyncio.to_thread(new_user, a, "lou")
    by_token = await connected(a, f"?fal_jwt_token={await asyncio.to_thread(token_from, a, key)}")
    by_key = await connected(b, headers=with_key(key))
    code = f"k = ApiKey.objects.get(key_id={key.split(':')[0]!r}); k.revoked_at = timezone.now(); k.save()"
    await asyncio.to_thread(shell, a, code)
    assert await closed_with(by_token, "UNAUTHORIZED", 4401) == "the API key that issued this token was revoked"
    assert await closed_with(by_key, "UNAUTHORIZED", 4401) == "this API key was revoked"


async def test_deactivating_a_user_closes_their_sessions(cluster, victim) -> None:
    a, b = cluster
    pk, key = await asyncio.to_thread(new_user, a, "max")
    by_key = await connected(b, headers=with_key(key))
    by_token = await connected(a, f"?fal_jwt_token={await asyncio.to_thread(token_from, a, key)}")
    code = f"u = ApiKey.objects.get(user_id={pk}).user; u.is_active = False; u.save()"
    await asyncio.to_thread(shell, b, code)
    for ws in (by_key, by_token):
        assert await closed_with(ws, "UNAUTHORIZED", 4401) == "your account was deactivated"
    assert await refused(a, headers=with_key(key)) == "the key's user is inactive"


async def test_deleting_a_user_in_the_admin_closes_their_sessions(cluster, victim) -> None:
    a, b = cluster
    pk, key = await asyncio.to_thread(new_user, a, "ned")
    ws = await connected(b, headers=with_key(key))
    await asyncio.to_thread(admin_delete, a, f"/admin/auth/user/{pk}/delete/")
    reason = await closed_with(ws, "UNAUTHORIZED", 4401)
    assert reason in ("your account was deleted", "this API key was deleted")  # whichever kick came first
    assert await refused(a, headers=with_key(key)) == "unknown API key or wrong secret"


async def test_deleting_a_key_closes_the_connections_of_its_tokens(cluster, victim) -> None:
    a, b = cluster
    _, key = await asyncio.to_thread(new_user, a, "oli")
    live, spare = [await asyncio.to_thread(token_from, a, key) for _ in range(2)]
    by_token = await connected(b, f"?fal_jwt_token={live}")
    by_key = await connected(a, headers=with_key(key))
    await asyncio.to_thread(shell, a, f"ApiKey.objects.get(key_id={key.split(':')[0]!r}).delete()")
    assert await closed_with(by_token, "UNAUTHORIZED", 4401) == "the API key that issued this token was deleted"
    assert await closed_with(by_key, "UNAUTHORIZED", 4401) == "this API key was deleted"
    assert await refused(b, f"?fal_jwt_token={spare}") == "token was revoked"


async def test_deleting_a_token_row_closes_its_connections(cluster, victim) -> None:
    a, b = cluster
    _, key = await asyncio.to_thread(new_user, a, "pia")
    token = await asyncio.to_thread(token_from, a, key)
    ws = await connected(b, f"?fal_jwt_token={token}")
    await asyncio.to_thread(shell, a, f"IssuedToken.objects.get(jti={jti_of(token)!r}).delete()")
    assert await closed_with(ws, "UNAUTHORIZED", 4401) == "this token was deleted"
    assert await refused(a, f"?fal_jwt_token={token}") == "token was not issued by this server"
