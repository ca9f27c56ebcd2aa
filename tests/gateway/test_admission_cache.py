"""The admission cache and its feed: what is served, for how long, and what is forgotten when."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import jwt
import pytest
from channels.layers import InMemoryChannelLayer
from channels_redis.core import RedisChannelLayer

from realtime_site.gateway.admission import Admission, session_query
from realtime_site.gateway.admission_cache import AdmissionCache, credential_of
from realtime_site.gateway.admission_feed import GROUP, AdmissionFeed, forget_message
from realtime_site.gateway.limits import EffectiveLimits
from realtime_site.protocol import AppPath, Refusal, parse_app_path
from realtime_site.usage.models import AuthMethod
from tests.gateway.stack import free_port

ECHO = parse_app_path("/local/echo/realtime")
STYLIZE = parse_app_path("/local/stylize/realtime")
LIMITS = EffectiveLimits(max_connections=8, frames_per_minute=1800, daily_frame_quota=None, frames_today=0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def scope(query: str = "", headers: list[tuple[bytes, bytes]] | None = None, session: str | None = None) -> dict:
    s: dict[str, Any] = {
        "type": "websocket",
        "path": "/local/echo/realtime",
        "query_string": query.encode(),
        "headers": [(b"host", b"testserver"), *(headers or [])],
    }
    if session is not None:
        s["session"] = SimpleNamespace(session_key=session)
    return s


def key_scope(key: str = "kid:secret", **kw: Any) -> dict:
    return scope(headers=[(b"authorization", f"Key {key}".encode())], **kw)


def admission(user_id: int = 1, path: AppPath = ECHO, **kw: Any) -> Admission:
    fields = {"auth_method": AuthMethod.API_KEY, "api_key_id": 7, "key_id": "kid", **kw}
    return Admission(SimpleNamespace(pk=user_id), path.app_id, path.sub_path, session=session_query({}), **fields)


def cache(seconds: float = 60, **kw: Any) -> tuple[AdmissionCache, Clock]:
    clock = Clock()
    c = AdmissionCache(seconds, clock=clock, **kw)
    c.listening = True
    return c, clock


def test_the_same_credential_for_the_same_app_is_served_with_this_connections_options() -> None:
    c, _ = cache()
    c.store(key_scope(), ECHO, admission(), LIMITS)
    hit = c.lookup(scope(query="max_buffering=3", headers=[(b"authorization", b"Key kid:secret")]), ECHO)
    assert hit is not None
    got, limits = hit
    assert (got.user.pk, got.api_key_id, got.session.max_buffering, limits) == (1, 7, 3, LIMITS)


def test_another_secret_another_app_or_no_credential_is_not_served() -> None:
    c, _ = cache()
    c.store(key_scope(), ECHO, admission(), LIMITS)
    assert c.lookup(key_scope("kid:other"), ECHO) is None
    assert c.lookup(key_scope(), STYLIZE) is None
    assert c.lookup(scope(), ECHO) is None


def test_entries_lapse_after_their_seconds() -> None:
    c, clock = cache(seconds=60)
    c.store(key_scope(), ECHO, admission(), LIMITS)
    clock.now += 59
    assert c.lookup(key_scope(), ECHO) is not None
    clock.now += 2
    assert c.lookup(key_scope(), ECHO) is None
    assert len(c) == 0


def test_nothing_is_served_while_the_process_cannot_hear_revocations_or_when_off() -> None:
    c, _ = cache()
    c.store(key_scope(), ECHO, admission(), LIMITS)
    c.listening = False
    assert c.lookup(key_scope(), ECHO) is None
    off, _ = cache(seconds=0)
    off.store(key_scope(), ECHO, admission(), LIMITS)
    assert len(off) == 0 and off.lookup(key_scope(), ECHO) is None


@pytest.mark.parametrize(
    ("what", "entry"),
    [
        ({"users": [1]}, admission(user_id=1, api_key_id=None)),
        ({"keys": [7]}, admission(user_id=2)),
        ({"tokens": ["j1"]}, admission(user_id=3, api_key_id=None, token_id="j1", auth_method=AuthMethod.JWT)),
    ],
)
def test_forget_drops_the_entries_of_a_user_a_key_or_a_token(what: dict, entry: Admission) -> None:
    c, _ = cache()
    c.store(key_scope("a:1"), ECHO, entry, LIMITS)
    c.store(key_scope("b:2"), ECHO, admission(user_id=9, api_key_id=99), LIMITS)
    assert c.forget(**what) == 1
    assert c.lookup(key_scope("a:1"), ECHO) is None
    assert c.lookup(key_scope("b:2"), ECHO) is not None


def test_the_least_recently_admitted_goes_first_past_max_entries() -> None:
    c, _ = cache(max_entries=2)
    for n in range(3):
        c.store(key_scope(f"k{n}:s"), ECHO, admission(user_id=n), LIMITS)
    assert len(c) == 2
    assert c.lookup(key_scope("k0:s"), ECHO) is None
    assert c.lookup(key_scope("k2:s"), ECHO) is not None


def test_a_cached_token_is_not_served_past_its_expiry(settings) -> None:
    settings.REALTIME_JWT_LEEWAY = 0
    c, _ = cache()
    soon = jwt.encode({"exp": int(time.time()) + 1}, "k" * 32, algorithm="HS256")
    later = jwt.encode({"exp": int(time.time()) + 600}, "k" * 32, algorithm="HS256")
    entry = admission(api_key_id=None, token_id="j", auth_method=AuthMethod.JWT)
    for token in (soon, later):
        c.store(scope(f"fal_jwt_token={token}"), ECHO, entry, LIMITS)
    time.sleep(1.1)
    assert c.lookup(scope(f"fal_jwt_token={soon}"), ECHO) is None
    assert c.lookup(scope(f"fal_jwt_token={later}"), ECHO) is not None


def test_a_cached_session_is_served_only_to_this_sites_pages(settings) -> None:
    settings.ALLOWED_HOSTS = ["testserver"]
    settings.REALTIME_ALLOWED_ORIGINS = []
    c, _ = cache()
    c.store(scope(session="s1"), ECHO, admission(api_key_id=None, auth_method=AuthMethod.SESSION), LIMITS)
    assert c.lookup(scope(session="s1", headers=[(b"origin", b"http://testserver")]), ECHO) is not None
    assert c.lookup(scope(session="s1", headers=[(b"origin", b"https://evil.example")]), ECHO) is None
    assert c.lookup(scope(session="s1"), ECHO) is None


def test_the_credential_is_never_kept_only_a_digest() -> None:
    c, _ = cache()
    c.store(key_scope("kid:topsecret"), ECHO, admission(), LIMITS)
    assert not any("topsecret" in key for key in c._entries)


def test_a_repeated_parameter_is_still_refused() -> None:
    c, _ = cache()
    with pytest.raises(Refusal):
        c.lookup(scope("fal_jwt_token=a&fal_jwt_token=b"), ECHO)
    assert credential_of(key_scope()) == ("api_key", "Key kid:secret")


async def test_the_feed_serves_once_joined_and_forgets_what_the_group_is_told() -> None:
    layer = InMemoryChannelLayer()
    c, _ = cache()
    c.listening = False
    feed = AdmissionFeed(c, layer)
    try:
        feed.follow()
        for _ in range(100):
            if c.listening:
                break
            await asyncio.sleep(0.01)
        assert c.serving
        c.store(key_scope(), ECHO, admission(user_id=5, api_key_id=None), LIMITS)
        await layer.group_send(GROUP, forget_message([5], [], []))
        for _ in range(100):
            if not len(c):
                break
            await asyncio.sleep(0.01)
        assert len(c) == 0
    finally:
        await feed.stop()
    assert not c.serving


async def test_the_feed_serves_nothing_while_its_layer_is_unreachable() -> None:
    layer = RedisChannelLayer(hosts=[{"address": f"redis://127.0.0.1:{free_port()}", "socket_connect_timeout": 1}])
    c, _ = cache()
    c.listening = False
    feed = AdmissionFeed(c, layer)
    try:
        feed.follow()
        await asyncio.sleep(1.5)
        c.store(key_scope(), ECHO, admission(), LIMITS)
        assert not c.serving and c.lookup(key_scope(), ECHO) is None
    finally:
        await feed.stop()
