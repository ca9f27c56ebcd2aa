"""The project installed (`pip install -e .`, which `make setup` does): the client's command line works
from any folder, as `realtime-client` and as `python -m realtime_site.client`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.gateway.stack import GatewayStack, start_stack

SCRIPTS = Path(sys.executable).parent


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    stack = start_stack(tmp_path_factory.mktemp("installed"), [["--apps", "local/stylize"]])
    make = "get_user_model().objects.create_user('ines')"
    stack.manage("shell", "-c", f"from django.contrib.auth import get_user_model; {make}")
    stack.key = stack.manage("create_api_key", "ines").strip()  # type: ignore[attr-defined]
    yield stack
    stack.close()


@pytest.mark.parametrize("command", [["realtime-client"], [sys.executable, "-m", "realtime_site.client"]])
def test_the_command_line_runs_from_outside_the_repository(
    stack: GatewayStack, tmp_path: Path, command: list[str]
) -> None:
    script = SCRIPTS / command[0]
    if command == ["realtime-client"]:
        assert script.exists(), f"{script} is missing: install the project with `pip install -e .` (make setup)"
        command = [str(script)]
    shutil.copy(ROOT / "examples" / "drawing.png", tmp_path / "drawing.png")
    done = subprocess.run(
        [*command, "local/stylize", "--prompt", "starry night", "--image", "drawing.png", "--out", "out.jpg"],
        cwd=tmp_path,  # not the repository: the installed package is what runs
        env={"PATH": "/usr/bin:/bin", "REALTIME_BASE_URL": stack.http, "REALTIME_KEY": stack.key},  # type: ignore[attr-defined]
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out.jpg").read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG


def test_the_console_scripts_say_their_own_name(tmp_path: Path) -> None:
    done = subprocess.run([str(SCRIPTS / "realtime-client"), "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("usage: realtime-client ")
    done = subprocess.run([str(SCRIPTS / "realtime-runner"), "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0 and "--apps" in done.stdout
