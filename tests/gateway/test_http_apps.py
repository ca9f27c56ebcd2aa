"""The HTTP forms of the apps against real daphne and a real runner: ``POST /{app}/stream`` (server-sent
events) and ``POST /{app}`` (one result), by API key, token and session; their wire form as the
published parsers need it; bad inputs named, never a 500; a client that leaves mid-stream stops the
runner's work; usage records with their mode; runner sessions reused between calls."""

from __future__ import annotations

import base64
import json
import re
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.accounts.live import csrf_of
from tests.conftest import drawing, encode
from tests.gateway.stack import GatewayStack, start_stack

PASSWORD = "pw-hana-1234567"
METRICS = "metrics-bearer-for-this-test"
PARTNER = "https://partner.example"  # a site allowed to call the endpoints from its pages (CORS)
APPS = "local/stylize,local/echo,test/steps=echo?delay_ms=3000&steps=30,test/brief=echo?session_timeout=1"
PNG = encode(drawing(64, 64), "PNG")
INPUT = {"prompt": "starry night", "image_url": "data:image/png;base64," + base64.b64encode(PNG).decode()}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    stack = start_stack(
        tmp_path_factory.mktemp("http-apps"),
        [["--apps", APPS]],
        {"REALTIME_METRICS_TOKEN": METRICS, "REALTIME_CORS_ORIGINS": PARTNER},
    )
    make = f"get_user_model().objects.create_user('hana', password={PASSWORD!r})"
    stack.manage("shell", "-c", f"from django.contrib.auth import get_user_model; {make}")
    stack.key = stack.manage("create_api_key", "hana").strip()  # type: ignore[attr-defined]
    yield stack
    stack.close()


def key_headers(stack: GatewayStack) -> dict[str, str]:
    return {"Authorization": f"Key {stack.key}"}  # type: ignore[attr-defined]


def events_of(body: str) -> list[dict]:
    """Parse an event stream strictly: only ``data:`` blocks and ``:`` comments may appear."""
    events = []
    for block in body.split("\n\n"):
        if not block:
            continue
        lines = block.split("\n")
        assert all(line.startswith((":", "data: ")) for line in lines), block[:200]
        data = [line[len("data: ") :] for line in lines if line.startswith("data: ")]
        if data:
            assert len(data) == 1
            events.append(json.loads(data[0]))
    return events


def stream(stack: GatewayStack, app: str, payload: object, **kwargs: object) -> httpx.Response:
    return httpx.post(f"{stack.http}/{app}/stream", json=payload, timeout=60, **kwargs)  # type: ignore[arg-type]


def test_stream_sends_a_preview_then_the_result_as_ascii_data_events(stack: GatewayStack) -> None:
    response = stream(stack, "local/stylize", INPUT, headers={**key_headers(stack), "Accept": "application/json"})
    assert response.status_code == 200  # whatever Accept says: proxies rewrite it
    assert response.headers["content-type"].startswith("text/event-stream")
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-fal-request-id"])
    assert response.content.isascii()
    preview, final = events_of(response.text)
    assert (preview["partial"], preview["step"], preview["steps"]) == (True, 1, 2)
    assert preview["images"][0]["width"] == 128 and preview["images"][0]["url"].startswith("data:image/jpeg;base64,")
    assert "partial" not in final and final["images"][0]["width"] == 512
    assert final["timings"]["inference"] > 0


def test_run_answers_one_json_result(stack: GatewayStack) -> None:
    response = httpx.post(f"{stack.http}/local/stylize", json={**INPUT, "seed": 7}, headers=key_headers(stack))
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    result = response.json()
    assert result["seed"] == 7 and "partial" not in result and result["images"][0]["height"] == 512
    assert response.headers["x-fal-request-id"]


def test_a_token_for_the_stream_path_works_and_stays_reusable(stack: GatewayStack) -> None:
    grant = httpx.post(
        f"{stack.http}/tokens/", json={"allowed_apps": ["local/echo/stream"]}, headers=key_headers(stack)
    )
    assert grant.status_code == 200, grant.text
    token = grant.json()
    for _ in range(2):
        response = stream(stack, "local/echo", INPUT, params={"fal_jwt_token": token})
        assert response.status_code == 200 and events_of(response.text)[-1]["images"][0]["width"] == 512
    other = stream(stack, "local/stylize", INPUT, params={"fal_jwt_token": token})
    assert other.status_code == 403 and "stylize" in other.json()["detail"]


def test_the_session_cookie_works_from_this_site_only(stack: GatewayStack) -> None:
    with httpx.Client(base_url=stack.http, timeout=60) as browser:
        login = browser.get("/accounts/login/")
        browser.post(
            "/accounts/login/",
            data={"username": "hana", "password": PASSWORD, "csrfmiddlewaretoken": csrf_of(login)},
        )
        same = browser.post("/local/echo", json=INPUT, headers={"Origin": stack.http})
        assert same.status_code == 200, same.text
        foreign = browser.post("/local/echo", json=INPUT, headers={"Origin": "https://evil.example"})
        assert foreign.status_code == 403 and "origin" in foreign.json()["detail"]


@pytest.mark.parametrize(
    ("method", "app", "body", "headers", "status", "code"),
    [
        ("POST", "local/echo", INPUT, {}, 401, "UNAUTHORIZED"),
        ("POST", "local/echo", INPUT, {"Authorization": "Key nobody:nothing"}, 401, "UNAUTHORIZED"),
        ("POST", "no/such-app", INPUT, None, 404, "APP_UNAVAILABLE"),
        ("GET", "local/echo", None, None, 405, "VALIDATION_ERROR"),
        ("POST", "local/echo", "not json", None, 422, "VALIDATION_ERROR"),
        ("POST", "local/echo", [1, 2], None, 422, "VALIDATION_ERROR"),
        ("POST", "local/echo", {"image_url": INPUT["image_url"]}, None, 422, "VALIDATION_ERROR"),
        ("POST", "local/echo", {**INPUT, "image_size": "huge"}, None, 422, "VALIDATION_ERROR"),
        (
            "POST",
            "local/echo",
            {"prompt": "x", "image_url": "https://example.com/a.png"},
            None,
            422,
            "VALIDATION_ERROR",
        ),
    ],
)
@pytest.mark.parametrize("path", ["/stream", ""])
def test_bad_calls_get_a_named_error_before_any_event(
    stack: GatewayStack, method: str, app: str, body: object, headers: dict | None, status: int, code: str, path: str
) -> None:
    content = body if isinstance(body, str) else None
    payload = None if isinstance(body, str) or body is None else body
    response = httpx.request(
        method,
        f"{stack.http}/{app}{path}",
        json=payload,
        content=content,
        headers=key_headers(stack) if headers is None else headers,
        timeout=30,
    )
    assert response.status_code == status, response.text
    error = response.json()
    assert error["error"] == code and error["detail"] and error["message"].startswith(f"{code}: ")


def test_a_body_over_the_cap_is_refused_before_it_is_read(stack: GatewayStack) -> None:
    host, port = stack.http.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as raw:
        raw.sendall(
            f"POST /local/echo/stream HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {64 * 1024 * 1024}\r\n\r\n{{".encode()
        )
        answer = raw.recv(65536).decode()  # declared, not sent: answered before any of it is read
    assert answer.startswith("HTTP/1.1 413") and "PAYLOAD_TOO_LARGE" in answer

    def chunks() -> Iterator[bytes]:
        yield b'{"prompt": "x", "pad": "'
        for _ in range(12):
            yield b"a" * (1024 * 1024)

    chunked = httpx.post(f"{stack.http}/local/echo/stream", content=chunks(), headers=key_headers(stack), timeout=30)
    assert chunked.status_code == 413 and chunked.json()["error"] == "PAYLOAD_TOO_LARGE"
    assert stream(stack, "local/echo", INPUT, headers=key_headers(stack)).status_code == 200  # and on it goes


def test_leaving_mid_stream_stops_the_work_on_the_runner(stack: GatewayStack) -> None:
    with httpx.stream(
        "POST", f"{stack.http}/test/steps/stream", json=INPUT, headers=key_headers(stack), timeout=60
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                assert json.loads(line[6:])["partial"] is True
                break  # one preview of 30 steps, then the client leaves
    runner = stack.runners[0]
    deadline = time.monotonic() + 20
    while not any("input abandoned at step" in line for line in runner.output) and time.monotonic() < deadline:
        time.sleep(0.1)
    abandoned = [line for line in runner.output if "input abandoned at step" in line]
    assert abandoned, "".join(runner.output[-20:])
    step = int(re.search(r"at step (\d+) of 30", abandoned[-1])[1])  # type: ignore[index]
    assert step < 30
    record = wait_for_record(stack, "test/steps")
    assert record["mode"] == "stream" and record["close_code"] == 1001 and record["results_out"] == 0


def wait_for_record(stack: GatewayStack, app: str) -> dict:
    query = (
        "list(__import__('realtime_site.usage.models', fromlist=['x']).ConnectionRecord.objects"
        f".filter(app={app!r}, ended_at__isnull=False).values('mode', 'close_code', 'results_out', 'frames_in'))"
    )
    deadline = time.monotonic() + 30
    while True:
        rows = stack.query(query)
        if rows or time.monotonic() > deadline:
            assert rows, f"no usage record for {app}"
            return rows[-1]  # type: ignore[index]
        time.sleep(0.3)


def test_calls_are_recorded_with_their_mode_and_counted_in_metrics(stack: GatewayStack) -> None:
    for _ in range(2):
        assert httpx.post(f"{stack.http}/local/echo", json=INPUT, headers=key_headers(stack)).status_code == 200
    records = "__import__('realtime_site.usage.models', fromlist=['x']).ConnectionRecord.objects"
    deadline = time.monotonic() + 30
    while stack.query(f"{records}.filter(mode='run', ended_at__isnull=False).count()") < 2:  # type: ignore[operator]
        assert time.monotonic() < deadline
        time.sleep(0.3)
    row = stack.query(f"{records}.filter(mode='run').values('frames_in', 'results_out', 'close_code').first()")
    assert row == {"frames_in": 1, "results_out": 1, "close_code": 1000}
    metrics = httpx.get(f"{stack.http}/metrics", headers={"Authorization": f"Bearer {METRICS}"}).text
    assert re.search(r'realtime_sessions_total\{app="local/echo",mode="run"\} [2-9]', metrics), metrics[:2000]


def test_runner_sessions_are_reused_between_calls(stack: GatewayStack) -> None:
    runner = stack.runners[0]
    before = sum("connection closed: app=local/stylize" in line for line in runner.output)
    for _ in range(4):
        response = httpx.post(f"{stack.http}/local/stylize", json=INPUT, headers=key_headers(stack), timeout=60)
        assert response.status_code == 200
    health = httpx.get(f"http://127.0.0.1:{runner.port}/healthz").json()
    stylize = next(app for app in health["apps"] if app["id"] == "local/stylize")
    assert stylize["load"]["connections"] <= 2  # one kept session (a stream's may be another), not four
    assert sum("connection closed: app=local/stylize" in line for line in runner.output) == before


def app_connections(stack: GatewayStack, app_id: str) -> int:
    health = httpx.get(f"http://127.0.0.1:{stack.runners[0].port}/healthz").json()
    return next(app for app in health["apps"] if app["id"] == app_id)["load"]["connections"]


def test_an_idle_session_the_runner_times_out_is_retired_and_the_next_call_opens_one(stack: GatewayStack) -> None:
    call = lambda: httpx.post(f"{stack.http}/test/brief", json=INPUT, headers=key_headers(stack), timeout=60)  # noqa: E731
    assert call().status_code == 200
    assert app_connections(stack, "test/brief") == 1  # kept for the next call
    deadline = time.monotonic() + 20
    while app_connections(stack, "test/brief") and time.monotonic() < deadline:
        time.sleep(0.1)  # the runner's TIMEOUT after 1 s idle; the gateway closes its side
    assert app_connections(stack, "test/brief") == 0
    answer = call()
    assert answer.status_code == 200, answer.text
    assert answer.json()["images"]


def test_the_proxy_serves_the_app_endpoints_to_a_session_and_to_a_key(stack: GatewayStack) -> None:
    stream_target = {"x-fal-target-url": "https://fal.run/local/stylize/stream"}
    with httpx.Client(base_url=stack.http, timeout=60) as browser:
        login = browser.get("/accounts/login/")
        browser.post(
            "/accounts/login/", data={"username": "hana", "password": PASSWORD, "csrfmiddlewaretoken": csrf_of(login)}
        )
        page = {"Origin": stack.http, **stream_target}
        streamed = browser.post("/api/fal/proxy", json=INPUT, headers=page)
        assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
        assert [e.get("partial", False) for e in events_of(streamed.text)] == [True, False]
        foreign = browser.post("/api/fal/proxy", json=INPUT, headers={**page, "Origin": "https://evil.example"})
        assert foreign.status_code == 403
    run_target = {"x-fal-target-url": "https://fal.run/local/echo", **key_headers(stack)}  # fal-swift with FAL_KEY
    ran = httpx.post(f"{stack.http}/api/fal/proxy", json=INPUT, headers=run_target, timeout=60)
    assert ran.status_code == 200 and ran.json()["images"][0]["width"] == 512
    token = httpx.post(
        f"{stack.http}/api/fal/proxy",
        json={"allowed_apps": ["echo"]},
        headers={"x-fal-target-url": "https://rest.alpha.fal.ai/tokens/", **key_headers(stack)},
    )
    assert token.status_code == 200 and token.json().startswith("eyJ")


@pytest.mark.parametrize(
    "target",
    [
        "https://fal.run/local/echo/requests/1",
        "https://queue.fal.run/local/echo",
        "https://example.com/local/echo/stream",
        "http://169.254.169.254/latest/meta-data",
    ],
)
def test_the_proxy_refuses_every_other_target(stack: GatewayStack, target: str) -> None:
    headers = {"x-fal-target-url": target, **key_headers(stack)}
    response = httpx.post(f"{stack.http}/api/fal/proxy", json=INPUT, headers=headers, timeout=30)
    assert response.status_code == 400 and "run and stream endpoints only" in response.json()["detail"]


def test_cors_lets_a_listed_site_stream_with_a_token_and_no_other(stack: GatewayStack) -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    allowed = httpx.options(f"{stack.http}/local/echo/stream", headers={"Origin": PARTNER, **preflight})
    assert allowed.status_code == 204 and allowed.headers["access-control-allow-origin"] == PARTNER
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "content-type" in allowed.headers["access-control-allow-headers"]
    token = httpx.post(f"{stack.http}/tokens/", json={"allowed_apps": ["echo"]}, headers=key_headers(stack)).json()
    response = stream(stack, "local/echo", INPUT, params={"fal_jwt_token": token}, headers={"Origin": PARTNER})
    assert response.status_code == 200 and response.headers["access-control-allow-origin"] == PARTNER
    assert response.headers["access-control-expose-headers"] == "x-fal-request-id"
    other = "https://other.example"
    refused = httpx.options(f"{stack.http}/local/echo/stream", headers={"Origin": other, **preflight})
    assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers
    answered = stream(stack, "local/echo", INPUT, params={"fal_jwt_token": token}, headers={"Origin": other})
    assert "access-control-allow-origin" not in answered.headers  # the browser keeps it from that page


def test_calls_count_against_the_users_frame_rate_like_frames(stack: GatewayStack) -> None:
    make = (
        "from django.contrib.auth import get_user_model; from realtime_site.accounts.models import UserLimits; "
        "u = get_user_model().objects.create_user('ivo'); UserLimits.objects.create(user=u, frames_per_minute=2)"
    )
    stack.manage("shell", "-c", make)
    key = {"Authorization": f"Key {stack.manage('create_api_key', 'ivo').strip()}"}
    statuses = [httpx.post(f"{stack.http}/local/echo", json=INPUT, headers=key, timeout=30) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert statuses[2].json()["error"] == "RATE_LIMITED" and statuses[2].headers["retry-after"]
    assert stream(stack, "local/echo", INPUT, headers=key).status_code == 429  # the same budget


def test_a_picture_the_runner_refuses_is_the_streams_last_event(stack: GatewayStack) -> None:
    garbage = {"prompt": "x", "image_url": "data:image/png;base64," + base64.b64encode(b"not a png").decode()}
    response = stream(stack, "local/stylize", garbage, headers=key_headers(stack))
    assert response.status_code == 200  # the gateway checks the fields; the runner reads the picture
    (error,) = events_of(response.text)
    assert error["type"] == "x-fal-error" and error["error"] == "VALIDATION_ERROR" and "image" in error["reason"]
    ran = httpx.post(f"{stack.http}/local/stylize", json=garbage, headers=key_headers(stack), timeout=30)
    assert ran.status_code == 422 and ran.json()["error"] == "VALIDATION_ERROR"


def test_a_host_that_is_not_allowed_is_refused_on_the_fast_path_too(stack: GatewayStack) -> None:
    headers = {**key_headers(stack), "Host": "evil.example"}
    response = httpx.post(f"{stack.http}/local/echo", json=INPUT, headers=headers, timeout=30)
    assert response.status_code == 400  # Django's answer: the call is handed to it
    fine = httpx.post(f"{stack.http}/local/echo", json=INPUT, headers=key_headers(stack), timeout=30)
    assert fine.headers["x-content-type-options"] == "nosniff" and fine.status_code == 200
