"""Who and what a runner admits: app paths, unavailable apps, max_buffering, RUNNER_SECRET, binding."""

from __future__ import annotations

import subprocess
import sys

import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import ROOT, RunnerProcess
from tests.runner.wsclient import open_ws, pack, recv, recv_result

SECRET = "s3cret-for-tests-only"


async def refused(url: str, **kwargs: object) -> tuple[dict, int | None]:
    async with await open_ws(url, **kwargs) as ws:
        error = await recv(ws)
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    return error, ws.close_code


@pytest.mark.parametrize(
    ("path", "code", "close_code", "reason"),
    [
        ("/nobody/nothing/realtime", "APP_UNAVAILABLE", 4404, "no app 'nobody/nothing'"),
        ("/local/echo/stream", "APP_UNAVAILABLE", 4404, "has no path 'stream'"),
        ("/local/realtime", "APP_UNAVAILABLE", 4404, "is not /OWNER/ALIAS/realtime"),
        ("/test/broken/realtime", "APP_UNAVAILABLE", 4503, "model file missing"),
        ("/local/echo/realtime?max_buffering=0", "VALIDATION_ERROR", 4400, "max_buffering: must be an integer"),
        ("/local/echo/realtime?max_buffering=61", "VALIDATION_ERROR", 4400, "max_buffering"),
        ("/local/echo/realtime?max_buffering=abc", "VALIDATION_ERROR", 4400, "max_buffering"),
    ],
)
async def test_refused_connections_name_the_reason(
    shared_runner: RunnerProcess, path: str, code: str, close_code: int, reason: str
) -> None:
    async with await open_ws(shared_runner.ws_base + path) as ws:
        error = await recv(ws)
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert error["type"] == "x-fal-error" and error["error"] == code and reason in error["reason"]
    assert (ws.close_code, ws.close_reason) == (close_code, error["reason"])  # the reason in the close frame too


async def test_declared_paths_are_served(shared_runner: RunnerProcess, jpeg_256: bytes) -> None:
    async with await open_ws(shared_runner.ws_base + "/test/paths/stream") as ws:
        await ws.send(pack(prompt="x", image_bytes=jpeg_256, width=256, height=256))
        assert (await recv_result(ws))["images"][0]["width"] == 256


async def test_an_unavailable_app_leaves_the_others_working(shared_runner: RunnerProcess, jpeg_256: bytes) -> None:
    await refused(shared_runner.url("test/broken"))
    async with await open_ws(shared_runner.url("local/stylize")) as ws:
        await ws.send(pack(prompt="fire", image_bytes=jpeg_256, width=128, height=128))
        assert (await recv_result(ws))["images"][0]["height"] == 128


async def test_runner_secret_is_required_when_set(runner_factory, jpeg_256: bytes) -> None:
    runner = runner_factory("--apps", "local/echo", env={"RUNNER_SECRET": SECRET})
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Key {SECRET}"}):
        error, closed_with = await refused(runner.url("local/echo"), additional_headers=headers)
        assert error["error"] == "UNAUTHORIZED" and closed_with == 4401
    async with await open_ws(runner.url("local/echo"), additional_headers={"Authorization": f"Bearer {SECRET}"}) as ws:
        await ws.send(pack(prompt="x", image_bytes=jpeg_256, width=256, height=256))
        assert "images" in await recv_result(ws)
    assert SECRET not in runner.log()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    environment = {k: v for k, v in os.environ.items() if k != "RUNNER_SECRET"}
    return subprocess.run(
        [sys.executable, "-m", "realtime_site.runner", *args],
        cwd=ROOT,
        env={**environment, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_non_loopback_bind_without_secret_is_refused() -> None:
    done = run_cli("--host", "0.0.0.0", "--port", "0", "--apps", "local/echo")
    assert done.returncode == 2 and "without RUNNER_SECRET" in done.stderr


def test_loopback_without_secret_says_so(shared_runner: RunnerProcess) -> None:
    assert "RUNNER_SECRET is not set: listening on loopback only" in shared_runner.log()


@pytest.mark.parametrize(
    ("apps", "problem"),
    [
        ("nobody/nothing", "unknown app"),
        ("bad id=echo", "is not OWNER/ALIAS"),
        ("local/echo,local/echo", "twice"),
        ("t/a=echo?buffering=0", "'t/a': buffering must be an integer from 1 to 60, got '0'"),
        ("t/a=echo?buffering=x", "buffering must be an integer from 1 to 60"),
        ("t/a=echo?session_timeout=0", "session_timeout must be seconds above 0 and at most 86400, got '0'"),
        ("t/a=echo?session_timeout=nan", "session_timeout must be seconds above 0"),
        ("t/a=echo?session_timeout=1e9", "session_timeout must be seconds above 0"),
    ],
)
def test_bad_apps_argument_is_named(apps: str, problem: str) -> None:
    done = run_cli("--port", "0", "--apps", apps)
    assert done.returncode == 2 and problem in done.stderr


def test_runner_never_imports_django() -> None:
    code = (
        "import sys, realtime_site.runner.__main__ as m, realtime_site.runner.server, realtime_site.runner.session\n"
        "from realtime_site.runner.apps import load_apps\n"
        "from realtime_site.runner.config import parse_apps\n"
        "apps = load_apps(parse_apps('local/stylize,local/echo'))\n"
        "assert all(a.state.value == 'ready' for a in apps), [a.reason for a in apps]\n"
        "m.build_parser().parse_args([])\n"
        "prefixes = ('django.', 'channels', 'styletransfer')\n"
        "bad = sorted(n for n in sys.modules if n == 'django' or n.startswith(prefixes))\n"
        "print('imported:', bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_configuration_takes_arguments_over_the_environment() -> None:
    from realtime_site.runner.config import ConfigError, RunnerConfig

    environ = {"RUNNER_PORT": "7", "RUNNER_HOST": "10.0.0.1", "RUNNER_SECRET": "s", "RUNNER_APPS": "local/echo"}
    config = RunnerConfig.from_args(["--port", "9", "--idle-timeout", "5"], environ)
    assert (config.host, config.port, config.secret, config.idle_timeout) == ("10.0.0.1", 9, "s", 5.0)
    assert [app.app_id for app in config.apps] == ["local/echo"]
    with pytest.raises(ConfigError, match=r"refusing to bind 10\.0\.0\.1 without RUNNER_SECRET"):
        RunnerConfig.from_args([], {"RUNNER_HOST": "10.0.0.1"})
