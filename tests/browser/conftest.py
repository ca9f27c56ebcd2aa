"""The browser tests' fixtures: one real stack (daphne + a runner) and Debian's chromium per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.browser.pages import APPS, CHROMIUM, PASSWORD, TOKEN_LIFETIME
from tests.gateway.stack import GatewayStack, start_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    stack = start_stack(
        tmp_path_factory.mktemp("browser"),
        [["--apps", APPS]],
        {"REALTIME_TOKEN_MAX_LIFETIME": str(TOKEN_LIFETIME), "DJANGO_DEBUG": "0"},
    )
    make = f"get_user_model().objects.create_user('frida', password={PASSWORD!r})"
    stack.manage("shell", "-c", f"from django.contrib.auth import get_user_model; {make}")
    yield stack
    stack.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run",
                "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            ],
        )  # fmt: skip
        yield browser
        browser.close()
