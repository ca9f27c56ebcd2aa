"""Hostile handshake headers: session cookies from foreign origins, huge or malformed headers, bad
``Authorization`` forms, unknown, revoked and misused credentials. Each gets a named refusal; the
victim's session never notices. The four assertions are described in ``harness``."""

from __future__ import annotations

import asyncio
import base64
import json
import socket

import pytest

from tests.adversarial.attacks import ECHO, Attack, connected, raw_session, refused, until_result
from tests.adversarial.harness import Case, Expect, Harness, Outcome
from tests.adversarial.inputs import good_frame

FOREIGN = Expect(error="FORBIDDEN", reason="origin", close=4403)
UNAUTHORIZED = Expect(error="UNAUTHORIZED", reason=r"key|authorization|credential", close=4401)
TOO_BIG = Expect(status=(400, 431))


def with_session(origin: str | None, *, extra: list[tuple[str, str]] | None = None) -> Attack:
    """The attacker's logged-in session cookie, from ``origin`` ("{site}" is this site's own)."""

    async def attack(h: Harness) -> Outcome:
        headers = [("Cookie", h.session_cookie())]
        if origin is not None:
            headers.append(("Origin", origin.format(site=h.stack.http, port=h.stack.port)))
        return await refused(user=None, headers=headers + (extra or []))(h)

    return attack


def answered(*, user: str = "attacker", headers: list[tuple[str, str]] | None = None) -> Attack:
    """Admitted: one good frame gets its result."""

    async def attack(h: Harness) -> Outcome:
        outcome = Outcome(frames=1)
        async with connected(h, user=user, headers=headers) as ws:
            await ws.send(good_frame("hello"))
            outcome.lived = await until_result(ws, outcome, "hello")
            outcome.results += outcome.lived
        return outcome

    return attack


def authorization(*values: str) -> Attack:
    """One ``Authorization`` header per value ("KEY": the attacker's good key)."""

    async def attack(h: Harness) -> Outcome:
        good = h.headers()["Authorization"]
        headers = [
            ("Authorization", good if v == "KEY" else v.replace("KEY_ID", good[4:].split(":")[0])) for v in values
        ]
        return await refused(user=None, headers=headers)(h)

    return attack


def key_of(setup: str) -> Attack:
    """A key made by ``setup`` (shell statements that set ``result`` to the key string)."""

    async def attack(h: Harness) -> Outcome:
        key = await asyncio.to_thread(h.shell, setup)
        return await refused(user=None, headers={"Authorization": f"Key {key}"})(h)

    return attack


def token_of(setup: str) -> Attack:
    """A realtime token made by ``setup`` (shell statements that set ``result`` to the token)."""

    async def attack(h: Harness) -> Outcome:
        token = await asyncio.to_thread(h.shell, setup.replace("ATTACKER", str(h.pks["attacker"])))
        return await refused(f"{ECHO}?fal_jwt_token={token}", user=None)(h)

    return attack


def forged(claims: str, *, key: str = "signing_key()", algorithm: str = "HS256", record: bool = True) -> str:
    """Shell statements forging a token with ``claims`` (a dict expression; NOW is the time)."""
    save = (
        "IssuedToken.objects.create(jti=c['jti'], user_id=ATTACKER, apps=c['apps'], source='session', "
        "issued_at=timezone.now(), expires_at=timezone.now())\n"
        if record
        else ""
    )
    return (
        "import jwt, secrets, time\nfrom realtime_site.accounts.tokens import signing_key\n"
        "NOW = int(time.time())\n"
        f"c = {{'sub': str(ATTACKER), 'apps': ['echo'], 'iat': NOW, 'nbf': NOW, 'exp': NOW + 60, "
        f"'jti': secrets.token_hex(16), 'iss': 'realtime-site', **{claims}}}\n"
        f"{save}result = jwt.encode(c, {key}, algorithm={algorithm!r})"
    )


def none_algorithm_token() -> Attack:
    async def attack(h: Harness) -> Outcome:
        def part(data: dict) -> str:
            return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

        claims = {"sub": str(h.pks["attacker"]), "apps": ["echo"], "iat": 0, "nbf": 0, "exp": 2**31, "jti": "x" * 32}
        token = f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({**claims, 'iss': 'realtime-site'})}."
        return await refused(f"{ECHO}?fal_jwt_token={token}", user=None)(h)

    return attack


def raw_handshake(lines: list[str]) -> Attack:
    """A hand-written upgrade request ("{host}" is this server); the outcome is the HTTP status."""

    async def attack(h: Harness) -> Outcome:
        return await asyncio.to_thread(_raw_handshake, h, lines)

    return attack


def _raw_handshake(h: Harness, lines: list[str]) -> Outcome:
    request = "\r\n".join(line.format(host=f"127.0.0.1:{h.stack.port}", key=h.keys["attacker"]) for line in lines)
    with socket.create_connection(("127.0.0.1", h.stack.port), timeout=15) as sock:
        sock.sendall(request.encode("latin-1") + b"\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    outcome = Outcome(body=answer.decode("latin-1")[:500])
    try:
        outcome.status = int(answer.split(b" ", 2)[1])
    except (IndexError, ValueError):
        outcome.problems.append(f"no HTTP answer to the handshake: {answer[:100]!r}")
    return outcome


def forwarded_for_ignored() -> Attack:
    """A client claiming another address: its record keeps the address it really came from."""

    async def attack(h: Harness) -> Outcome:
        outcome = await answered(headers=[("X-Forwarded-For", "203.0.113.9"), ("X-Real-IP", "203.0.113.9")])(h)
        pk = h.pks["attacker"]
        address = await asyncio.to_thread(
            h.shell, f"ConnectionRecord.objects.filter(user_id={pk}).order_by('-started_at')[0].client_address"
        )
        if address != "127.0.0.1":
            outcome.problems.append(f"the record trusts the client's X-Forwarded-For: {address!r}")
        return outcome

    return attack


HANDSHAKE = [
    "GET /local/echo/realtime HTTP/1.1",
    "Host: {host}",
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Authorization: Key {key}",
]
WS_KEY = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="

CASES = [
    Case("session-from-another-site", with_session("http://evil.example"), FOREIGN),
    Case("session-from-another-port-of-this-host", with_session("http://127.0.0.1:1"), FOREIGN),
    Case("session-from-https-of-this-host", with_session("https://127.0.0.1:{port}"), FOREIGN),
    Case("session-from-localhost-alias", with_session("http://localhost:{port}"), FOREIGN),
    Case("session-from-null-origin", with_session("null"), FOREIGN),
    Case("session-without-origin", with_session(None), FOREIGN),
    Case("session-from-origin-with-userinfo", with_session("http://127.0.0.1:{port}@evil.example"), FOREIGN),
    # A malformed or repeated Origin is refused by the WebSocket layer itself, before the app: HTTP 400.
    Case("session-from-origin-with-suffix", with_session("http://127.0.0.1:{port}.evil.example"), Expect(status=400)),
    Case("session-from-origin-with-path", with_session("{site}/../evil"), FOREIGN),
    Case(
        "session-with-a-good-and-a-foreign-origin",
        with_session("{site}", extra=[("Origin", "http://evil.example")]),
        Expect(status=400),
    ),
    Case(
        "session-from-this-site-is-admitted",
        lambda h: answered(user=None, headers=[("Cookie", h.session_cookie()), ("Origin", h.stack.http)])(h),
        Expect(result=True, admitted=1),
    ),
    Case("header-of-70-kb", refused(headers={"X-Padding": "a" * 70_000}), TOO_BIG),
    Case("two-thousand-headers", refused(headers={f"X-H{i}": "v" for i in range(2000)}), TOO_BIG),
    Case("cookie-of-30-kb", refused(headers={"Cookie": "c=" + "a" * 30_000}), TOO_BIG),
    Case("authorization-basic", authorization("Basic dXNlcjpwYXNz"), UNAUTHORIZED),
    Case("authorization-bearer", authorization("Bearer abc.def.ghi"), UNAUTHORIZED),
    Case("authorization-key-without-secret", authorization("Key KEY_ID"), UNAUTHORIZED),
    Case("authorization-key-with-two-colons", authorization("Key KEY_ID:a:b"), UNAUTHORIZED),
    Case("authorization-key-with-a-10-kb-secret", authorization("Key KEY_ID:" + "s" * 10_000), UNAUTHORIZED),
    Case("authorization-empty", authorization(""), UNAUTHORIZED),
    Case("authorization-unknown-key-id", authorization("Key 0123456789abcdef:secret"), UNAUTHORIZED),
    Case("authorization-right-id-wrong-secret", authorization("Key KEY_ID:wrong-secret"), UNAUTHORIZED),
    Case("authorization-garbage-then-good-key", authorization("Key nope:nope", "KEY"), UNAUTHORIZED),
    Case("authorization-good-key-then-garbage", authorization("KEY", "Key nope:nope"), UNAUTHORIZED),
    Case(
        "revoked-key",
        key_of(
            "k, secret = create_api_key(User.objects.get(username='attacker'))\n"
            "k.revoked_at = timezone.now(); k.save(); result = secret"
        ),
        Expect(error="UNAUTHORIZED", reason="revoked", close=4401),
    ),
    Case(
        "key-of-an-inactive-user",
        key_of("u = User.objects.create_user('sleeper', is_active=False); result = create_api_key(u)[1]"),
        Expect(error="UNAUTHORIZED", reason="inactive", close=4401),
    ),
    Case(
        "key-of-a-user-allowed-only-another-app",
        key_of(
            "u = User.objects.create_user('fenced'); UserLimits.objects.create(user=u, allowed_apps=['slow'])\n"
            "result = create_api_key(u)[1]"
        ),
        Expect(error="FORBIDDEN", reason="not allowed", close=4403),
    ),
    Case(
        "token-for-another-app",
        token_of(forged("{'apps': ['slow']}")),
        Expect(error="FORBIDDEN", reason="token", close=4403),
    ),
    Case(
        "token-expired",
        token_of(forged("{'exp': NOW - 3600}")),
        Expect(error="UNAUTHORIZED", reason="expired", close=4401),
    ),
    Case(
        "token-not-yet-valid",
        token_of(forged("{'nbf': NOW + 3600}")),
        Expect(error="UNAUTHORIZED", reason="valid", close=4401),
    ),
    Case(
        "token-with-another-signature",
        token_of(forged("{}", key="'a guessed signing key of some length'")),
        Expect(error="UNAUTHORIZED", reason="signature", close=4401),
    ),
    Case(
        "token-never-issued",
        token_of(forged("{}", record=False)),
        Expect(error="UNAUTHORIZED", reason="issued", close=4401),
    ),
    Case(
        "token-of-another-issuer",
        token_of(forged("{'iss': 'fal'}")),
        Expect(error="UNAUTHORIZED", reason="token", close=4401),
    ),
    Case("token-with-algorithm-none", none_algorithm_token(), Expect(error="UNAUTHORIZED", reason="token", close=4401)),
    Case(
        "token-revoked",
        token_of(forged("{}") + "\nt = IssuedToken.objects.get(jti=c['jti']); t.revoked_at = timezone.now(); t.save()"),
        Expect(error="UNAUTHORIZED", reason="revoked", close=4401),
    ),
    Case("x-forwarded-for-is-not-trusted", forwarded_for_ignored(), Expect(result=True, admitted=1)),
    Case(
        "user-agent-of-10-kb",
        answered(headers=[("User-Agent", "u" * 10_000)]),
        Expect(result=True, admitted=1),
    ),
    Case(
        "handshake-websocket-version-99",
        raw_handshake([*HANDSHAKE, WS_KEY, "Sec-WebSocket-Version: 99"]),
        Expect(status=(400, 426)),
    ),
    Case("handshake-without-key", raw_handshake([*HANDSHAKE, "Sec-WebSocket-Version: 13"]), Expect(status=400)),
    Case(
        "handshake-with-a-nul-in-the-path",
        raw_handshake(["GET /local/echo/real\x00time HTTP/1.1", *HANDSHAKE[1:], WS_KEY, "Sec-WebSocket-Version: 13"]),
        Expect(status=400),
    ),
    Case("user-agent-with-a-nul-byte", raw_session(["User-Agent: evil\x00agent"]), Expect(status=400)),
    Case("user-agent-with-control-bytes", raw_session(["User-Agent: \x01\x1b[2J\x7f"]), Expect(status=400)),
    Case(
        "user-agent-of-latin-1-bytes",
        raw_session(["User-Agent: caf\xe9 \xff\xfe"], [good_frame("raw")]),
        Expect(result=True, admitted=1),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_hostile_header_is_refused_by_name(harness: Harness, case: Case) -> None:
    await harness.check(case)
