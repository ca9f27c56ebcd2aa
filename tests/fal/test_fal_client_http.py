"""The published Python client's HTTP calls against our server, unchanged but for where they connect:
``fal_client`` 1.0.3 ``stream`` and ``run`` with their async forms, pointed here through its
``RUN_URL_FORMAT`` (``https://fal.run/`` by default), with a real API key of ours. Its SSE parser is
``httpx-sse``, which turns any ``id:``, ``retry:`` or bare ``event:`` line into an empty event and
a crash: these calls passing is that wire form holding."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import fal_client
import fal_client.client
import pytest

from tests.conftest import drawing, encode
from tests.gateway.stack import GatewayStack, start_stack

IMAGE_URL = "data:image/png;base64," + base64.b64encode(encode(drawing(64, 64), "PNG")).decode()
ARGUMENTS = {"prompt": "starry night", "image_url": IMAGE_URL, "seed": 42, "image_size": "square"}


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    stack: GatewayStack = start_stack(tmp_path_factory.mktemp("fal-http"), [["--apps", "local/stylize,local/echo"]])
    make = "get_user_model().objects.create_user('ida')"
    stack.manage("shell", "-c", f"from django.contrib.auth import get_user_model; {make}")
    original = fal_client.client.RUN_URL_FORMAT
    fal_client.client.RUN_URL_FORMAT = f"{stack.http}/"  # only where it connects changes
    yield stack.manage("create_api_key", "ida").strip()
    fal_client.client.RUN_URL_FORMAT = original
    stack.close()


@pytest.fixture
def sync(key: str) -> Iterator[fal_client.SyncClient]:
    client = fal_client.SyncClient(key=key)
    yield client
    if "_client" in client.__dict__:  # its httpx client, made on first use
        client._client.close()


def test_stream_yields_the_preview_then_the_result(sync: fal_client.SyncClient) -> None:
    events = list(sync.stream("local/stylize", arguments=ARGUMENTS))
    assert [event.get("partial", False) for event in events] == [True, False]
    assert events[0]["images"][0]["width"] < events[-1]["images"][0]["width"] == 512
    assert events[-1]["seed"] == 42


def test_run_returns_the_result(sync: fal_client.SyncClient) -> None:
    result = sync.run("local/echo", arguments=ARGUMENTS)
    assert result["images"][0]["url"].startswith("data:image/jpeg;base64,") and result["seed"] == 42


async def test_async_stream_and_run(key: str) -> None:
    client = fal_client.AsyncClient(key=key)
    try:
        events = [event async for event in client.stream("local/stylize", arguments=ARGUMENTS)]
        assert events[-1]["images"][0]["height"] == 512 and events[0]["partial"] is True
        result = await client.run("local/stylize", arguments=ARGUMENTS)
        assert result["images"][0]["width"] == 512
    finally:
        await (await client._client).aclose()


def test_a_bad_input_is_an_error_the_client_raises(sync: fal_client.SyncClient) -> None:
    with pytest.raises(fal_client.client.FalClientHTTPError) as error:
        sync.run("local/echo", arguments={"prompt": "no picture"})
    assert error.value.status_code == 422 and "image" in str(error.value)
