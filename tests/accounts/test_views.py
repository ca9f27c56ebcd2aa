"""Token endpoints and the proxy, through Django's test client."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone

from realtime_site.accounts.failures import failures
from realtime_site.accounts.keys import create_api_key
from realtime_site.accounts.models import ApiKey, IssuedToken, UserLimits
from realtime_site.accounts.tokens import check_token

pytestmark = pytest.mark.django_db
TOKEN_BODY = json.dumps({"allowed_apps": ["stylize"], "token_expiration": 60})
FAL_TARGET = {"HTTP_X_FAL_TARGET_URL": "https://rest.fal.ai/tokens/"}


@pytest.fixture(autouse=True)
def fresh_failures(settings):
    settings.REDIS_URL = None  # counted in this process
    failures.clear()
    yield
    failures.clear()


@pytest.fixture
def user():
    return get_user_model().objects.create_user("bob", password="pw-bob-12345")


@pytest.fixture
def key(user) -> str:
    return create_api_key(user, "test")[1]


def post_tokens(client, body: str = TOKEN_BODY, **headers: str):
    return client.post("/tokens/", body, content_type="application/json", **headers)


def test_tokens_with_a_key_answers_a_bare_json_string(client, key: str, user) -> None:
    response = post_tokens(client, HTTP_AUTHORIZATION=f"Key {key}")
    assert response.status_code == 200
    token = response.json()
    assert isinstance(token, str)
    _, record = check_token(token, "stylize")
    assert record.source == IssuedToken.Source.API_KEY and record.api_key.user == user
    assert ApiKey.objects.get().last_used_at is not None


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        (None, "no API key"),
        ("Bearer abc", "malformed"),
        ("Key nocolon", "malformed"),
        ("Key abc:def", "unknown API key"),
    ],
)
def test_tokens_refuses_bad_keys(client, key: str, header: str | None, detail: str) -> None:
    headers = {"HTTP_AUTHORIZATION": header} if header else {}
    response = post_tokens(client, **headers)
    assert response.status_code == 401 and detail in response.json()["detail"]


def test_tokens_refuses_a_revoked_key_and_a_wrong_secret(client, key: str) -> None:
    key_id = key.split(":")[0]
    assert post_tokens(client, HTTP_AUTHORIZATION=f"Key {key_id}:wrong").status_code == 401
    ApiKey.objects.update(revoked_at=timezone.now())
    response = post_tokens(client, HTTP_AUTHORIZATION=f"Key {key}")
    assert response.status_code == 401 and "revoked" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ("not json", "not valid JSON"),
        ("[]", "JSON object"),
        ("{}", "allowed_apps"),
        (json.dumps({"allowed_apps": ["../etc"]}), "not an app alias"),
        (json.dumps({"allowed_apps": ["stylize"], "token_expiration": "soon"}), "token_expiration"),
        ("[" * 100_000, "nested too deeply"),
        ('{"a":' * 100_000, "nested too deeply"),
    ],
    ids=["not-json", "array", "empty", "alias", "expiration", "deep-array", "deep-object"],
)
def test_tokens_refuses_bad_bodies(client, key: str, body: str, detail: str) -> None:
    response = post_tokens(client, body, HTTP_AUTHORIZATION=f"Key {key}")
    assert response.status_code == 400 and detail in response.json()["detail"]


def test_tokens_refuses_an_address_over_the_failure_limit_before_checking_the_key(client, key: str, settings) -> None:
    settings.REALTIME_CREDENTIAL_FAILURES, settings.REALTIME_CREDENTIAL_FAILURE_WINDOW = 3, 60
    attacker = {"REMOTE_ADDR": "198.51.100.7"}
    key_id = key.split(":")[0]
    for _ in range(3):
        assert post_tokens(client, HTTP_AUTHORIZATION=f"Key {key_id}:guess", **attacker).status_code == 401
    refused = post_tokens(client, HTTP_AUTHORIZATION=f"Key {key}", **attacker)  # even the right key
    assert refused.status_code == 429
    assert "the limit is 3 per 60 seconds" in refused.json()["detail"]
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert ApiKey.objects.get().last_used_at is None  # the key was never looked at
    other = post_tokens(client, HTTP_AUTHORIZATION=f"Key {key}", REMOTE_ADDR="198.51.100.8")
    assert other.status_code == 200


def test_tokens_without_a_key_header_count_no_failure(client, key: str, settings) -> None:
    settings.REALTIME_CREDENTIAL_FAILURES = 2
    for _ in range(4):
        assert post_tokens(client).status_code == 401
    assert post_tokens(client, HTTP_AUTHORIZATION=f"Key {key}").status_code == 200


def test_tokens_caps_the_lifetime(client, key: str, settings) -> None:
    settings.REALTIME_TOKEN_MAX_LIFETIME = 30
    body = json.dumps({"allowed_apps": ["stylize"], "token_expiration": 3600})
    assert post_tokens(client, body, HTTP_AUTHORIZATION=f"Key {key}").status_code == 200
    record = IssuedToken.objects.get()
    assert (record.expires_at - record.issued_at).total_seconds() == pytest.approx(30, abs=1)


def test_fal_token_needs_a_session(client) -> None:
    response = client.get("/api/fal/token", {"app": "local/stylize"})
    assert response.status_code == 401 and response["Content-Type"] == "application/json"


def test_fal_token_for_a_logged_in_user(client, user) -> None:
    client.force_login(user)
    assert client.get("/api/fal/token").status_code == 400
    response = client.get("/api/fal/token", {"app": "fal-ai/fast-lcm-diffusion/realtime"})
    assert response.status_code == 200
    grant, record = check_token(response.json()["token"], "fast-lcm-diffusion")
    assert record.source == IssuedToken.Source.SESSION and grant.user_id == user.pk


def test_fal_token_forbidden_app(client, user) -> None:
    UserLimits.objects.create(user=user, allowed_apps=["stylize"])
    client.force_login(user)
    assert client.get("/api/fal/token", {"app": "local/echo"}).status_code == 403
    assert client.get("/api/fal/token", {"app": "local/stylize"}).status_code == 200


def test_proxy_issues_a_token_for_the_fal_token_target(client, user) -> None:
    client.force_login(user)
    response = client.post("/api/fal/proxy", TOKEN_BODY, content_type="application/json", **FAL_TARGET)
    assert response.status_code == 200
    check_token(response.json(), "stylize")


@pytest.mark.parametrize(
    "target",
    [
        "https://rest.fal.ai/storage/upload",
        "https://example.com/tokens/",
        "http://169.254.169.254/latest/meta-data/",
        "https://fal.run/fal-ai/fast-lcm-diffusion/requests/abc",  # an app's path, but not run or stream
        "https://queue.fal.run/fal-ai/fast-lcm-diffusion",
        "https://fal.run.example.com/fal-ai/fast-lcm-diffusion/stream",
    ],
)
def test_proxy_is_not_an_open_relay(client, user, target: str) -> None:
    client.force_login(user)
    response = client.post("/api/fal/proxy", TOKEN_BODY, content_type="application/json", HTTP_X_FAL_TARGET_URL=target)
    assert response.status_code == 400 and "serves fal's token endpoint and the apps'" in response.json()["detail"]


def test_proxy_refusals(client, user) -> None:
    assert client.post("/api/fal/proxy", TOKEN_BODY, content_type="application/json").status_code == 401
    client.force_login(user)
    assert client.post("/api/fal/proxy", TOKEN_BODY, content_type="application/json").status_code == 400
    cross_site = client.post(
        "/api/fal/proxy", TOKEN_BODY, content_type="application/json", HTTP_ORIGIN="https://evil.example", **FAL_TARGET
    )
    assert cross_site.status_code == 403
    for origin in ("http://testserver:8001", "https://testserver", "null"):  # another port, scheme, or none
        other = client.post(
            "/api/fal/proxy", TOKEN_BODY, content_type="application/json", HTTP_ORIGIN=origin, **FAL_TARGET
        )
        assert other.status_code == 403, origin
    same = client.post(
        "/api/fal/proxy", TOKEN_BODY, content_type="application/json", HTTP_ORIGIN="http://testserver", **FAL_TARGET
    )
    assert same.status_code == 200


def test_create_api_key_command_prints_the_key_once(user, capsys) -> None:
    call_command("create_api_key", "bob", "--name", "ci")
    printed = capsys.readouterr().out.strip()
    key_id, secret = printed.split(":")
    stored = ApiKey.objects.get(key_id=key_id)
    assert stored.name == "ci" and secret not in stored.secret_hash


def test_login_page_renders(client) -> None:
    response = client.get("/accounts/login/")
    assert response.status_code == 200 and b"Log in" in response.content


def test_home_redirects_logged_out_visitors_to_login(client) -> None:
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
