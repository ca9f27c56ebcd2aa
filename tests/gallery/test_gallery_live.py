"""The gallery against real daphne: keep a result with its sketch and parameters, the grid, a
creation's page and files; private ones are 404 to everyone else (logged out too), staff aside;
public ones open for anyone with the link, with an Open Graph image; delete takes the files too;
bad uploads, tampered ids and another user's creation get named errors, and nothing is stored;
the quota says when it is full."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.accounts.live import STAFF, STAFF_PASSWORD, admin_delete, create_staff
from tests.gateway.stack import GatewayStack, start_stack
from tests.rooms.live import csrf, logged_in, make_room, make_users

MOST = 4


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    stack = start_stack(tmp_path_factory.mktemp("gallery"), [["--apps", "local/echo"]],
                        {"REALTIME_GALLERY_MAX_ITEMS": str(MOST)})  # fmt: skip
    make_users(stack, "ada", "bea", "cy", "dot")
    create_staff(stack)
    yield stack
    stack.close()


def picture(kind: str = "JPEG", color: str = "#336699", size: int = 128) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, kind)
    return out.getvalue()


PARAMS = {"app": "local/stylize", "prompt": "starry harbour", "seed": "42", "strength": "0.7",
          "num_inference_steps": "2", "image_size": "512"}  # fmt: skip


def kept(client: httpx.Client, files: dict | None = None, **fields: str) -> httpx.Response:
    if files is None:
        files = {"result": ("result.jpg", picture(), "image/jpeg"),
                 "sketch": ("sketch.jpg", picture(color="#ffffff"), "image/jpeg")}  # fmt: skip
    return client.post("/gallery/keep", data={**PARAMS, **fields}, files=files,
                       headers={"X-CSRFToken": csrf(client), "Referer": str(client.base_url)})  # fmt: skip


def media(stack: GatewayStack) -> list[Path]:
    root = stack.var_dir / "media"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def post(client: httpx.Client, path: str, **fields: str) -> httpx.Response:
    return client.post(path, data=fields, headers={"X-CSRFToken": csrf(client), "Referer": str(client.base_url)})


def test_keep_then_the_grid_the_page_and_the_files(stack: GatewayStack) -> None:
    with (
        closing(logged_in(stack, "ada")) as ada,
        closing(logged_in(stack, "bea")) as bea,
        httpx.Client(base_url=stack.http) as nobody,
    ):
        answer = kept(ada)
        assert answer.status_code == 201, answer.text
        url = answer.json()["url"]
        public_id = answer.json()["id"]
        assert re.fullmatch(r"/gallery/[A-Za-z0-9_-]{20,}/", url)
        grid = ada.get("/gallery/").text
        assert f'href="{url}" data-testid="gallery-item"' in grid and "1 of 4 creations" in grid
        page = ada.get(url).text
        assert "starry harbour" in page and "local/stylize" in page and "og:image" not in page  # private: no preview
        result = ada.get(f"{url}result")
        assert result.status_code == 200 and result.headers["content-type"] == "image/jpeg"
        assert result.content == picture() and "private" in result.headers["cache-control"]
        with Image.open(io.BytesIO(ada.get(f"{url}thumbnail").content)) as small:
            assert small.format == "JPEG" and max(small.size) <= 256
        remix = ada.get(f"{url}remix").json()
        assert remix["parameters"] == {"app": "local/stylize", "prompt": "starry harbour", "seed": 42, "strength": 0.7,
                                       "num_inference_steps": 2, "image_size": 512}  # fmt: skip
        assert ada.get(remix["sketch"]).content == picture(color="#ffffff")

        # Private: 404 to everyone else, logged out too, for the page and every file.
        for client in (bea, nobody):
            for path in (url, f"{url}result", f"{url}sketch", f"{url}thumbnail", f"{url}remix"):
                assert client.get(path).status_code in (404, 302), path  # 302: remix asks to log in first
            assert client.get(url).status_code == 404
        assert post(bea, f"{url}share", public="on").status_code in (403, 404)
        assert post(bea, f"{url}delete").status_code in (403, 404)
        assert ada.get(url).status_code == 200  # still there

        # Public: anyone with the link, with an Open Graph image; private again: gone for them.
        shared = post(ada, f"{url}share", public="on").json()
        assert shared["public"] and shared["link"].endswith(url)
        open_page = nobody.get(url)
        assert open_page.status_code == 200
        image = re.search(r'<meta property="og:image" content="([^"]+)"', open_page.text)
        assert image and image[1].endswith(f"{url}result")
        assert nobody.get(f"{url}result").content == picture()
        assert post(ada, f"{url}share", public="off").json() == {"public": False, "link": None}
        assert nobody.get(url).status_code == 404

        # Delete: the creation and its files.
        files_before = media(stack)
        assert any(public_id in str(p) for p in files_before)
        assert post(ada, f"{url}delete").status_code == 302
        assert ada.get(url).status_code == 404
        assert not any(public_id in str(p) for p in media(stack))


def test_a_deleted_account_takes_its_creations_files_with_it(stack: GatewayStack) -> None:
    with closing(logged_in(stack, "dot")) as dot, closing(logged_in(stack, "bea")) as bea:
        gone = [kept(dot).json()["id"], kept(dot).json()["id"]]
        stays = kept(bea).json()
    assert all(any(i in str(p) for p in media(stack)) for i in gone)
    pk = stack.manage("shell", "-c", "from django.contrib.auth import get_user_model; "
                      "print(get_user_model().objects.get(username='dot').pk)").split()[-1]  # fmt: skip
    admin_delete(stack, f"/admin/auth/user/{pk}/delete/")
    left = media(stack)
    assert not any(i in str(p) for p in left for i in gone)  # no picture of a deleted account is kept
    assert sum(stays["id"] in str(p) for p in left) == 3  # another user's result, sketch and thumbnail stay
    with closing(logged_in(stack, "bea")) as bea:
        assert bea.get(stays["url"]).status_code == 200
        post(bea, f"{stays['url']}delete")


def test_staff_see_private_creations(stack: GatewayStack) -> None:
    with closing(logged_in(stack, "cy")) as cy, httpx.Client(base_url=stack.http) as staff:
        url = kept(cy).json()["url"]
        login = staff.get("/admin/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text)[1]  # type: ignore[index]
        staff.post("/admin/login/", data={"username": STAFF, "password": STAFF_PASSWORD, "csrfmiddlewaretoken": token})
        assert staff.get(url).status_code == 200
        listing = staff.get("/admin/gallery/creation/").text
        assert url.split("/")[2] in listing and "cy" in listing
        assert post(cy, f"{url}delete").status_code == 302


@pytest.mark.parametrize(
    ("files", "fields", "problem"),
    [
        ({}, {}, "result"),
        ({"result": ("r.png", picture("JPEG"), "image/png")}, {}, "not the image/png"),
        ({"result": ("r.jpg", b"<html><script>alert(1)</script></html>", "image/jpeg")}, {}, "not a picture"),
        ({"result": ("r.jpg", picture()[:100], "image/jpeg")}, {}, "not a picture"),
        ({"result": ("r.gif", picture("GIF"), "image/gif")}, {}, "JPEG, PNG or WebP"),
        ({"result": ("r.png", picture("PNG", size=2100), "image/png")}, {}, "at most 2048"),
        ({"result": ("r.jpg", picture(), "image/jpeg"), "sketch": ("s.jpg", b"nope", "image/jpeg")}, {}, "sketch"),
        ({"result": ("r.jpg", picture(), "image/jpeg")}, {"app": "../../etc"}, "app"),
        ({"result": ("r.jpg", picture(), "image/jpeg")}, {"seed": "1e999"}, "seed"),
        ({"result": ("r.jpg", picture(), "image/jpeg")}, {"strength": "nan"}, "strength"),
        ({"result": ("r.jpg", picture(), "image/jpeg")}, {"prompt": "x" * 2001}, "prompt"),
    ],
)
def test_bad_uploads_are_named_and_nothing_is_stored(
    stack: GatewayStack, files: dict, fields: dict, problem: str
) -> None:
    with closing(logged_in(stack, "bea")) as bea:
        before = media(stack)
        answer = kept(bea, files=files, **fields)
        assert answer.status_code == 400 and problem in answer.json()["detail"], answer.text
        assert media(stack) == before


def test_tampered_ids_and_the_quota(stack: GatewayStack) -> None:
    with closing(logged_in(stack, "bea")) as bea, httpx.Client(base_url=stack.http) as nobody:
        unknown = "/gallery/AAAAAAAAAAAAAAAAAAAAAA"
        for path in ("/gallery/not-a-real-id/", "/gallery/x/result", "/gallery/../../settings.py",
                     f"{unknown}/result", f"{unknown}/secret_key"):  # fmt: skip
            assert nobody.get(path).status_code == 404, path
        made = [kept(bea) for _ in range(MOST)]
        assert all(a.status_code == 201 for a in made), [a.text for a in made]
        before = media(stack)
        full = kept(bea)
        assert full.status_code == 413 and "delete some" in full.json()["detail"]
        assert media(stack) == before
        assert "4 of 4 creations" in bea.get("/gallery/").text
        for answer in made:
            post(bea, f"{answer.json()['url']}delete")
        assert kept(bea).status_code == 201


def timelapse(client: httpx.Client, frames: list[tuple[str, bytes, str]], **fields: str) -> httpx.Response:
    return client.post("/gallery/timelapse", data={**PARAMS, **fields}, files=[("frame", f) for f in frames],
                       headers={"X-CSRFToken": csrf(client), "Referer": str(client.base_url)})  # fmt: skip


def test_a_timelapse_is_kept_as_an_animation_and_bad_ones_are_named(stack: GatewayStack) -> None:
    colors = ["#ff0000", "#00ff00", "#0000ff"]
    frames = [(f"f{i}.jpg", picture(color=c), "image/jpeg") for i, c in enumerate(colors)]
    with closing(logged_in(stack, "cy")) as cy:
        before = media(stack)
        for bad, problem in [
            (frames[:1], "send 2 to 90"),
            (frames * 31, "send 2 to 90"),
            ([*frames[:2], ("f.jpg", b"junk", "image/jpeg")], "frame 2"),
            ([*frames[:2], ("f.png", picture(), "image/png")], "not the image/png"),
        ]:
            answer = timelapse(cy, bad)
            assert answer.status_code == 400 and problem in answer.json()["detail"], answer.text
        assert timelapse(cy, frames, frame_ms="5").status_code == 400  # 40 ms a frame at least
        assert media(stack) == before
        answer = timelapse(cy, frames)
        assert answer.status_code == 201 and answer.json()["frames"] == 3, answer.text
        url = answer.json()["url"]
        animation = cy.get(f"{url}result")
        assert animation.headers["content-type"] == "image/webp"
        with Image.open(io.BytesIO(animation.content)) as webp:
            assert webp.n_frames == 3
        assert "3 frames" in cy.get(url).text
        post(cy, f"{url}delete")


def test_a_member_keeps_a_rooms_result_and_a_stranger_may_not_claim_the_room(stack: GatewayStack) -> None:
    with closing(logged_in(stack, "ada")) as ada, closing(logged_in(stack, "bea")) as bea:
        slug = make_room(ada)
        assert kept(bea, room=slug).status_code == 403  # bea never joined it
        answer = kept(ada, room=slug)
        assert answer.status_code == 201, answer.text
        room = stack.query(
            "__import__('realtime_site.gallery.models', fromlist=['x']).Creation.objects"
            f".get(public_id={answer.json()['id']!r}).room"
        )
        assert room == slug
        post(ada, f"{answer.json()['url']}delete")
