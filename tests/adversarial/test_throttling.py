"""Guessing credentials: login brute force (per username and address) and API key brute force (per
address, over HTTP and WebSocket) are throttled by name, while another user's session, open from
the same address, keeps its results. Its own stack with small limits; the key cases come last, as
they block this address for a minute. The four assertions are described in ``harness``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from tests.adversarial.attacks import Attack, refused, response_outcome
from tests.adversarial.harness import Case, Expect, Harness, Outcome, live_harness, login

LOGIN_FAILURES = 5
KEY_FAILURES = 10
BRUTE_PASSWORD = "pw-brute-adversarial-1"
NEIGHBOUR_PASSWORD = "pw-neighbour-adversarial-1"
LOCKED = r"locked|too many|attempts|try again"


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    env = {"REALTIME_LOGIN_FAILURES": str(LOGIN_FAILURES), "REALTIME_CREDENTIAL_FAILURES": str(KEY_FAILURES)}
    with live_harness(tmp_path_factory.mktemp("throttling"), env) as live:
        live.add_user("brute", password=BRUTE_PASSWORD, key=False)
        live.add_user("neighbour", password=NEIGHBOUR_PASSWORD, key=False)
        yield live


def login_brute_force() -> Attack:
    """Wrong passwords for one user until refused; then even the right one is refused for now."""

    def guess(h: Harness) -> Outcome:
        with httpx.Client(base_url=h.stack.http, timeout=60) as client:
            answers = [login(client, "brute", f"guess-{n}") for n in range(LOGIN_FAILURES + 2)]
            right = login(client, "brute", BRUTE_PASSWORD)
        outcome = response_outcome(answers[-1])
        if right.status_code == 302:
            outcome.problems.append("the right password logged in during the lockout")
        if any(a.status_code == 302 for a in answers):
            outcome.problems.append("a wrong password logged in")
        return outcome

    async def attack(h: Harness) -> Outcome:
        return await asyncio.to_thread(guess, h)

    return attack


def neighbour_logs_in() -> Attack:
    """Another user, from the address that was just locked out for ``brute``, logs in."""

    async def attack(h: Harness) -> Outcome:
        def post() -> Outcome:
            with httpx.Client(base_url=h.stack.http, timeout=60) as client:
                return response_outcome(login(client, "neighbour", NEIGHBOUR_PASSWORD))

        return await asyncio.to_thread(post)

    return attack


def key_brute_force_http(tries: int = KEY_FAILURES + 5) -> Attack:
    """Guessed keys on POST /tokens/ until refused before the key is even checked (429, Retry-After);
    then the attacker's good key from this address is refused too."""

    def guess(h: Harness) -> Outcome:
        url = f"{h.stack.http}/tokens/"
        body = {"allowed_apps": ["echo"]}
        answers = [
            httpx.post(url, json=body, headers={"Authorization": f"Key 0123456789abcdef:guess{n}"}, timeout=30)
            for n in range(tries)
        ]
        good = httpx.post(url, json=body, headers=h.headers(), timeout=30)
        outcome = response_outcome(answers[-1])
        if "retry-after" not in answers[-1].headers:
            outcome.problems.append("the 429 has no Retry-After header")
        if good.status_code != 429:
            outcome.problems.append(f"a good key from the blocked address got {good.status_code}, not 429")
        return outcome

    async def attack(h: Harness) -> Outcome:
        return await asyncio.to_thread(guess, h)

    return attack


def key_brute_force_websocket(tries: int = KEY_FAILURES + 5) -> Attack:
    """Guessed keys at WebSocket connect until the address is refused as RATE_LIMITED."""

    async def attack(h: Harness) -> Outcome:
        outcome = Outcome()
        for n in range(tries):
            outcome = await refused(user=None, headers={"Authorization": f"Key 0123456789abcdef:ws{n}"})(h)
        return outcome

    return attack


CASES = [
    Case("login-brute-force-is-locked-out", login_brute_force(), Expect(status=(429, 403), detail=LOCKED, json=False)),
    Case("another-user-logs-in-from-the-locked-address", neighbour_logs_in(), Expect(status=302)),
    Case(
        "key-brute-force-over-websocket-is-throttled",
        key_brute_force_websocket(),
        Expect(error="RATE_LIMITED", reason=r"fail|attempt|too many", close=4429),
    ),
    Case(
        "key-brute-force-on-tokens-is-throttled",
        key_brute_force_http(),
        Expect(status=429, detail=r"fail|attempt|too many"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_guessing_credentials_is_throttled(harness: Harness, case: Case) -> None:
    await harness.check(case)
