"""The TLS proxy settings as the environment gives them, read by a fresh Django process each time."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT

SHOWN = (
    "SECURE_PROXY_SSL_HEADER",
    "REALTIME_PROXY_HEADERS",
    "CSRF_TRUSTED_ORIGINS",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
)
PRINT = (
    "import django, json; django.setup(); from django.conf import settings as s; "
    f"print(json.dumps({{n: getattr(s, n, None) for n in {SHOWN!r}}}))"
)


def settings_with(tmp_path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "REALTIME_"))}
    full = {**clean, "DJANGO_SETTINGS_MODULE": "realtime_site.settings", "REALTIME_VAR_DIR": str(tmp_path), **env}
    return subprocess.run([sys.executable, "-c", PRINT], cwd=ROOT, env=full, capture_output=True, text=True, timeout=60)


def test_settings_behind_the_proxy(tmp_path) -> None:
    done = settings_with(
        tmp_path,
        DJANGO_SECURE_PROXY_SSL_HEADER="1",
        REALTIME_PROXY_HEADERS="1",
        DJANGO_CSRF_TRUSTED_ORIGINS="https://a.example.org, https://b.example.org:8443",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
        "REALTIME_PROXY_HEADERS": True,
        "CSRF_TRUSTED_ORIGINS": ["https://a.example.org", "https://b.example.org:8443"],
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
    }


def test_settings_without_the_proxy(tmp_path) -> None:
    done = settings_with(tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "SECURE_PROXY_SSL_HEADER": None,
        "REALTIME_PROXY_HEADERS": False,
        "CSRF_TRUSTED_ORIGINS": [],
        "SESSION_COOKIE_SECURE": False,
        "CSRF_COOKIE_SECURE": False,
    }


def test_settings_refuse_a_switch_the_shell_would_read_differently(tmp_path) -> None:
    done = settings_with(tmp_path, REALTIME_PROXY_HEADERS="yes")
    assert done.returncode != 0
    assert "REALTIME_PROXY_HEADERS must be 0 or 1, not 'yes'" in done.stderr
