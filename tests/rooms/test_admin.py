"""The rooms' admin: on a real stack, staff find a room and its members, close it, and its members'
WebSockets are told and closed while the room's page refuses them; in process, the list runs the same
queries for one room or many, and a tampered selection is refused by name."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from contextlib import closing

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from realtime_site.rooms import membership
from realtime_site.rooms.models import Room, RoomMember
from realtime_site.rooms.raster import RoomCanvas
from tests.accounts.live import STAFF, create_staff, csrf_of, staff_client
from tests.gateway.stack import GatewayStack, start_stack
from tests.rooms.live import Member, join, logged_in, make_room, make_users

CHANGELIST = "/admin/rooms/room/"
TAG = re.compile(r"<[^>]+>")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    stack = start_stack(tmp_path_factory.mktemp("rooms-admin"), [["--apps", "local/echo"]])
    try:
        create_staff(stack)
        make_users(stack, "ada", "bea")
        yield stack
    finally:
        stack.close()


def rows(page: httpx.Response) -> list[dict[str, str]]:
    """The rooms a changelist page lists: their columns' text by name."""
    assert page.status_code == 200, page.text[:500]
    body = page.text.split("<tbody>", 1)[1].split("</tbody>", 1)[0] if "<tbody>" in page.text else ""
    cell = r'<t[dh] class="field-([a-z_]+)[^"]*">(.*?)</t[dh]>'
    return [{name: TAG.sub("", html) for name, html in re.findall(cell, row)} for row in body.split("</tr>")[:-1]]


def close_action(staff: httpx.Client, pk: int) -> str:
    """Run the close action on one room, as the admin's changelist form does; the page it leads to."""
    form = {
        "action": "close_rooms",
        "_selected_action": [str(pk)],
        "csrfmiddlewaretoken": csrf_of(staff.get(CHANGELIST)),
    }
    answer = staff.post(CHANGELIST, data=form)
    assert answer.status_code == 302, answer.text[:500]
    return staff.get(answer.headers["location"]).text


async def test_staff_see_a_room_and_its_members_and_close_it(stack: GatewayStack) -> None:
    ada, bea = logged_in(stack, "ada"), logged_in(stack, "bea")
    try:
        with staff_client(stack) as staff:
            await _scenario(stack, staff, ada, bea)
    finally:
        ada.close()
        bea.close()


async def _scenario(stack: GatewayStack, staff: httpx.Client, ada: httpx.Client, bea: httpx.Client) -> None:
    slug = make_room(ada)
    members: list[Member] = [await join(stack, client, slug) for client in (ada, bea)]
    for member in members:
        await member.next("state")

    page = await asyncio.to_thread(staff.get, CHANGELIST, params={"q": slug})  # searched by slug
    (row,) = rows(page)
    assert {k: row[k] for k in ("slug", "owner", "app", "status", "member_count")} == {
        "slug": slug, "owner": "ada", "app": "local/echo", "status": "open", "member_count": "2"
    }  # fmt: skip
    by_owner = await asyncio.to_thread(staff.get, CHANGELIST, params={"q": "ada", "status": "open"})
    assert slug in [r["slug"] for r in rows(by_owner)]
    match = re.search(r'href="/admin/rooms/room/(\d+)/change/[^"]*"', page.text)
    assert match, page.text[:2000]
    pk = int(match[1])

    room_page = await asyncio.to_thread(staff.get, f"{CHANGELIST}{pk}/change/")
    assert room_page.status_code == 200
    for name in ("ada", "bea"):
        assert re.search(rf'<td class="field-user">\s*<p><a href="[^"]+">{name}</a></p>', room_page.text), (
            room_page.text[:3000]
        )
    assert '<img src="data:image/png;base64,' in room_page.text  # the canvas as a picture, not its bytes
    assert "\\x89PNG" not in room_page.text and 'name="_save"' not in room_page.text  # shown, never edited

    shown = await asyncio.to_thread(close_action, staff, pk)
    assert "Closed 1 room(s) and told their members." in shown
    for member in members:
        member.errors_expected = True
        told = await member.next("error")
        assert told["error"] == "FORBIDDEN" and f"the room was closed by staff ({STAFF})" in told["reason"], told
        await asyncio.wait_for(member.ws.wait_closed(), 20)
        assert member.ws.close_code == 1000

    closed = await asyncio.to_thread(staff.get, CHANGELIST, params={"status": "closed", "q": slug})
    (row,) = rows(closed)
    assert re.fullmatch(rf"closed by staff \({STAFF}\) at \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d", row["status"]), row
    assert rows(await asyncio.to_thread(staff.get, CHANGELIST, params={"status": "open", "q": slug})) == []
    for client in (ada, bea):
        assert (await asyncio.to_thread(client.get, f"/rooms/{slug}/")).status_code == 403

    again = await asyncio.to_thread(close_action, staff, pk)  # closed already: said so, and nothing raised
    assert "1 room(s) were closed already." in again and "Closed " not in again
    assert rows(await asyncio.to_thread(staff.get, CHANGELIST, params={"q": slug}))[0]["status"] == row["status"]


def test_a_user_who_is_not_staff_is_sent_to_the_admin_login(stack: GatewayStack) -> None:
    with closing(logged_in(stack, "bea")) as bea:
        answer = bea.get(CHANGELIST)
        assert answer.status_code == 302
        assert answer.headers["location"] == f"/admin/login/?next={CHANGELIST}"
    with httpx.Client(base_url=stack.http, timeout=30) as stranger:
        assert stranger.get(CHANGELIST).headers["location"] == f"/admin/login/?next={CHANGELIST}"


@pytest.fixture
def root_client(client):  # type: ignore[no-untyped-def]
    client.force_login(get_user_model().objects.create_superuser("root", password="pw-root-1234567"))
    return client


def _rooms(count: int) -> list[Room]:
    base = RoomCanvas().state()["base"]
    made = []
    for _ in range(count):
        owner = get_user_model().objects.create_user(f"owner{Room.objects.count()}")
        made.append(Room.objects.create(owner=owner, app="local/echo", base=base))
        RoomMember.objects.create(room=made[-1], user=owner, color="#e6194b", invited=True)
    return made


@pytest.mark.django_db
def test_the_changelist_runs_the_same_queries_for_one_room_or_many(root_client) -> None:  # type: ignore[no-untyped-def]
    _rooms(1)
    with CaptureQueriesContext(connection) as one:
        assert root_client.get(CHANGELIST).status_code == 200
    _rooms(5)
    with CaptureQueriesContext(connection) as six:
        page = root_client.get(CHANGELIST)
    assert page.content.decode().count('<td class="field-status">open</td>') == 6
    assert len(six) == len(one), [q["sql"] for q in six.captured_queries]
    assert not [q for q in six.captured_queries if '"base"' in q["sql"]]  # the canvases stay in the database


@pytest.mark.django_db
def test_a_tampered_selection_is_refused_by_name(root_client) -> None:  # type: ignore[no-untyped-def]
    (room,) = _rooms(1)
    form = {"action": "close_rooms", "_selected_action": [str(room.pk), "abc"]}
    answer = root_client.post(CHANGELIST, form)
    assert answer.status_code == 302
    assert "Not room ids: &#x27;abc&#x27;; nothing was done." in root_client.get(answer["Location"]).content.decode()
    room.refresh_from_db()
    assert room.closed_at is None


@pytest.mark.django_db
def test_deleting_an_open_room_closes_it_first(root_client, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    closed: list[tuple[str, str]] = []
    monkeypatch.setattr(membership, "close_room", lambda room, by: closed.append((room.slug, by)))
    open_room, shut = _rooms(2)
    Room.objects.filter(pk=shut.pk).update(closed_at=timezone.now(), closed_by="ada")
    form = {"action": "delete_selected", "_selected_action": [str(open_room.pk), str(shut.pk)], "post": "yes"}
    assert root_client.post(CHANGELIST, form).status_code == 302
    assert closed == [(open_room.slug, "staff (root)")] and not Room.objects.exists()
