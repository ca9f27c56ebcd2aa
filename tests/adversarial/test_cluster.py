"""Revocation races, admin actions under load, and PostgreSQL and Redis faults, on a stack that runs
on PostgreSQL and Redis (each behind a TCP proxy the cases cut and restore; the tests' own shell
reaches both directly, as an administrator's process would). Whoever is revoked, deactivated,
deleted or disconnected is closed by name, their records are still written, and the victim never
notices. The four assertions are described in ``harness``."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import subprocess
import uuid
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.adversarial.attacks import (
    ECHO,
    Attack,
    connected,
    raw_session,
    read_until_closed,
    refused,
    response_outcome,
    until_result,
)
from tests.adversarial.harness import Case, Expect, Harness, Outcome, live_harness
from tests.adversarial.inputs import good_frame
from tests.faults.proxy import TcpProxy
from tests.runner.wsclient import open_ws

REDIS_DB = 12
REVOKED = Expect(error="UNAUTHORIZED", reason="revoked", close=4401, admitted=2)
GONE = r"deleted|revoked|deactivated|inactive|closed"


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    name = f"realtime_adversarial_{uuid.uuid4().hex[:8]}"
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-c"]
    subprocess.run([*psql, f"create database {name}"], check=True, capture_output=True)
    pg, redis = TcpProxy(5432), TcpProxy(6379)
    env = {
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{pg.port}/{name}",
        "REDIS_URL": f"redis://127.0.0.1:{redis.port}/{REDIS_DB}",
    }
    direct = {
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{name}",
        "REDIS_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
    }
    try:
        with live_harness(tmp_path_factory.mktemp("cluster"), env, observer_env=direct) as live:
            live.extras.update(pg=pg, redis=redis)
            yield live
    finally:
        pg.close()
        redis.close()
        subprocess.run([*psql, f"drop database if exists {name} with (force)"], capture_output=True)


def jti_of(token: str) -> str:
    claims = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["jti"]


async def round_trip(ws, request_id: str, outcome: Outcome) -> None:
    await ws.send(good_frame(request_id))
    if not await until_result(ws, outcome, request_id):
        outcome.problems.append(f"no result for {request_id} before the action")


def kicked(user: str, action: str, *, by_key: bool = True, by_token: bool = True, admin: bool = False) -> Attack:
    """``user`` (made here) holds a connection with its key and one with a token its key minted;
    ``action`` runs in the shell ({pk}, {key_pk}, {jti} filled in), or is an admin action
    ("changelist action" through the staff's session); every connection must be closed by name.
    A revoked token must then be refused at connect, too."""

    async def attack(h: Harness) -> Outcome:
        await asyncio.to_thread(h.add_user, user)
        token = await asyncio.to_thread(h.token, user)
        key_pk = await asyncio.to_thread(h.shell, f"ApiKey.objects.get(user_id={h.pks[user]}).pk")
        fill = {"pk": h.pks[user], "key_pk": key_pk, "jti": jti_of(token)}
        outcome, seen = Outcome(), []
        sockets = []
        if by_key:
            sockets.append(await open_ws(h.url(), additional_headers=h.headers(user)))
        if by_token:
            sockets.append(await open_ws(h.url(f"{ECHO}?fal_jwt_token={token}")))
        try:
            for n, ws in enumerate(sockets):
                await round_trip(ws, f"before-{n}", outcome)
            if admin:
                changelist, name = action.split()
                await asyncio.to_thread(
                    staff_action, h, changelist, name, str(fill["key_pk" if "apikey" in changelist else "pk"])
                )
            else:
                await asyncio.to_thread(h.shell, action.format(**fill))
            for ws in sockets:
                each = Outcome()
                await read_until_closed(ws, each)
                seen.append(each)
        finally:
            for ws in sockets:
                await ws.close()
        outcome.errors = [e for each in seen for e in each.errors[:1]]
        outcome.problems += [p for each in seen for p in each.problems]
        closes = {each.close for each in seen}
        outcome.close = closes.pop() if len(closes) == 1 else None
        if len(outcome.errors) != len(sockets):
            outcome.problems.append(f"{len(outcome.errors)} of {len(sockets)} connections were told why")
        if by_token:
            again = await refused(f"{ECHO}?fal_jwt_token={token}", user=None)(h)
            if again.close != 4401:
                outcome.problems.append(f"the token then connects again: {again.errors[:1]}, close {again.close}")
        return outcome

    return attack


def staff_action(h: Harness, changelist: str, action: str, pk: str) -> Outcome:
    page = h.staff.get(changelist)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    form = {"action": action, "_selected_action": [pk], "csrfmiddlewaretoken": csrf[1] if csrf else ""}
    outcome = response_outcome(h.staff.post(changelist, data=form))
    if outcome.status != 302:
        outcome.problems.append(f"the admin action answered {outcome.status}")
    return outcome


def disconnect_under_load(user: str = "loud", count: int = 8) -> Attack:
    """``count`` connections of one user sending as fast as they are answered; a staff member
    disconnects the user from the admin: all are closed by name."""

    async def attack(h: Harness) -> Outcome:
        await asyncio.to_thread(h.add_user, user)
        stop = asyncio.Event()
        outcome = Outcome()

        async def stream(n: int) -> Outcome:
            each = Outcome()
            async with connected(h, user=user) as ws:
                sent = 0
                try:
                    while not stop.is_set():
                        await round_trip(ws, f"{n}-{sent}", each)
                        sent += 1
                except Exception:
                    pass
                await read_until_closed(ws, each)
            return each

        tasks = [asyncio.create_task(stream(n)) for n in range(count)]
        await asyncio.sleep(1)
        action = await asyncio.to_thread(staff_action, h, "/admin/usage/userusage/", "disconnect", str(h.pks[user]))
        outcome.problems += action.problems
        seen = await asyncio.gather(*tasks)
        stop.set()
        outcome.errors = [e for each in seen for e in each.errors if e.get("error") != "RATE_LIMITED"][:count]
        closes = {each.close for each in seen}
        outcome.close = closes.pop() if len(closes) == 1 else None
        if len(outcome.errors) != count:
            outcome.problems.append(f"{len(outcome.errors)} of {count} connections were told why")
        return outcome

    return attack


def revoke_while_connecting(user: str = "racer", rounds: int = 5) -> Attack:
    """Connect with a key while it is being revoked: whatever wins the race, no connection stays open."""

    async def attack(h: Harness) -> Outcome:
        outcome = Outcome()
        await asyncio.to_thread(h.add_user, user, key=False)
        for n in range(rounds):
            secret = await asyncio.to_thread(h.shell, f"create_api_key(User.objects.get(pk={h.pks[user]}))[1]")
            key_id = secret.split(":")[0]
            revoke = f"k = ApiKey.objects.get(key_id={key_id!r}); k.revoked_at = timezone.now(); k.save()"
            each = Outcome()

            await asyncio.gather(connect(h, n, secret, each), asyncio.to_thread(h.shell, revoke))
            outcome.problems += each.problems
            outcome.errors += [e for e in each.errors][:1]
            if each.close != 4401:
                outcome.problems.append(f"round {n}: closed {each.close}, not 4401")
        outcome.close = 4401 if not outcome.problems else None
        return outcome

    return attack


async def connect(h: Harness, n: int, secret: str, outcome: Outcome) -> None:
    try:
        async with connected(h, user=None, headers={"Authorization": f"Key {secret}"}) as ws:
            with contextlib.suppress(ConnectionClosed):  # the revocation may close it before the frame leaves
                await ws.send(good_frame(n))
            await read_until_closed(ws, outcome)  # the error and the close code are read either way
    except Exception as exc:
        outcome.problems.append(f"round {n}: {exc!r}"[:200])


def postgres_away_at_connect() -> Attack:
    """PostgreSQL is away while the attacker connects: refused by name; back, it connects again."""

    async def attack(h: Harness) -> Outcome:
        pg: TcpProxy = h.extras["pg"]
        await asyncio.to_thread(pg.cut)
        try:
            outcome = await refused()(h)
        finally:
            await asyncio.to_thread(pg.restore)
        for _ in range(50):  # the gateway's database connections come back with the proxy
            again = Outcome()
            try:
                again = await answered()(h)
            except Exception as exc:
                again.problems.append(repr(exc))
            if again.results:
                return outcome
            await asyncio.sleep(0.2)
        outcome.problems.append(f"after PostgreSQL came back, still refused: {again.errors[:1]} {again.problems[:1]}")
        return outcome

    return attack


def postgres_away_while_closing(count: int = 3) -> Attack:
    """Connections close while PostgreSQL is away: their records are written once it is back."""

    async def attack(h: Harness) -> Outcome:
        pg: TcpProxy = h.extras["pg"]
        outcome = Outcome(frames=2 * count)
        sockets = [await open_ws(h.url(), additional_headers=h.headers()) for _ in range(count)]
        for n, ws in enumerate(sockets):
            await round_trip(ws, f"before-{n}", outcome)
        await asyncio.to_thread(pg.cut)
        try:
            for n, ws in enumerate(sockets):
                await round_trip(ws, f"during-{n}", outcome)
                await ws.close()
            await asyncio.sleep(1)
        finally:
            await asyncio.to_thread(pg.restore)
        return outcome

    return attack


def while_away(service: str, attack_inside: Attack) -> Attack:
    """``attack_inside`` while ``service`` ("pg" or "redis") is cut; restored afterwards."""

    async def attack(h: Harness) -> Outcome:
        proxy: TcpProxy = h.extras[service]
        await asyncio.to_thread(proxy.cut)
        try:
            return await attack_inside(h)
        finally:
            await asyncio.to_thread(proxy.restore)

    return attack


def answered(user: str = "attacker") -> Attack:
    async def attack(h: Harness) -> Outcome:
        outcome = Outcome(frames=1)
        async with connected(h, user=user) as ws:
            await ws.send(good_frame("hello"))
            outcome.results += await until_result(ws, outcome, "hello")
        return outcome

    return attack


def token_request(key: str) -> Attack:
    async def attack(h: Harness) -> Outcome:
        headers = {"Authorization": h.headers()["Authorization"] if key == "KEY" else key}
        response = await asyncio.to_thread(
            httpx.post, f"{h.stack.http}/tokens/", json={"allowed_apps": ["echo"]}, headers=headers, timeout=30
        )
        return response_outcome(response)

    return attack


def revoked_while_redis_away(user: str = "unheard") -> Attack:
    """Redis is away from the gateway when a key is revoked: new connections with it are refused at
    once (the database says so), and its live connection is closed once Redis is back."""

    async def attack(h: Harness) -> Outcome:
        redis: TcpProxy = h.extras["redis"]
        await asyncio.to_thread(h.add_user, user)
        outcome = Outcome()
        async with connected(h, user=user) as ws:
            await round_trip(ws, "before", outcome)
            await asyncio.to_thread(redis.cut)
            try:
                await asyncio.to_thread(
                    h.shell,
                    f"k = ApiKey.objects.get(user_id={h.pks[user]}); k.revoked_at = timezone.now(); k.save()",
                )
                fresh = await refused(user=user)(h)
                if fresh.close != 4401:
                    outcome.problems.append(f"a new connection with the revoked key got {fresh.close}")
            finally:
                await asyncio.to_thread(redis.restore)
            await read_until_closed(ws, outcome, timeout=15)
        return outcome

    return attack


def csv_of_many_records(count: int = 5000) -> Attack:
    """A staff member exports a CSV of ``count`` records while the victim streams."""

    async def attack(h: Harness) -> Outcome:
        make = (
            "now = timezone.now(); u = User.objects.create_user('historic')\n"
            f"ConnectionRecord.objects.bulk_create([ConnectionRecord(user_id=u.pk, app='local/echo', "
            f"auth_method='api_key', started_at=now, ended_at=now, close_code=1000, frames_in=n, "
            f"user_agent='=1+1') for n in range({count})])"
        )
        await asyncio.to_thread(h.shell, make)
        response = await asyncio.to_thread(h.staff.get, "/admin/dashboard/export.csv", timeout=120)
        outcome = response_outcome(response)
        rows = response.text.count("\n") - 1
        if rows < count:
            outcome.problems.append(f"the export holds {rows} rows, not the {count} made")
        return outcome

    return attack


CASES = [
    Case(
        "revoke-key-mid-session",
        kicked("rk1", "k = ApiKey.objects.get(pk={key_pk}); k.revoked_at = timezone.now(); k.save()"),
        REVOKED,
        user="rk1",
    ),
    Case(
        "revoke-key-through-the-admin", kicked("rk2", "/admin/accounts/apikey/ revoke", admin=True), REVOKED, user="rk2"
    ),
    Case(
        "delete-key-mid-session",
        kicked("dk", "ApiKey.objects.get(pk={key_pk}).delete()"),
        Expect(error="UNAUTHORIZED", reason=GONE, close=4401, admitted=2),
        user="dk",
    ),
    Case(
        "revoke-token-mid-session",
        kicked("rt", "t = IssuedToken.objects.get(jti={jti!r}); t.revoked_at = timezone.now(); t.save()", by_key=False),
        Expect(error="UNAUTHORIZED", reason="revoked", close=4401, admitted=1),
        user="rt",
    ),
    Case(
        "delete-token-row-mid-session",
        kicked("dt", "IssuedToken.objects.get(jti={jti!r}).delete()", by_key=False),
        Expect(error="UNAUTHORIZED", reason=GONE, close=4401, admitted=1),
        user="dt",
    ),
    Case(
        "deactivate-user-mid-session",
        kicked("du", "u = User.objects.get(pk={pk}); u.is_active = False; u.save()"),
        Expect(error=("UNAUTHORIZED", "FORBIDDEN"), reason=GONE, close=(4401, 4403), admitted=2),
        user="du",
    ),
    Case(
        "delete-user-mid-session",
        kicked("xu", "User.objects.get(pk={pk}).delete()"),
        Expect(error=("UNAUTHORIZED", "FORBIDDEN"), reason=GONE, close=(4401, 4403), admitted=2),
        user="xu",
    ),
    Case(
        "admin-disconnect-under-load",
        disconnect_under_load(),
        Expect(error="FORBIDDEN", reason="administrator", close=4403, admitted=8),
        user="loud",
    ),
    Case(
        "revoke-while-connecting",
        revoke_while_connecting(),
        Expect(error="UNAUTHORIZED", reason="revoked", close=4401, admitted=range(0, 6)),
        user="racer",
    ),
    Case(
        "postgres-away-at-connect",
        postgres_away_at_connect(),
        Expect(
            error=("INTERNAL_ERROR", "RUNNER_UNAVAILABLE"),
            reason=r"database|try again",
            close=(1011, 4503),
            admitted=range(1, 51),
        ),
    ),
    Case("postgres-away-while-connections-close", postgres_away_while_closing(), Expect(admitted=3)),
    Case(
        "postgres-away-on-the-token-endpoint",
        while_away("pg", token_request("KEY")),
        Expect(status=503, detail=r"database|try again|unavailable"),
    ),
    Case("redis-away-connections-are-admitted", while_away("redis", answered()), Expect(result=True, admitted=1)),
    Case(
        "redis-away-a-bad-key-on-the-token-endpoint",
        while_away("redis", token_request("Key 0123456789abcdef:guess")),
        Expect(status=401, detail="key"),
    ),
    Case(
        "redis-away-during-a-revocation",
        revoked_while_redis_away(),
        Expect(error="UNAUTHORIZED", reason="revoked", close=4401, admitted=1),
        user="unheard",
    ),
    Case(
        "user-agent-of-latin-1-bytes-on-postgres",
        raw_session(["User-Agent: caf\xe9 \xff\xfe"], [good_frame("raw")]),
        Expect(result=True, admitted=1),
    ),
    Case(
        "user-agent-of-1000-chars-on-postgres",
        lambda h: _long_agent(h),
        Expect(result=True, admitted=1),
    ),
    Case("csv-export-of-5000-records", csv_of_many_records(), Expect(status=200)),
]


async def _long_agent(h: Harness) -> Outcome:
    outcome = Outcome(frames=1)
    async with connected(h, headers={"User-Agent": "a" * 1000}) as ws:
        await ws.send(good_frame("long"))
        outcome.results += await until_result(ws, outcome, "long")
    return outcome


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_admin_side_fault_harms_no_one(harness: Harness, case: Case) -> None:
    await harness.check(case)
