"""The drawing page shows an app's image forming step by step when the person asks for it: the
choice appears only for apps whose runner reports previews, each step is shown marked "step S of N"
at preview size, and the input's result replaces it. Without the choice, no step is ever shown."""

from __future__ import annotations

import re

from playwright.sync_api import Browser, Page, expect

from tests.browser.pages import logged_in, needs_chromium, settled_result, stroke
from tests.gateway.stack import GatewayStack

pytestmark = needs_chromium

WATCH_STEPS = """() => {
    const badge = document.getElementById('step');
    window.stepsSeen = [];
    new MutationObserver(() => {
        if (!badge.hidden) window.stepsSeen.push(badge.textContent);
    }).observe(badge, {attributes: true, childList: true, characterData: true, subtree: true});
}"""


def result_width(page: Page) -> int:
    return page.get_by_test_id("result-image").evaluate("img => img.naturalWidth")


def test_the_choice_is_offered_only_where_the_app_shows_its_steps(browser: Browser, stack: GatewayStack) -> None:
    page, console = logged_in(browser, stack)
    apps = page.evaluate("async () => (await (await fetch('/api/apps')).json()).apps")
    shows = {app["id"]: app["previews"] for app in apps}
    assert shows["local/stylize"] and shows["test/steps"] and not shows["local/echo"]
    assert not shows["fal-ai/fast-lcm-diffusion"]  # not loaded here: nothing is known of it
    field = page.get_by_test_id("show-steps-field")
    expect(field).to_be_visible()  # local/stylize: a quarter-size pass before the full one
    page.get_by_test_id("app-select").select_option("local/echo")
    expect(field).to_be_hidden()  # echo answers at once: nothing to watch
    page.get_by_test_id("app-select").select_option("test/steps")
    expect(field).to_be_visible()
    assert console.errors == []
    page.close()


def test_each_step_is_shown_until_the_result_replaces_it(browser: Browser, stack: GatewayStack) -> None:
    page, console = logged_in(browser, stack)
    page.get_by_test_id("app-select").select_option("test/steps")
    page.evaluate(WATCH_STEPS)
    stroke(page, [(0.2, 0.2), (0.8, 0.6)])
    first = settled_result(page, 0)
    assert page.evaluate("window.stepsSeen") == []  # not asked for: results only
    assert result_width(page) == 512

    page.get_by_test_id("show-steps").check()  # reconnects, asking for the steps
    stroke(page, [(0.3, 0.8), (0.7, 0.2)])
    badge = page.get_by_test_id("step")
    expect(badge).to_have_text(re.compile(r"^step [12] of 3$"), timeout=20_000)
    page.wait_for_function("() => document.getElementById('result').naturalWidth > 0")
    assert result_width(page) <= 256  # a preview, not the result
    settled_result(page, first)
    expect(badge).to_be_hidden()
    assert result_width(page) == 512
    seen = page.evaluate("window.stepsSeen")
    assert set(seen) <= {"step 1 of 3", "step 2 of 3"} and "step 1 of 3" in seen, seen
    assert console.errors == []
    page.close()
