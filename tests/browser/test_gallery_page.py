"""Keeping what one makes, in a real browser: Keep on the drawing page, the gallery's grid, a
creation's page, Remix (the canvas pixels and the parameters come back), the session's strip
(restore), the public link opened logged out (with its preview image), a private link refused,
delete, and a timelapse with as many frames as were recorded."""

from __future__ import annotations

import io
import re

from PIL import Image
from playwright.sync_api import Browser, Page, expect

from tests.browser.pages import logged_in, needs_chromium, pixel, settled_result, stroke
from tests.browser.test_page_fit_and_access import axe_violations
from tests.gateway.stack import GatewayStack

pytestmark = needs_chromium

SAME_PIXELS = """async (sketchUrl) => {
    const bitmap = await createImageBitmap(await (await fetch(sketchUrl)).blob());
    const expected = new OffscreenCanvas(512, 512).getContext('2d');
    expected.drawImage(bitmap, 0, 0, 512, 512);
    const want = expected.getImageData(0, 0, 512, 512).data;
    const canvas = document.querySelector('[data-testid=draw-canvas]');
    const have = canvas.getContext('2d').getImageData(0, 0, 512, 512).data;
    let differing = 0;
    for (let i = 0; i < want.length; i++) if (want[i] !== have[i]) differing++;
    return differing;
}"""


def keep_a_drawing(page: Page) -> str:
    """Draw, wait for the result, Keep it; the creation's page."""
    page.get_by_test_id("prompt-input").fill("a harbour at night")
    page.fill("#seed", "1234")
    stroke(page, [(0.2, 0.2), (0.8, 0.5), (0.3, 0.8)])
    settled_result(page, 0)
    page.get_by_test_id("keep-button").click()
    link = page.get_by_test_id("kept").get_by_role("link")
    expect(link).to_be_visible(timeout=20_000)
    return link.get_attribute("href") or ""


def test_keep_then_the_gallery_and_remix_restores_everything(browser: Browser, stack: GatewayStack) -> None:
    page, console = logged_in(browser, stack)
    url = keep_a_drawing(page)
    assert re.fullmatch(r"/gallery/[A-Za-z0-9_-]+/", url)
    expect(page.get_by_test_id("history-strip").locator("button")).to_have_count(1, timeout=20_000)

    page.goto(f"{stack.http}/gallery/")
    item = page.get_by_test_id("gallery-item").first
    expect(item).to_have_attribute("href", url)
    assert axe_violations(page) == [], "the gallery's grid"
    item.click()
    expect(page.get_by_test_id("creation-result")).to_be_visible()
    assert axe_violations(page) == [], "a creation's page"
    expect(page.get_by_test_id("creation-parameters")).to_contain_text("1234")
    sketch = page.get_by_test_id("creation-sketch").get_attribute("src")

    page.get_by_test_id("remix").click()
    expect(page).to_have_url(re.compile(r"\?remix="))
    expect(page.get_by_test_id("prompt-input")).to_have_value("a harbour at night", timeout=20_000)
    expect(page.locator("#seed")).to_have_value("1234")
    expect(page.get_by_test_id("app-select")).to_have_value("local/stylize")
    page.wait_for_function(
        "() => Number(document.querySelector('[data-testid=result-image]').dataset.requestId || 0) > 0", timeout=20_000
    )
    assert page.evaluate(SAME_PIXELS, sketch) == 0  # the canvas is the kept sketch, pixel for pixel
    assert console.errors == []
    page.close()


def test_the_strip_restores_an_earlier_moment(browser: Browser, stack: GatewayStack) -> None:
    page, _ = logged_in(browser, stack)
    page.get_by_test_id("prompt-input").fill("first")
    stroke(page, [(0.1, 0.1), (0.4, 0.4)])
    settled_result(page, 0)
    strip = page.get_by_test_id("history-strip").locator("button")
    expect(strip).to_have_count(1, timeout=20_000)
    page.get_by_test_id("prompt-input").fill("second")
    stroke(page, [(0.6, 0.1), (0.9, 0.9)])
    expect(strip).to_have_count(2, timeout=20_000)
    assert max(pixel(page, 0.75, 0.5)[:3]) < 128  # the second stroke is on the canvas
    strip.nth(1).click()  # the older one: newest first
    expect(page.get_by_test_id("restore-button")).to_be_visible()
    page.get_by_test_id("restore-button").click()
    expect(page.get_by_test_id("prompt-input")).to_have_value("first")
    page.wait_for_function(
        """() => { const c = document.querySelector('[data-testid=draw-canvas]');
                   return Math.min(...c.getContext('2d').getImageData(384, 256, 1, 1).data.slice(0, 3)) > 200; }"""
    )
    assert min(pixel(page, 0.75, 0.5)[:3]) > 200  # the first moment's drawing: that spot is white again
    assert max(pixel(page, 0.25, 0.25)[:3]) < 128  # and the first stroke is there
    page.close()


def test_a_public_link_works_logged_out_and_a_private_one_does_not(browser: Browser, stack: GatewayStack) -> None:
    page, _ = logged_in(browser, stack)
    url = keep_a_drawing(page)
    page.goto(f"{stack.http}{url}")
    toggle = page.get_by_test_id("share-toggle")
    toggle.check()
    link = page.get_by_test_id("share-link")
    expect(link).to_be_visible()
    public = link.input_value()
    assert public.endswith(url)

    stranger = browser.new_context().new_page()
    stranger.goto(public)
    expect(stranger.get_by_test_id("creation-result")).to_be_visible()
    preview = stranger.locator('meta[property="og:image"]').get_attribute("content") or ""
    assert preview.endswith(f"{url}result")
    assert stranger.request.get(preview).status == 200

    toggle.uncheck()
    expect(link).to_be_hidden()
    assert stranger.goto(public).status == 404  # private again: as if there were none
    page.get_by_test_id("delete").click()
    expect(page).to_have_url(f"{stack.http}/gallery/")
    assert page.request.get(f"{stack.http}{url}").status == 404
    stranger.context.close()
    page.close()


def test_a_timelapse_has_as_many_frames_as_were_recorded(browser: Browser, stack: GatewayStack) -> None:
    page, console = logged_in(browser, stack)
    page.get_by_test_id("record-button").click()
    expect(page.get_by_test_id("record-button")).to_have_attribute("aria-pressed", "true")
    last = 0
    for i in range(4):
        stroke(page, [(0.1 + 0.2 * i, 0.2), (0.2 + 0.2 * i, 0.8)])
        last = settled_result(page, last)
    page.get_by_test_id("record-button").click()
    kept = page.get_by_test_id("kept")
    expect(kept.get_by_role("link")).to_be_visible(timeout=30_000)
    recorded = int(kept.get_attribute("data-frames") or 0)
    assert recorded >= 4  # every result shown while recording (a stroke may bring more than one)
    url = kept.get_by_role("link").get_attribute("href")
    animation = page.request.get(f"{stack.http}{url}result")
    assert animation.headers["content-type"] == "image/webp"
    with Image.open(io.BytesIO(animation.body())) as webp:
        assert webp.format == "WEBP" and webp.n_frames == recorded
    page.goto(f"{stack.http}{url}")
    expect(page.get_by_test_id("creation-result")).to_be_visible()
    assert console.errors == []
    page.close()
