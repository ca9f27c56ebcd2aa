"""Hostile keepers of the gallery (docs/gallery.md): pictures that are not what they claim, bombs,
bodies over the cap, tampered ids and paths, another user's creation shared or deleted, too many
files, a timelapse of posters, two timelapses at once. Each gets its named answer and nothing is
stored; the four assertions of ``harness`` hold (the victim's session keeps getting results while
pictures are checked and encoded in worker threads)."""

from __future__ import annotations

import asyncio
import io

import httpx
import pytest
from PIL import Image

from tests.adversarial.attacks import Attack, http, response_outcome
from tests.adversarial.harness import Case, Expect, Harness, Outcome
from tests.adversarial.test_rooms import form_post
from tests.conftest import header_only_png

GALLERY = "__import__('realtime_site.gallery.models', fromlist=['Creation'])"
TOKEN = "adversarialcsrftoken0123456789ab"
PARAMS = {"app": "local/echo", "prompt": "x"}


def picture(kind: str = "JPEG", side: int = 64, color: str = "#336699") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (side, side), color).save(out, kind)
    return out.getvalue()


def upload(path: str, files: list[tuple[str, tuple[str, bytes, str]]], user: str = "attacker", **fields: str) -> Attack:
    """A multipart upload from the user's session, with a CSRF token as the pages send it."""

    async def attack(h: Harness) -> Outcome:
        def send() -> httpx.Response:
            headers = {"Cookie": f"{h.session_cookie(user)}; csrftoken={TOKEN}", "X-CSRFToken": TOKEN,
                       "Referer": h.stack.http, "Origin": h.stack.http}  # fmt: skip
            data = {**PARAMS, **fields}
            return httpx.post(h.stack.http + path, data=data, files=files, headers=headers, timeout=60)

        before = _stored(h)
        outcome = response_outcome(await asyncio.to_thread(send))
        if _stored(h) != before:
            outcome.problems.append(f"something was stored: {before} creations before, {_stored(h)} after")
        return outcome

    return attack


def _stored(h: Harness) -> int:
    return h.shell(f"{GALLERY}.Creation.objects.count()")


def a_creation_of(h: Harness, owner: str) -> str:
    files = "result='gallery/none/result.jpg', result_type='image/jpeg', thumbnail='gallery/none/t.jpg'"
    code = f"{GALLERY}.Creation.objects.create(owner=User.objects.get(username={owner!r}), app='local/echo', {files})"
    return h.shell(f"{code}.public_id")


async def the_victims_creation_shared(h: Harness) -> Outcome:
    return await form_post(f"/gallery/{a_creation_of(h, 'victim')}/share", {"public": "on"})(h)


async def the_victims_creation_deleted(h: Harness) -> Outcome:
    public_id = a_creation_of(h, "victim")
    outcome = await form_post(f"/gallery/{public_id}/delete", {})(h)
    if not h.shell(f"{GALLERY}.Creation.objects.filter(public_id={public_id!r}).exists()"):
        outcome.problems.append("the victim's creation is gone")
    return outcome


async def the_victims_private_file(h: Harness) -> Outcome:
    return await http("GET", f"/gallery/{a_creation_of(h, 'victim')}/result")(h)


async def two_timelapses_at_once(h: Harness) -> Outcome:
    """Two big timelapses of one user together: one is made, the other is told to wait (429)."""
    frames = [("frame", (f"f{i}.jpg", picture(side=1024, color=f"#{i * 40:02x}3366"), "image/jpeg")) for i in range(6)]
    outcomes = await asyncio.gather(*(upload("/gallery/timelapse", frames)(h) for _ in range(2)))
    statuses = sorted(o.status or 0 for o in outcomes)
    outcome = next(o for o in outcomes if o.status == 429) if 429 in statuses else outcomes[0]
    outcome.problems = [p for o in outcomes for p in o.problems if "stored" not in p]  # one of them stores
    if statuses not in ([201, 429], [201, 201]):  # the first may be done before the second begins
        outcome.problems.append(f"statuses {statuses}")
    h.shell(f"{GALLERY}.Creation.objects.filter(owner__username='attacker').delete() and None")
    return outcome


JPEG = ("result.jpg", picture(), "image/jpeg")
CASES = [
    Case(
        "gallery-keep-a-jpeg-claiming-png",
        upload("/gallery/keep", [("result", ("r.png", picture(), "image/png"))]),
        Expect(status=400, detail="not the image/png"),
    ),
    Case(
        "gallery-keep-html-as-a-jpeg",
        upload("/gallery/keep", [("result", ("r.jpg", b"<script>x</script>", "image/jpeg"))]),
        Expect(status=400, detail="not a picture"),
    ),
    Case(
        "gallery-keep-a-decompression-bomb",
        upload("/gallery/keep", [("result", ("r.png", header_only_png(60_000), "image/png"))]),
        Expect(status=400, detail="pixels"),
    ),
    Case(
        "gallery-keep-a-body-over-the-cap",
        upload("/gallery/keep", [("result", ("r.jpg", b"\xff" * 400_000, "image/jpeg"))]),
        Expect(status=413, detail="limit"),
    ),
    Case(
        "gallery-keep-without-csrf",
        http("POST", "/gallery/keep", files={"result": JPEG}),
        Expect(status=(302, 403), json=False),
    ),
    Case(
        "gallery-keep-naming-a-room-one-is-not-in",
        upload("/gallery/keep", [("result", JPEG)], room="AAAAAAAAAAAAAAAA"),
        Expect(status=403, detail="room"),
    ),
    Case(
        "gallery-timelapse-of-150-files",
        upload("/gallery/timelapse", [("frame", JPEG)] * 150),
        Expect(status=400, json=False),
    ),
    Case(
        "gallery-timelapse-of-posters",
        upload("/gallery/timelapse", [("frame", ("f.png", picture("PNG", side=1500), "image/png"))] * 2),
        Expect(status=400, detail="at most 1024"),
    ),
    Case("gallery-two-timelapses-at-once", two_timelapses_at_once, Expect(status=(201, 429))),
    Case("gallery-another-users-creation-shared", the_victims_creation_shared, Expect(status=404, json=False)),
    Case("gallery-another-users-creation-deleted", the_victims_creation_deleted, Expect(status=404, json=False)),
    Case("gallery-another-users-private-file", the_victims_private_file, Expect(status=404, json=False)),
    Case(
        "gallery-path-out-of-the-media-folder",
        http("GET", "/gallery/..%2F..%2Fsecret_key/result"),
        Expect(status=404, json=False),
    ),
    Case(
        "gallery-a-file-that-is-not-one",
        http("GET", "/gallery/AAAAAAAAAAAAAAAAAAAAAA/db.sqlite3"),
        Expect(status=404, json=False),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_hostile_keeper_gets_a_named_answer_and_nothing_is_stored(harness: Harness, case: Case) -> None:
    await harness.check(case)
