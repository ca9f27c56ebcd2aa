"""Hostile HTTP: deep and huge JSON on the token endpoints, malformed dates on the staff dashboard,
staff without permissions, spreadsheet formulas smuggled into the CSV through the User-Agent, odd
admin requests. Each gets a 4xx naming the problem (never a 500). The four assertions are described
in ``harness``."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import socket
import time

import httpx
import pytest

from tests.adversarial.attacks import Attack, connected, http, response_outcome, staff_http, until_result
from tests.adversarial.harness import Case, Expect, Harness, Outcome, login
from tests.adversarial.inputs import JPEG, data_url, good_frame

KEY = {"Authorization": "KEY"}
BAD_JSON = Expect(status=400, detail=r"json|nest|deep")


def with_cookie(method: str, path: str, **options) -> Attack:
    """A request from the attacker's logged-in session."""

    async def attack(h: Harness) -> Outcome:
        headers = {"Cookie": h.session_cookie(), **options.pop("headers", {})}
        return await http(method, path, headers=headers, **options)(h)

    return attack


APP_INPUT = {"prompt": "x", "image_url": data_url(JPEG)}


def stream_left(times: int) -> Attack:
    """Open a stream of the slow app and leave at its first byte, ``times`` over: each call is
    recorded, its runner session closed (not reused), and nobody else waits for its work."""

    async def attack(h: Harness) -> Outcome:
        def leave() -> int:
            headers = {"Authorization": f"Key {h.keys['attacker']}"}
            url = f"{h.stack.http}/test/slow/stream"
            with httpx.stream("POST", url, json=APP_INPUT, headers=headers, timeout=30) as response:
                next(response.iter_bytes())
                return response.status_code

        statuses = [await asyncio.to_thread(leave) for _ in range(times)]
        outcome = Outcome(status=statuses[-1], frames=times)
        if any(status != 200 for status in statuses):
            outcome.problems.append(f"statuses {sorted(set(statuses))}")
        return outcome

    return attack


def bad_date(path: str, query: str, *, json_: bool) -> Case:
    name = re.sub(r"[^a-z0-9]+", "-", f"{path.rsplit('/', 2)[-2] or path}-{query}".lower()).strip("-")
    return Case(name, staff_http("GET", f"{path}?{query}"), Expect(status=400, detail=r"start|end", json=json_))


def formula_in_user_agent(agent: str) -> Attack:
    """A connection whose User-Agent is a spreadsheet formula; the staff's CSV export must neutralise
    it (a leading apostrophe: OWASP's advice)."""

    async def attack(h: Harness) -> Outcome:
        outcome = Outcome(frames=1)
        async with connected(h, headers={"User-Agent": agent}) as ws:
            await ws.send(good_frame("csv"))
            outcome.results += await until_result(ws, outcome, "csv")
        outcome.status, cell = await asyncio.to_thread(_exported_agent, h, agent)
        if cell is None:
            outcome.problems.append("the connection is not in the CSV export")
        elif cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
            outcome.problems.append(f"the CSV cell {cell[:40]!r} starts a live spreadsheet formula")
        elif cell != "'" + agent:
            outcome.problems.append(f"the CSV cell {cell[:40]!r} is not the agent with a leading apostrophe")
        return outcome

    return attack


def _exported_agent(h: Harness, agent: str) -> tuple[int, str | None]:
    for _ in range(50):
        response = h.staff.get("/admin/dashboard/export.csv")
        if response.status_code != 200:
            return response.status_code, None
        rows = list(csv.reader(io.StringIO(response.text)))
        column = rows[0].index("user_agent") if rows and "user_agent" in rows[0] else -1
        for row in rows[1:]:
            if column >= 0 and row[column].lstrip("'") == agent:
                return 200, row[column]
        time.sleep(0.1)  # the record is written as the connection closes
    return 200, None


def admin_action(changelist: str, action: str, selected: list[str]) -> Attack:
    """A staff admin action on ids that do not exist or are not ids at all."""

    async def attack(h: Harness) -> Outcome:
        def post() -> Outcome:
            page = h.staff.get(changelist)
            csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
            form = {"action": action, "_selected_action": selected, "csrfmiddlewaretoken": csrf[1] if csrf else ""}
            return response_outcome(h.staff.post(changelist, data=form))

        return await asyncio.to_thread(post)

    return attack


def raw_http(request: bytes) -> Attack:
    """A hand-written HTTP request; the outcome is the status of the answer."""

    async def attack(h: Harness) -> Outcome:
        def send() -> Outcome:
            with socket.create_connection(("127.0.0.1", h.stack.port), timeout=15) as sock:
                sock.sendall(request.replace(b"{host}", f"127.0.0.1:{h.stack.port}".encode()))
                answer = sock.recv(65536)
            outcome = Outcome(body=answer.decode("latin-1")[:500])
            try:
                outcome.status = int(answer.split(b" ", 2)[1])
            except (IndexError, ValueError):
                outcome.problems.append(f"no HTTP answer: {answer[:80]!r}")
            return outcome

        return await asyncio.to_thread(send)

    return attack


def login_attempt(username: str, password: str) -> Attack:
    """The login form, with its CSRF token, as a browser posts it."""

    async def attack(h: Harness) -> Outcome:
        def post() -> Outcome:
            with httpx.Client(base_url=h.stack.http, timeout=30) as client:
                return response_outcome(login(client, username, password))

        return await asyncio.to_thread(post)

    return attack


def nested_apps(depth: int) -> bytes:
    return b'{"allowed_apps": ' + b"[" * depth + b'"echo"' + b"]" * depth + b"}"


CASES = [
    Case("tokens-100-thousand-brackets", http("POST", "/tokens/", headers=KEY, content=b"[" * 100_000), BAD_JSON),
    Case(
        "tokens-objects-nested-50-thousand-deep",  # 250 KB: under the harness's 256 KB body cap
        http("POST", "/tokens/", headers=KEY, content=b'{"a":' * 50_000),
        BAD_JSON,
    ),
    Case(
        "tokens-body-over-the-cap",  # refused by daphne as it arrives, before anything reads it
        http("POST", "/tokens/", headers=KEY, content=b'{"a":' * 100_000),
        Expect(status=413, detail="the limit is"),
    ),
    Case(
        "tokens-arrays-nested-5000-deep-and-closed",
        http("POST", "/tokens/", headers=KEY, content=b"[" * 5000 + b"]" * 5000),
        BAD_JSON,
    ),
    Case(
        "tokens-allowed-apps-nested-1000-deep",
        http("POST", "/tokens/", headers=KEY, content=nested_apps(1000)),
        Expect(status=400, detail=r"allowed_apps|nest|deep"),
    ),
    Case(
        "tokens-body-of-3-mb",
        http(
            "POST", "/tokens/", headers=KEY, content=b'{"allowed_apps": ["echo"], "pad": "' + b"x" * 3_000_000 + b'"}'
        ),
        Expect(status=(400, 413), detail=r"large|big|size|bytes"),
    ),
    Case(
        "tokens-expiration-nan",
        http("POST", "/tokens/", headers=KEY, content=b'{"allowed_apps": ["echo"], "token_expiration": NaN}'),
        Expect(status=400, detail="token_expiration"),
    ),
    Case(
        "tokens-expiration-string",
        http("POST", "/tokens/", headers=KEY, json={"allowed_apps": ["echo"], "token_expiration": "60"}),
        Expect(status=400, detail="token_expiration"),
    ),
    Case(
        "tokens-expiration-of-5000-digits",
        http(
            "POST",
            "/tokens/",
            headers=KEY,
            content=b'{"allowed_apps": ["echo"], "token_expiration": 1' + b"0" * 5000 + b"}",
        ),
        Expect(status=400, detail=r"json|token_expiration"),
    ),
    Case(
        "tokens-form-body",
        http("POST", "/tokens/", headers=KEY, data={"allowed_apps": "echo"}),
        Expect(status=400, detail="json"),
    ),
    Case(
        "tokens-key-in-the-query",
        http("POST", "/tokens/?key=abc:def", json={"allowed_apps": ["echo"]}),
        Expect(status=401, detail="key"),
    ),
    Case(
        "tokens-lone-surrogate-alias",
        http("POST", "/tokens/", headers=KEY, content=b'{"allowed_apps": ["\\ud800"]}'),
        Expect(status=400, detail="allowed_apps"),
    ),
    Case(
        "fal-token-app-traversal",
        with_cookie("GET", "/api/fal/token?app=../../etc/passwd"),
        Expect(status=400, detail="app"),
    ),
    Case(
        "fal-token-app-of-201-chars",
        with_cookie("GET", "/api/fal/token?app=" + "o" * 100 + "/" + "a" * 101),
        Expect(status=400, detail="app"),
    ),
    Case(
        "fal-proxy-to-the-metadata-service",
        with_cookie(
            "POST",
            "/api/fal/proxy",
            headers={"x-fal-target-url": "http://169.254.169.254/tokens/"},
            json={"allowed_apps": ["echo"]},
        ),
        Expect(status=400, detail="token endpoint and the apps' run and stream endpoints only"),
    ),
    Case(
        "fal-proxy-from-another-origin",
        with_cookie(
            "POST",
            "/api/fal/proxy",
            headers={"Origin": "http://evil.example", "x-fal-target-url": "https://rest.fal.ai/tokens/"},
            json={"allowed_apps": ["echo"]},
        ),
        Expect(status=403, detail="origin"),
    ),
    bad_date("/admin/dashboard/", "start=2024-13-45T99:99", json_=False),
    bad_date("/admin/dashboard/data", "start=2024-01-01T25:00", json_=True),
    bad_date("/admin/dashboard/data", "end=99999-01-01T00:00", json_=True),
    bad_date("/admin/dashboard/data", "start=2024-01-01T00:00:00%2B99:00", json_=True),
    bad_date("/admin/dashboard/data", "start=0000-01-01T00:00", json_=True),
    bad_date("/admin/dashboard/data", "start=2024-02-30T00:00", json_=True),
    bad_date("/admin/dashboard/data", "start=2030-01-01T00:00&end=2020-01-01T00:00", json_=True),
    bad_date("/admin/dashboard/export.csv", "start=0000-00-00T00:00", json_=False),
    Case(
        "csv-export-by-staff-without-permission",
        http("GET", "/admin/dashboard/export.csv", client="clerk"),
        Expect(status=403),
    ),
    Case(
        "dashboard-data-by-staff-without-permission",
        http("GET", "/admin/dashboard/data", client="clerk"),
        Expect(status=403),
    ),
    Case(
        "runners-page-by-staff-without-permission", http("GET", "/admin/runners/", client="clerk"), Expect(status=403)
    ),
    Case("metrics-by-staff-without-permission", http("GET", "/metrics", client="clerk"), Expect(status=403)),
    Case(
        "csv-formula-equals-in-user-agent",
        formula_in_user_agent('=HYPERLINK("http://evil.example","x")'),
        Expect(status=200, admitted=1),
    ),
    Case(
        "csv-formula-at-in-user-agent",
        formula_in_user_agent("@SUM(1+9)*cmd|' /C calc'!A0"),
        Expect(status=200, admitted=1),
    ),
    Case(
        "csv-formula-plus-in-user-agent", formula_in_user_agent("+1+cmd|' /C calc'!A0"), Expect(status=200, admitted=1)
    ),
    Case(
        "csv-formula-minus-in-user-agent",
        formula_in_user_agent("-2+3+cmd|' /C calc'!A0"),
        Expect(status=200, admitted=1),
    ),
    Case(
        "admin-revoke-of-ids-that-are-not-ids",
        admin_action("/admin/accounts/apikey/", "revoke", ["abc", "1 OR 1=1", "-1"]),
        Expect(status=(200, 302)),
    ),
    Case(
        "admin-filter-with-a-garbage-date",
        staff_http("GET", "/admin/usage/connectionrecord/?started_at__gte=garbage"),
        Expect(status=(200, 302)),
    ),
    Case(
        "admin-search-of-10-kb",
        staff_http("GET", "/admin/usage/connectionrecord/?q=" + "%27" * 3000),
        Expect(status=200),
    ),
    Case(
        "request-with-content-length-and-chunked",
        raw_http(
            b"POST /tokens/ HTTP/1.1\r\nHost: {host}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\nGET /admin/ HTTP/1.1\r\nHost: {host}\r\n\r\n"
        ),
        Expect(status=400),
    ),
    Case("static-path-traversal", http("GET", "/static/%2e%2e/%2e%2e/realtime_site/settings.py"), Expect(status=404)),
    # The apps' HTTP forms (POST /{app}/stream, POST /{app}): every bad call named before any event.
    Case("app-stream-without-credentials", http("POST", "/local/echo/stream", json=APP_INPUT), Expect(status=401)),
    Case(
        "app-run-not-json",
        http("POST", "/local/echo", headers=KEY, content=b"{not json"),
        Expect(status=422, detail="JSON"),
    ),
    Case(
        "app-run-json-nested-40-thousand-deep",  # 240 KB, under the body cap: Python's parser gives up
        http("POST", "/local/echo", headers=KEY, content=b'{"a":' * 40_000 + b"1" + b"}" * 40_000),
        Expect(status=422, detail="JSON"),
    ),
    Case(
        "app-stream-body-over-the-cap",
        http("POST", "/local/echo/stream", headers=KEY, content=b"x" * 300_000),
        Expect(status=413, detail="limit"),
    ),
    Case(
        "app-stream-remote-image-url",  # no fetching of remote URLs: no SSRF through the input
        http("POST", "/local/echo/stream", headers=KEY, json={"prompt": "x", "image_url": "http://169.254.169.254/"}),
        Expect(status=422, detail="image_url"),
    ),
    Case("app-stream-unknown-app", http("POST", "/no/such/stream", headers=KEY, json=APP_INPUT), Expect(status=404)),
    Case("app-stream-left-30-times", stream_left(30), Expect(status=200, admitted=30)),
    Case(
        "login-with-a-100-kb-username",
        login_attempt("u" * 100_000, "x"),
        Expect(status=200, detail=r"didn't match|correct username", json=False),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_hostile_request_gets_a_named_answer(harness: Harness, case: Case) -> None:
    await harness.check(case)
