"""Staff pages: each renders for staff and is refused to everyone else; keys, summaries, CSV, metrics."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from realtime_site.accounts.keys import create_api_key
from realtime_site.accounts.models import ApiKey, IssuedToken, UserLimits
from realtime_site.accounts.tokens import issue_token
from realtime_site.usage.models import AppMinute, ConnectionRecord

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff():
    return get_user_model().objects.create_user("sam", password="pw-sam-123456", is_staff=True, is_superuser=True)


@pytest.fixture
def user():
    return get_user_model().objects.create_user("uma", password="pw-uma-123456")


@pytest.fixture
def workload(user):
    """A known workload: two connections of uma's, one still open."""
    now = timezone.now()
    key, _ = create_api_key(user)
    issue_token(user, ["echo"], 60)
    rows = [
        ConnectionRecord(
            id=uuid.uuid4(), user_id=user.pk, username="uma", app="local/echo", auth_method="api_key",
            api_key_id=key.pk, key_id=key.key_id, gateway="g:1",
            started_at=now - timedelta(minutes=5), ended_at=now - timedelta(minutes=4), close_code=1000,
            frames_in=40, results_out=30, errors={"RATE_LIMITED": 2, "VALIDATION_ERROR": 1}, frames_dropped=7,
            inference_seconds=1.5, latency_buckets=[0, 10, 20, 0, 0, 0, 0, 0, 0, 0, 0],
        ),
        ConnectionRecord(
            id=uuid.uuid4(), user_id=user.pk, username="uma", app="local/stylize", auth_method="jwt", gateway="g:1",
            started_at=now - timedelta(minutes=2), frames_in=10, results_out=10, inference_seconds=0.5,
        ),
    ]  # fmt: skip
    ConnectionRecord.objects.bulk_create(rows)
    minute = (now - timedelta(minutes=5)).replace(second=0, microsecond=0)
    buckets = [0, 10, 20, 0, 0, 0, 0, 0, 0, 0, 0]
    AppMinute.objects.create(
        app="local/echo",
        minute=minute,
        gateway="g:1",
        frames_in=40,
        results_out=30,
        errors={"RATE_LIMITED": 2},
        latency_buckets=buckets,
    )
    return rows


STAFF_PAGES = [
    "/admin/",
    "/admin/usage/connectionrecord/",
    "/admin/usage/userusage/",
    "/admin/accounts/apikey/",
    "/admin/accounts/apikey/add/",
    "/admin/accounts/issuedtoken/",
    "/admin/accounts/userlimits/",
    "/admin/dashboard/",
    "/admin/dashboard/data",
    "/admin/dashboard/export.csv",
    "/admin/runners/",
]


@pytest.mark.parametrize("path", STAFF_PAGES)
def test_staff_pages_render_for_staff(client, staff, workload, path: str) -> None:
    client.force_login(staff)
    response = client.get(path)
    assert response.status_code == 200, response.content[:500]


@pytest.mark.parametrize("path", STAFF_PAGES)
def test_staff_pages_are_refused_to_others(client, user, path: str) -> None:
    assert client.get(path).status_code == 302  # to the admin login
    client.force_login(user)
    response = client.get(path)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_connection_and_user_change_pages(client, staff, workload, user) -> None:
    client.force_login(staff)
    record = workload[0]
    assert client.get(f"/admin/usage/connectionrecord/{record.pk}/change/").status_code == 200
    page = client.get(f"/admin/usage/userusage/{user.pk}/change/")
    assert page.status_code == 200 and b"max_connections" in page.content


def test_user_summary_counts_equal_the_workload(client, staff, workload) -> None:
    client.force_login(staff)
    from django.contrib.admin import site

    from realtime_site.usage.models import UserUsage

    model_admin = site._registry[UserUsage]
    request = client.get("/admin/usage/userusage/").wsgi_request
    uma = model_admin.get_queryset(request).get(username="uma")
    assert (model_admin.connections(uma), model_admin.open_now(uma)) == (2, 1)
    assert (model_admin.frames(uma), model_admin.results(uma), model_admin.errors(uma)) == (50, 40, 3)
    assert model_admin.inference(uma) == "2.0"


def test_user_limits_are_editable_in_the_summary(client, staff, user) -> None:
    client.force_login(staff)
    url = f"/admin/usage/userusage/{user.pk}/change/"
    data = {
        "is_active": "on",
        "realtime_limits-TOTAL_FORMS": "1", "realtime_limits-INITIAL_FORMS": "0",
        "realtime_limits-MIN_NUM_FORMS": "0", "realtime_limits-MAX_NUM_FORMS": "1",
        "realtime_limits-0-max_connections": "3", "realtime_limits-0-frames_per_minute": "120",
        "realtime_limits-0-daily_frame_quota": "", "realtime_limits-0-allowed_apps": "[]",
        "realtime_limits-0-user": str(user.pk),
    }  # fmt: skip
    response = client.post(url, data)
    assert response.status_code == 302, response.content[-3000:]
    limits = UserLimits.objects.get(user=user)
    assert (limits.max_connections, limits.frames_per_minute, limits.daily_frame_quota) == (3, 120, None)


def test_api_key_created_in_the_admin_shows_its_secret_once(client, staff, user) -> None:
    client.force_login(staff)
    response = client.post("/admin/accounts/apikey/add/", {"user": user.pk, "name": "ci"}, follow=True)
    key = ApiKey.objects.get(name="ci")
    shown = [str(m) for m in response.context["messages"]]
    secret = next(m.split(": ", 1)[1] for m in shown if "shown this once" in m)
    assert secret.startswith(key.key_id + ":") and secret.split(":")[1] not in key.secret_hash
    again = client.get(f"/admin/accounts/apikey/{key.pk}/change/")
    assert secret.split(":")[1].encode() not in again.content


def test_revoke_actions(client, staff, user) -> None:
    client.force_login(staff)
    key, _ = create_api_key(user)
    issue_token(user, ["echo"], 60)
    token = IssuedToken.objects.get()
    for url, pk in (("/admin/accounts/apikey/", key.pk), ("/admin/accounts/issuedtoken/", token.pk)):
        response = client.post(url, {"action": "revoke", "_selected_action": [pk]})
        assert response.status_code == 302
    assert ApiKey.objects.get().revoked_at is not None and IssuedToken.objects.get().revoked_at is not None


def test_csv_export_has_one_row_per_connection_in_range(client, staff, workload) -> None:
    client.force_login(staff)
    start = (timezone.now() - timedelta(minutes=30)).isoformat()
    response = client.get("/admin/dashboard/export.csv", {"start": start})
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0][:4] == ["id", "user_id", "username", "app"]
    frames = rows[0].index("frames_in")
    assert sorted((r[3], r[frames]) for r in rows[1:]) == [("local/echo", "40"), ("local/stylize", "10")]
    empty = client.get("/admin/dashboard/export.csv", {"start": "2001-01-01T00:00:00", "end": "2001-01-02T00:00:00"})
    assert len(list(csv.reader(io.StringIO(b"".join(empty.streaming_content).decode())))) == 1


def test_dashboard_data_and_bad_ranges(client, staff, workload) -> None:
    client.force_login(staff)
    data = client.get("/admin/dashboard/data").json()
    assert sum(m["frames_in"] for m in data["minutes"]) == 40
    assert data["active"] == {"g:1": {"local/stylize": 1}}
    assert data["top_users"][0]["username"] == "uma" and data["top_users"][0]["frames"] == 50
    assert client.get("/admin/dashboard/data", {"start": "yesterday"}).status_code == 400
    assert (
        client.get("/admin/dashboard/data", {"start": "2030-01-01T00:00", "end": "2020-01-01T00:00"}).status_code == 400
    )


def test_metrics_for_staff_or_the_bearer_token(client, staff, user, settings) -> None:
    settings.REALTIME_METRICS_TOKEN = "metrics-secret-for-tests"
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    client.force_login(user)
    assert client.get("/metrics").status_code == 403
    client.logout()
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer metrics-secret-for-tests")
    assert response.status_code == 200 and b"realtime_runner_up" in response.content
    client.force_login(staff)
    assert client.get("/metrics").status_code == 200


def test_connection_admin_lists_records_of_deleted_users(client, staff, workload, user) -> None:
    user.delete()  # keys and tokens go with it; the records stay
    assert ConnectionRecord.objects.filter(username="uma").count() == 2
    client.force_login(staff)
    for query in ({}, {"q": "uma"}, {"username": "uma"}, {"q": workload[0].key_id}, {"o": "2"}):
        page = client.get("/admin/usage/connectionrecord/", query)
        assert page.status_code == 200 and b"uma" in page.content, query
    assert client.get(f"/admin/usage/connectionrecord/{workload[0].pk}/change/").status_code == 200
    anonymous = ConnectionRecord.objects.create(
        user_id=424242, app="local/echo", auth_method="jwt", started_at=timezone.now(), token_id="gone"
    )
    assert b"user #424242" in client.get("/admin/usage/connectionrecord/").content
    assert client.get(f"/admin/usage/connectionrecord/{anonymous.pk}/change/").status_code == 200
    data = client.get("/admin/dashboard/data").json()
    assert {row["username"] for row in data["top_users"]} == {"uma", "user #424242"}
