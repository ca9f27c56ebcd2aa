"""Shared rooms in a real browser: three people in three browser contexts (one of them on a second
daphne process, the two sharing Redis) draw one picture. Share turns a drawing into a room; strokes
appear on the others while they are drawn; the result appears on all; a late joiner sees the canvas;
the owner removes a member; after the strokes settle every member's canvas is the same picture; a
member keeps the room's result in their gallery; the room page passes axe-core."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.pages import needs_chromium, stroke
from tests.browser.test_page_fit_and_access import AXE, axe_violations
from tests.gateway.stack import GatewayStack, another_gateway, start_stack
from tests.rooms.live import PASSWORD, make_users

pytestmark = needs_chromium
REDIS_DB = 14


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayStack, GatewayStack]]:
    a = start_stack(tmp_path_factory.mktemp("rooms-browser"), [["--apps", "local/stylize,local/echo"]],
                    {"REDIS_URL": f"redis://127.0.0.1:6379/{REDIS_DB}", "DJANGO_DEBUG": "0"})  # fmt: skip
    try:
        b = another_gateway(a)
    except Exception:
        a.close()
        raise
    make_users(a, "ada", "bea", "cai", "dan")
    yield a, b
    b.close()
    a.close()


def person(browser: Browser, stack: GatewayStack, name: str, path: str = "/") -> Page:
    page = browser.new_context(viewport={"width": 1366, "height": 768}).new_page()
    page.goto(f"{stack.http}/accounts/login/?next={path}")
    page.fill("#id_username", name)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    return page


def digest(page: Page) -> str:
    return page.evaluate("() => window.roomPage.room.digest()")


def settled(pages: list[Page]) -> list[str]:
    """Each member's canvas digest once all show the same canvas version, and nothing is in flight."""
    for _ in range(100):
        versions = {page.evaluate("() => window.roomPage.version()") for page in pages}
        digests = [digest(page) for page in pages]
        if len(versions) == 1 and len(set(digests)) == 1 and 0 not in versions:
            return digests
        pages[0].wait_for_timeout(200)
    return digests


def test_three_people_draw_one_picture(browser: Browser, cluster: tuple[GatewayStack, GatewayStack]) -> None:
    a_gateway, b_gateway = cluster
    ada = person(browser, a_gateway, "ada")
    expect(ada.get_by_test_id("status")).to_have_text("ready", timeout=20_000)
    stroke(ada, [(0.2, 0.2), (0.6, 0.3)])
    ada.get_by_test_id("share-button").click()
    expect(ada).to_have_url(re.compile(r"/rooms/[A-Za-z0-9_-]+/$"))
    link = ada.get_by_test_id("room-link").input_value()
    path = link.split(a_gateway.http, 1)[1]
    assert path == ada.url.split(a_gateway.http, 1)[1]

    bea = person(browser, a_gateway, "bea", path)
    cai = person(browser, b_gateway, "cai", path)  # the other daphne process
    everyone = [ada, bea, cai]
    for page in everyone:
        expect(page.get_by_test_id("status")).to_have_text("connected", timeout=20_000)
        expect(page.get_by_test_id("room-members").locator("li")).to_have_count(3, timeout=20_000)
    expect(cai.get_by_test_id("room-members")).to_contain_text("cai (you)")
    start = settled(everyone)
    assert len(set(start)) == 1  # the shared drawing, on every canvas

    # A stroke shows on the others while it is being drawn: the mouse is still down here.
    box = ada.get_by_test_id("draw-canvas").bounding_box()
    assert box is not None
    ada.mouse.move(box["x"] + 0.1 * box["width"], box["y"] + 0.8 * box["height"])
    ada.mouse.down()
    ada.mouse.move(box["x"] + 0.5 * box["width"], box["y"] + 0.5 * box["height"], steps=15)
    for other in (bea, cai):
        other.wait_for_function("before => window.roomPage.room.digest().then(d => d !== before)", arg=start[1])
    ada.mouse.move(box["x"] + 0.9 * box["width"], box["y"] + 0.9 * box["height"], steps=15)
    ada.mouse.up()
    stroke(cai, [(0.8, 0.1), (0.9, 0.4)])
    drawn = settled(everyone)
    assert len(set(drawn)) == 1 and drawn[0] != start[0]
    for page in everyone:
        expect(page.get_by_test_id("result-image")).to_be_visible(timeout=20_000)

    dan = person(browser, b_gateway, "dan", path)  # late: gets the canvas at once
    expect(dan.get_by_test_id("status")).to_have_text("connected", timeout=20_000)
    assert settled([ada, dan])[1] == drawn[0]
    expect(dan.get_by_test_id("result-image")).to_be_visible(timeout=20_000)

    # The owner removes cai: cai is told and disconnected; the others go on.
    ada.get_by_test_id("room-members").get_by_role("button", name="Remove cai").click()
    expect(cai.locator("#error")).to_contain_text("removed", timeout=20_000)
    expect(cai.get_by_test_id("status")).to_have_text("disconnected", timeout=20_000)
    expect(ada.get_by_test_id("room-members").locator("li")).to_have_count(3, timeout=20_000)
    expect(ada.get_by_test_id("room-members")).not_to_contain_text("cai")

    # Any member keeps the room's result, with the room's canvas as its sketch.
    bea.get_by_test_id("keep-button").click()
    kept = bea.get_by_test_id("kept").get_by_role("link")
    expect(kept).to_be_visible(timeout=20_000)
    bea.goto(f"{a_gateway.http}{kept.get_attribute('href')}")
    expect(bea.get_by_test_id("creation-result")).to_be_visible()
    expect(bea.get_by_test_id("creation-sketch")).to_be_visible()
    expect(bea.get_by_test_id("creation-parameters")).to_contain_text("local/stylize")
    bea.go_back()
    expect(bea.get_by_test_id("status")).to_have_text("connected", timeout=20_000)

    assert AXE.exists()
    assert axe_violations(bea) == []
    for page in [*everyone, dan]:
        page.context.close()
