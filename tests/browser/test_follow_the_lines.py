"""The drawing page with an app that has a ControlNet (a tiny random-weight SD-Turbo and ControlNet,
loaded by the real loading code): the app selector says what each app follows, the mode is offered
only where the app has lines to follow, and the two modes give different pictures of one drawing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect

from tests.browser.pages import (
    PASSWORD,
    TOKEN_LIFETIME,
    logged_in,
    needs_chromium,
    result_digest,
    settled_result,
    stroke,
)
from tests.gateway.stack import GatewayStack, start_stack

pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytestmark = [
    needs_chromium,
    pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning"),
]

from tests.runner.tiny_pipeline import build, build_controlnet  # noqa: E402

TURBO = "fal-ai/fast-turbo-diffusion"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    weights = tmp_path_factory.mktemp("tiny-sd")
    model = build(weights, scheduler="euler")
    with pytest.MonkeyPatch.context() as env:  # the runner's environment, as an operator sets it
        env.setenv("HF_HUB_OFFLINE", "1")
        env.setenv("REALTIME_TURBO_MODEL", str(model))
        env.setenv("REALTIME_TURBO_CONTROLNET", str(build_controlnet(model, weights)))
        stack = start_stack(
            tmp_path_factory.mktemp("lines"),
            [["--apps", f"{TURBO},local/stylize"]],
            {"REALTIME_TOKEN_MAX_LIFETIME": str(TOKEN_LIFETIME), "DJANGO_DEBUG": "0"},
        )
    make = f"get_user_model().objects.create_user('frida', password={PASSWORD!r})"
    stack.manage("shell", "-c", f"from django.contrib.auth import get_user_model; {make}")
    yield stack
    stack.close()


def test_the_selector_says_what_each_app_follows_and_the_mode_is_offered_where_it_can_be(
    browser: Browser, stack: GatewayStack
) -> None:
    page, console = logged_in(browser, stack)
    select = page.get_by_test_id("app-select")
    expect(select.locator(f"option[value='{TURBO}']")).to_have_text(f"{TURBO} · follows image + lines (ControlNet)")
    expect(select.locator("option[value='local/stylize']")).to_have_text("local/stylize · follows image")
    mode, strength = page.get_by_test_id("mode-field"), page.locator(".field[data-param=strength]")
    expect(mode).to_be_hidden()  # local/stylize is chosen first
    select.select_option(TURBO)
    expect(mode).to_be_visible()
    expect(strength).to_have_class("field ignored")  # along the lines, a picture starts from noise
    page.get_by_test_id("mode").select_option("image")
    expect(strength).to_have_class("field")
    select.select_option("local/stylize")
    expect(mode).to_be_hidden()
    assert console.errors == []
    page.close()


def test_the_two_modes_paint_one_drawing_differently(browser: Browser, stack: GatewayStack) -> None:
    page, console = logged_in(browser, stack)
    page.get_by_test_id("app-select").select_option(TURBO)
    page.locator("#size").select_option("256")  # a tiny model on the CPU still pays for every pixel
    stroke(page, [(0.2, 0.2), (0.8, 0.8)])
    along_lines = settled_result(page, 0, timeout=60_000)
    lines_digest = result_digest(page)
    page.get_by_test_id("mode").select_option("image")
    from_picture = settled_result(page, along_lines, timeout=60_000)
    picture_digest = result_digest(page)
    assert picture_digest != lines_digest
    page.get_by_test_id("mode").select_option("lines")
    settled_result(page, from_picture, timeout=60_000)
    assert result_digest(page) == lines_digest  # the same drawing, seed and mode: the same picture
    assert console.errors == []
    page.close()
