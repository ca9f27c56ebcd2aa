"""Startup tells the truth: without the front-end packages, the gateway refuses to start and says why."""

from __future__ import annotations

import os
import subprocess
import sys

from realtime_site.gateway.checks import frontend_installed
from tests.conftest import ROOT
from tests.gateway.stack import free_port


def test_frontend_check_passes_on_an_installed_checkout() -> None:
    assert frontend_installed() == []


def test_frontend_check_names_the_missing_files_and_the_fix(settings, tmp_path) -> None:
    settings.STATICFILES_DIRS = [tmp_path]
    (error,) = frontend_installed()
    assert error.id == "realtime.E001" and "@msgpack/msgpack" in error.msg and "npm ci" in error.hint


def _without_frontend(*args: str, tmp_path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.gateway.settings_without_frontend",
        "REALTIME_VAR_DIR": str(tmp_path),
    }
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_daphne_refuses_to_start_without_the_frontend(tmp_path) -> None:
    done = _without_frontend(
        "-m", "daphne", "-b", "127.0.0.1", "-p", str(free_port()), "realtime_site.asgi:application", tmp_path=tmp_path
    )
    assert done.returncode != 0
    assert "realtime.E001" in done.stderr and "npm ci" in done.stderr


def test_serve_refuses_to_start_without_the_frontend(tmp_path) -> None:
    done = _without_frontend("manage.py", "serve", "--port", str(free_port()), tmp_path=tmp_path)
    assert done.returncode != 0
    assert "realtime.E001" in done.stderr and "npm ci" in done.stderr
