"""Realtime tokens: issue, decode, and every way a token is refused."""

from __future__ import annotations

import time

import jwt
import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from realtime_site.accounts.models import IssuedToken
from realtime_site.accounts.tokens import (
    ISSUER,
    TokenRefused,
    check_token,
    decode_token,
    issue_token,
    signing_key,
    token_lifetime,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def user():
    return get_user_model().objects.create_user("alice", password="pw-alice-123")


def forge(**claims: object) -> str:
    now = int(time.time())
    base = {"sub": "1", "apps": ["stylize"], "iat": now, "nbf": now, "exp": now + 60, "jti": "x", "iss": ISSUER}
    return jwt.encode({**base, **claims}, signing_key(), algorithm="HS256")


def test_issue_then_check(user) -> None:
    token = issue_token(user, ["stylize", "echo"], 60)
    grant, record = check_token(token, "echo")
    assert grant.user_id == user.pk and grant.apps == ("stylize", "echo")
    assert record.user == user and record.source == IssuedToken.Source.SESSION
    assert 59 <= (record.expires_at - record.issued_at).total_seconds() <= 61


def test_lifetime_is_capped(settings) -> None:
    settings.REALTIME_TOKEN_MAX_LIFETIME = 120
    assert token_lifetime(None) == 120 and token_lifetime(30) == 30 and token_lifetime(99999) == 120
    for bad in (0, -5, "60", True, 1.5):
        with pytest.raises(ValueError):
            token_lifetime(bad)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (forge(exp=int(time.time()) - 60), "token expired"),
        (forge(nbf=int(time.time()) + 60, iat=int(time.time()) + 60), "not yet valid"),
        (jwt.encode({"sub": "1"}, "another key entirely, long enough", algorithm="HS256"), "signature is invalid"),
        (jwt.encode({"sub": "1", "apps": ["stylize"]}, None, algorithm="none"), "algorithm is not allowed"),
        (forge(iss="someone-else"), "invalid"),
        ("not.a.jwt", "invalid"),
        (forge(apps="stylize"), "apps claim"),
        (forge(sub="root"), "sub claim"),
    ],
    ids=["expired", "not-yet-valid", "bad-signature", "alg-none", "issuer", "garbage", "apps-type", "sub-type"],
)
def test_decode_refuses(token: str, reason: str) -> None:
    with pytest.raises(TokenRefused) as caught:
        decode_token(token)
    assert reason in caught.value.reason and not caught.value.forbidden


def test_clock_leeway_accepts_a_token_a_moment_early(settings) -> None:
    settings.REALTIME_JWT_LEEWAY = 5
    now = int(time.time())
    decode_token(forge(nbf=now + 2, iat=now + 2))


def test_another_app_is_forbidden(user) -> None:
    with pytest.raises(TokenRefused) as caught:
        check_token(issue_token(user, ["stylize"], 60), "echo")
    assert caught.value.forbidden and "does not allow app 'echo'" in caught.value.reason


def test_revoked_and_unknown_tokens_are_refused(user) -> None:
    token = issue_token(user, ["stylize"], 60)
    IssuedToken.objects.update(revoked_at=timezone.now())
    with pytest.raises(TokenRefused, match="revoked"):
        check_token(token, "stylize")
    with pytest.raises(TokenRefused, match="not issued by this server"):
        check_token(forge(jti="never-issued"), "stylize")


def test_inactive_user_token_is_refused(user) -> None:
    token = issue_token(user, ["stylize"], 60)
    user.is_active = False
    user.save()
    with pytest.raises(TokenRefused, match="inactive"):
        check_token(token, "stylize")


def test_a_token_naming_another_user_than_its_record_is_refused(user) -> None:
    token = issue_token(user, ["stylize"], 60)
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    other = get_user_model().objects.create_user("mallory", password="pw-mallory-123")
    with pytest.raises(TokenRefused, match="sub claim does not match"):
        check_token(forge(jti=jti, sub=str(other.pk)), "stylize")
