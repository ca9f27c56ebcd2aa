"""Revocation cascades in the database, and its kicks through a real (in-memory) channel layer."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.utils import timezone

from realtime_site.accounts.keys import create_api_key
from realtime_site.accounts.models import ApiKey, IssuedToken
from realtime_site.accounts.revocation import revoke_keys, revoke_tokens
from realtime_site.accounts.tokens import TokenRefused, check_token, issue_token
from realtime_site.gateway.actions import close_token_connections
from realtime_site.gateway.groups import key_group, token_group, user_group

pytestmark = pytest.mark.django_db(transaction=True)  # on_commit runs: the kicks are sent


@pytest.fixture(autouse=True)
def in_memory_layer(settings) -> None:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.fixture
def user():
    return get_user_model().objects.create_user("dora", password="pw-dora-12345")


def minted(user, count: int = 2) -> tuple[ApiKey, list[str]]:
    key, _ = create_api_key(user)
    return key, [issue_token(user, ["echo"], 60, api_key=key) for _ in range(count)]


def refusal(token: str) -> str:
    with pytest.raises(TokenRefused) as caught:
        check_token(token, "echo")
    return caught.value.reason


def test_revoke_keys_revokes_the_tokens_they_minted(user) -> None:
    key, tokens = minted(user)
    _, other_tokens = minted(user, 1)
    session_token = issue_token(user, ["echo"], 60)
    assert revoke_keys(ApiKey.objects.filter(pk=key.pk)) == 1
    assert revoke_keys(ApiKey.objects.filter(pk=key.pk)) == 0  # already revoked
    for token in tokens:
        assert refusal(token) == "token was revoked"
    assert not IssuedToken.objects.filter(api_key=key, revoked_at__isnull=True).exists()
    check_token(other_tokens[0], "echo")  # another key's tokens, and session tokens, live on
    check_token(session_token, "echo")


def test_a_token_of_a_revoked_key_is_refused_even_without_the_cascade(user) -> None:
    key, tokens = minted(user, 1)
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())  # a bulk update: no signal
    assert refusal(tokens[0]) == "the API key that issued this token was revoked"


def test_saving_a_revoked_key_revokes_its_tokens(user) -> None:
    key, tokens = minted(user)
    key.revoked_at = timezone.now()
    key.save()
    assert all(refusal(token) == "token was revoked" for token in tokens)


def test_deleting_a_key_refuses_its_tokens(user) -> None:
    key, tokens = minted(user)
    key.delete()
    assert IssuedToken.objects.filter(api_key__isnull=True, source=IssuedToken.Source.API_KEY).count() == 2
    assert all(refusal(token) == "token was revoked" for token in tokens)
    IssuedToken.objects.update(revoked_at=None)  # even if someone un-revoked them by hand
    assert refusal(tokens[0]) == "the API key that issued this token was deleted"


async def joined(*groups: str) -> str:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    for group in groups:
        await layer.group_add(group, channel)
    return channel


async def kick(channel: str) -> dict:
    return await asyncio.wait_for(get_channel_layer().receive(channel), 10)


async def test_revoking_a_key_kicks_the_key_and_its_tokens(user) -> None:
    key, _ = await sync_to_async(minted)(user, 1)
    jti = await IssuedToken.objects.values_list("jti", flat=True).aget()
    by_key, by_token = await joined(key_group(key.pk)), await joined(token_group(jti))
    # From a worker thread, as an admin view under daphne: the send runs on this loop.
    await sync_to_async(revoke_keys)(ApiKey.objects.filter(pk=key.pk))
    assert (await kick(by_key))["reason"] == "this API key was revoked"
    message = await kick(by_token)
    assert message["reason"] == "the API key that issued this token was revoked"
    assert message["error"] == "UNAUTHORIZED" and message["close_code"] == 4401


async def test_revoking_a_token_kicks_only_that_token(user) -> None:
    await sync_to_async(minted)(user, 2)
    first, second = [jti async for jti in IssuedToken.objects.order_by("issued_at").values_list("jti", flat=True)]
    one, two = await joined(token_group(first)), await joined(token_group(second))
    await sync_to_async(revoke_tokens)(IssuedToken.objects.filter(jti=first))
    assert (await kick(one))["reason"] == "this token was revoked"
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(get_channel_layer().receive(two), 0.5)


async def test_deactivating_and_deleting_a_user_kick_their_sessions(user) -> None:
    channel = await joined(user_group(user.pk))
    user.first_name = "D"
    await user.asave()  # an active user's save closes nothing
    user.is_active = False
    await user.asave()
    assert (await kick(channel))["reason"] == "your account was deactivated"
    await user.adelete()
    assert (await kick(channel))["reason"] == "your account was deleted"


async def test_a_kick_from_inside_a_running_loop_is_scheduled_on_it() -> None:
    channel = await joined(token_group("abc"))
    close_token_connections("abc")  # sync, in the loop's own thread (async_to_sync would refuse)
    assert (await kick(channel))["reason"] == "this token was revoked"


def test_a_channel_layer_failure_is_logged_and_the_revocation_stands(user, settings, caplog) -> None:
    with socket.socket() as sock:  # Redis away: a port where nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{port}"]},
        }
    }
    key, tokens = minted(user)
    with caplog.at_level(logging.WARNING, logger="realtime_site.gateway"):
        assert revoke_keys(ApiKey.objects.filter(pk=key.pk)) == 1
    assert all(refusal(token) == "token was revoked" for token in tokens)
    assert any("could not close the live connections" in r.getMessage() for r in caplog.records)
