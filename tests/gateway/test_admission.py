"""Who gets in: every refused case over the consumer (WebsocketCommunicator), and the admitted ones."""

from __future__ import annotations

import time

import jwt
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from realtime_site.accounts.models import ApiKey, IssuedToken, UserLimits
from realtime_site.accounts.tokens import ISSUER, issue_token, signing_key
from tests.gateway.conftest import communicator, frame, receive

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("pool")]
ECHO = "/local/echo/realtime"


async def expect_refusal(path: str, headers=None, *, client: str = "127.0.0.1") -> tuple[dict, int]:
    comm = communicator(path, headers, client=client)
    connected, _ = await comm.connect(timeout=20)
    assert connected  # refusals are accepted, told, then closed
    error = await receive(comm)
    closed = await receive(comm)
    await comm.send_input({"type": "websocket.disconnect", "code": closed["closed"]})
    await comm.wait(5)
    assert error["type"] == "x-fal-error"
    return error, closed["closed"]


def forged(**claims) -> str:
    now = int(time.time())
    base = {"sub": "1", "apps": ["echo"], "iat": now, "nbf": now, "exp": now + 60, "jti": "nope", "iss": ISSUER}
    return jwt.encode({**base, **claims}, signing_key(), algorithm="HS256")


async def token_for(user, apps=("echo",), lifetime=60) -> str:
    return await sync_to_async(issue_token)(user, list(apps), lifetime)


async def session_cookie(user) -> bytes:
    client = Client()
    await sync_to_async(client.force_login)(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def test_no_credentials(user) -> None:
    error, code = await expect_refusal(ECHO)
    assert (error["error"], code) == ("UNAUTHORIZED", 4401) and "no credentials" in error["reason"]


@pytest.mark.parametrize(
    ("make_token", "reason"),
    [
        (lambda: forged(exp=int(time.time()) - 100), "token expired"),
        (lambda: forged(nbf=int(time.time()) + 100, iat=int(time.time()) + 100), "not yet valid"),
        (
            lambda: jwt.encode({"sub": "1"}, "a different signing key, long enough to be fine", algorithm="HS256"),
            "signature is invalid",
        ),
        (lambda: jwt.encode({"sub": "1", "apps": ["echo"]}, None, algorithm="none"), "algorithm is not allowed"),
        (lambda: forged(), "not issued by this server"),
        (lambda: "garbage", "invalid"),
    ],
    ids=["expired", "not-yet-valid", "bad-signature", "alg-none", "not-issued", "garbage"],
)
async def test_bad_tokens(user, make_token, reason: str) -> None:
    error, code = await expect_refusal(f"{ECHO}?fal_jwt_token={make_token()}")
    assert (error["error"], code) == ("UNAUTHORIZED", 4401) and reason in error["reason"]


async def test_token_for_another_app_is_forbidden(user) -> None:
    token = await token_for(user, ["stylize"])
    error, code = await expect_refusal(f"{ECHO}?fal_jwt_token={token}")
    assert (error["error"], code) == ("FORBIDDEN", 4403) and "does not allow app 'echo'" in error["reason"]


async def test_revoked_token(user) -> None:
    token = await token_for(user)
    await IssuedToken.objects.aupdate(revoked_at=timezone.now())
    error, code = await expect_refusal(f"{ECHO}?fal_jwt_token={token}")
    assert (error["error"], code) == ("UNAUTHORIZED", 4401) and "revoked" in error["reason"]


async def test_revoked_key(user, api_key: str) -> None:
    await ApiKey.objects.aupdate(revoked_at=timezone.now())
    error, code = await expect_refusal(ECHO, [(b"authorization", f"Key {api_key}".encode())])
    assert (error["error"], code) == ("UNAUTHORIZED", 4401) and "revoked" in error["reason"]


@pytest.mark.parametrize("header", [b"Key", b"Bearer x", b"Key a:b:c", b"Key \xff"])
async def test_malformed_authorization_header(user, header: bytes) -> None:
    error, code = await expect_refusal(ECHO, [(b"authorization", header)])
    assert (error["error"], code) == ("UNAUTHORIZED", 4401) and "malformed" in error["reason"]


async def test_session_from_a_foreign_origin_is_refused(user) -> None:
    cookie = await session_cookie(user)
    for origin in (b"https://evil.example", b"null"):
        error, code = await expect_refusal(ECHO, [(b"cookie", cookie), (b"origin", origin)])
        assert (error["error"], code) == ("FORBIDDEN", 4403) and "this site's pages" in error["reason"]
    error, code = await expect_refusal(ECHO, [(b"cookie", cookie)])  # no Origin at all
    assert code == 4403


async def test_unknown_and_unavailable_apps(user, api_key: str) -> None:
    headers = [(b"authorization", f"Key {api_key}".encode())]
    error, code = await expect_refusal("/nobody/nothing/realtime", headers)
    assert (error["error"], code) == ("APP_UNAVAILABLE", 4404)
    error, code = await expect_refusal("/test/broken/realtime", headers)
    assert (error["error"], code) == ("APP_UNAVAILABLE", 4503) and "model file missing" in error["reason"]
    error, code = await expect_refusal(f"{ECHO}?max_buffering=99", headers)
    assert (error["error"], code) == ("VALIDATION_ERROR", 4400)


async def test_app_not_allowed_for_the_user(user, api_key: str) -> None:
    await UserLimits.objects.acreate(user=user, allowed_apps=["stylize"])
    error, code = await expect_refusal(ECHO, [(b"authorization", f"Key {api_key}".encode())])
    assert (error["error"], code) == ("FORBIDDEN", 4403)


async def test_too_many_connections(user, api_key: str) -> None:
    await UserLimits.objects.acreate(user=user, max_connections=1)
    headers = [(b"authorization", f"Key {api_key}".encode())]
    first = communicator(ECHO, headers)
    assert (await first.connect(timeout=20))[0]
    error, code = await expect_refusal(ECHO, headers)
    assert (error["error"], code) == ("RATE_LIMITED", 4429) and "at most 1 concurrent" in error["reason"]
    await first.disconnect()


async def admitted_round_trip(path: str, headers=None, *, client: str = "127.0.0.1") -> dict:
    comm = communicator(path, headers, client=client)
    assert (await comm.connect(timeout=20))[0]
    await comm.send_to(bytes_data=frame(request_id="r1"))
    result = await receive(comm)
    await comm.disconnect()
    return result


async def test_admitted_by_token_key_and_session(user, api_key: str) -> None:
    token = await token_for(user)
    assert (await admitted_round_trip(f"{ECHO}?fal_jwt_token={token}"))["request_id"] == "r1"
    assert (await admitted_round_trip(ECHO, [(b"authorization", f"Key {api_key}".encode())]))["request_id"] == "r1"
    cookie = await session_cookie(user)
    page = [(b"cookie", cookie), (b"host", b"localhost:8000"), (b"origin", b"http://localhost:8000")]
    result = await admitted_round_trip(ECHO, page)
    assert result["images"][0]["width"] == 64


@pytest.mark.parametrize(
    "origin",
    [
        b"http://localhost:8001",  # another port of an allowed host
        b"https://localhost:8000",  # another scheme
        b"http://localhost",  # the default port is another port
        b"http://evil.localhost:8000",
        b"http://localhost:8000.evil.example",
        b"http://user@localhost:8000",
        b"http://localhost:8000/path",
        b"ftp://localhost:8000",
        b"http://[::1",
    ],
)
async def test_session_origin_must_match_scheme_host_and_port(user, origin: bytes) -> None:
    cookie = await session_cookie(user)
    error, code = await expect_refusal(ECHO, [(b"cookie", cookie), (b"host", b"localhost:8000"), (b"origin", origin)])
    assert (error["error"], code) == ("FORBIDDEN", 4403) and "origin" in error["reason"]


async def test_session_origin_behind_a_tls_proxy_is_https(user, settings) -> None:
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    cookie = await session_cookie(user)
    base = [(b"cookie", cookie), (b"host", b"localhost"), (b"x-forwarded-proto", b"https")]
    assert (await admitted_round_trip(ECHO, [*base, (b"origin", b"https://localhost")]))["images"]
    _, code = await expect_refusal(ECHO, [*base, (b"origin", b"http://localhost")])
    assert code == 4403


async def test_session_origin_from_the_configured_list_only(user, settings) -> None:
    settings.REALTIME_ALLOWED_ORIGINS = ["https://draw.example.org"]
    cookie = await session_cookie(user)
    base = [(b"cookie", cookie), (b"host", b"localhost:8000")]
    assert (await admitted_round_trip(ECHO, [*base, (b"origin", b"https://DRAW.example.org:443")]))["images"]
    for origin in (b"http://localhost:8000", b"https://draw.example.org:8443", b"http://draw.example.org"):
        _, code = await expect_refusal(ECHO, [*base, (b"origin", origin)])
        assert code == 4403


async def test_inactive_users_key_is_refused(user, api_key: str) -> None:
    await get_user_model().objects.filter(pk=user.pk).aupdate(is_active=False)
    error, code = await expect_refusal(ECHO, [(b"authorization", f"Key {api_key}".encode())])
    assert code == 4401 and "inactive" in error["reason"]


async def test_failed_credentials_from_one_address_are_throttled(user, api_key: str, settings) -> None:
    settings.REALTIME_CREDENTIAL_FAILURES = 3
    key_id = api_key.split(":")[0]
    guesses = [
        [(b"authorization", f"Key {key_id}:wrong-secret".encode())],
        [(b"authorization", b"Key nobody:nothing")],
    ]
    for headers in [*guesses, guesses[0]]:
        error, code = await expect_refusal(ECHO, headers, client="203.0.113.9")
        assert code == 4401
    for path in (ECHO, f"{ECHO}?fal_jwt_token={forged()}"):  # now even a good key, and any token, wait
        headers = [(b"authorization", f"Key {api_key}".encode())] if path == ECHO else []
        error, code = await expect_refusal(path, headers, client="203.0.113.9")
        assert (error["error"], code) == ("RATE_LIMITED", 4429) and "try again in" in error["reason"]
    # Another address is not affected.
    good = [(b"authorization", f"Key {api_key}".encode())]
    assert (await admitted_round_trip(ECHO, good, client="198.51.100.7"))["request_id"] == "r1"


async def test_a_connect_storm_from_one_address_is_refused_before_admission(user, api_key: str, settings) -> None:
    from realtime_site.gateway.connect_rate import reset_connect_rate

    settings.REALTIME_CONNECTS_PER_SECOND, settings.REALTIME_CONNECT_BURST = 0.01, 3
    reset_connect_rate()
    for _ in range(3):  # the burst: these reach admission (and are refused there: a bad key)
        _, code = await expect_refusal(ECHO, [(b"authorization", b"Key nobody:nothing")], client="192.0.2.1")
        assert code == 4401
    good = [(b"authorization", f"Key {api_key}".encode())]
    error, code = await expect_refusal(ECHO, good, client="192.0.2.1")
    assert (error["error"], code) == ("RATE_LIMITED", 4429) and "new connections from your address" in error["reason"]
    assert (await admitted_round_trip(ECHO, good, client="192.0.2.2"))["request_id"] == "r1"


async def test_a_revocation_during_admission_is_caught_after_the_group_join(user, api_key: str) -> None:
    """A revocation committed between admission's check and the staff-group join sends its close
    to groups the connection is not in yet: the second look (``revoked_since``) catches it."""
    from realtime_site.gateway.admission import admit, revoked_since

    token = await token_for(user)
    scopes = {
        "key": {"path": ECHO, "query_string": b"", "headers": [(b"authorization", f"Key {api_key}".encode())]},
        "token": {"path": ECHO, "query_string": f"fal_jwt_token={token}".encode(), "headers": []},
    }
    admitted = {name: await sync_to_async(admit)(scope, None) for name, scope in scopes.items()}
    assert [await sync_to_async(revoked_since)(a) for a in admitted.values()] == [None, None]
    # Bulk updates send no signal, as a revocation racing the join would not reach this connection.
    await ApiKey.objects.filter(key_id=api_key.split(":")[0]).aupdate(revoked_at=timezone.now())
    assert await sync_to_async(revoked_since)(admitted["key"]) == "this API key was revoked"
    await IssuedToken.objects.all().aupdate(revoked_at=timezone.now())
    assert await sync_to_async(revoked_since)(admitted["token"]) == "this token was revoked"
    await get_user_model().objects.filter(pk=user.pk).aupdate(is_active=False)
    assert "deactivated" in await sync_to_async(revoked_since)(admitted["key"])
