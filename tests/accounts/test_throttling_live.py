"""Credential throttling on a real daphne: clients on their own loopback addresses (127.0.0.2 guesses,
127.0.0.3 is a good client of the same server), HTTP POSTs with CSRF tokens as a browser sends them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from tests.accounts.live import csrf_of, new_user, round_trip, with_key
from tests.gateway.stack import GatewayStack, start_stack
from tests.runner.wsclient import open_ws

ATTACKER, GOOD = "127.0.0.2", "127.0.0.3"
LOGIN_FAILURES, KEY_FAILURES = 3, 4
PASSWORD = "pw-right-1234567"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    env = {"REALTIME_LOGIN_FAILURES": str(LOGIN_FAILURES), "REALTIME_CREDENTIAL_FAILURES": str(KEY_FAILURES)}
    stack = start_stack(tmp_path_factory.mktemp("throttling"), [["--apps", "local/echo"]], env)
    yield stack
    stack.close()


def client(stack: GatewayStack, address: str) -> httpx.Client:
    """An HTTP client whose connections come from ``address``."""
    return httpx.Client(base_url=stack.http, timeout=30, transport=httpx.HTTPTransport(local_address=address))


def log_in(http: httpx.Client, username: str, password: str, path: str = "/accounts/login/") -> httpx.Response:
    form = {"username": username, "password": password, "csrfmiddlewaretoken": csrf_of(http.get(path))}
    return http.post(path, data=form)


def test_logins_are_locked_after_repeated_failures_for_one_username_from_one_address(stack: GatewayStack) -> None:
    new_user(stack, "uma", PASSWORD)
    new_user(stack, "vera", PASSWORD)
    with client(stack, ATTACKER) as attacker:
        answers = [log_in(attacker, "uma", f"guess-{n}") for n in range(LOGIN_FAILURES)]
        assert [r.status_code for r in answers] == [200] * (LOGIN_FAILURES - 1) + [429]
        locked = answers[-1]
        assert "Too many failed logins" in locked.text and "try again in 15 minutes" in locked.text
        assert locked.headers["Retry-After"] == "900"
        assert log_in(attacker, "uma", PASSWORD).status_code == 429  # the right password too, now
        assert log_in(attacker, "uma", PASSWORD, "/admin/login/").status_code == 429  # and the admin's login
        other_user = log_in(attacker, "vera", PASSWORD)
        assert other_user.status_code == 302 and other_user.headers["location"] == "/"
    with client(stack, GOOD) as good:
        same_user_elsewhere = log_in(good, "uma", PASSWORD)
        assert same_user_elsewhere.status_code == 302 and same_user_elsewhere.headers["location"] == "/"


async def test_bad_keys_from_one_address_are_refused_while_another_address_keeps_working(stack: GatewayStack) -> None:
    _, key = await asyncio.to_thread(new_user, stack, "wes")
    session = await open_ws(
        f"{stack.ws}/local/echo/realtime", additional_headers=with_key(key), local_addr=(GOOD, 0)
    )  # a good client's live session
    await round_trip(session, "before")
    key_id = key.split(":")[0]
    await asyncio.to_thread(_guess_keys, stack, key_id, key)
    await round_trip(session, "during")
    await asyncio.to_thread(_good_client_gets_a_token, stack, key)
    await round_trip(session, "after")
    await session.close()


def _guess_keys(stack: GatewayStack, key_id: str, key: str) -> None:
    body = {"allowed_apps": ["echo"]}
    with client(stack, ATTACKER) as attacker:
        for n in range(KEY_FAILURES):
            guess = attacker.post("/tokens/", json=body, headers={"Authorization": f"Key {key_id}:guess{n}"})
            assert guess.status_code == 401, guess.text
        refused = attacker.post("/tokens/", json=body, headers={"Authorization": f"Key {key}"})  # even a right key
    assert refused.status_code == 429
    assert f"the limit is {KEY_FAILURES} per 60 seconds" in refused.json()["detail"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60


def _good_client_gets_a_token(stack: GatewayStack, key: str) -> None:
    with client(stack, GOOD) as good:
        response = good.post("/tokens/", json={"allowed_apps": ["echo"]}, headers={"Authorization": f"Key {key}"})
    assert response.status_code == 200 and isinstance(response.json(), str)
