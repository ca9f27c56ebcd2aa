"""System checks for what the gateway's pages need at run time (``manage.py check``; daphne at start).

The drawing page and the dashboard import front-end packages from ``frontend/node_modules``, which
``npm ci`` installs. Without them a page would sit at "connecting" with no error anywhere; this
check names the missing files and the command that installs them.
"""

from __future__ import annotations

from typing import Any

from django.contrib.staticfiles import finders
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

__all__ = ["FRONTEND_FILES", "TAG", "frontend_installed", "refuse_to_start_when_broken"]

TAG = "realtime"
# Every node_modules file a template refers to (templates/draw.html, templates/admin/usage_dashboard.html).
FRONTEND_FILES = (
    "node_modules/@msgpack/msgpack/dist.esm/index.mjs",
    "node_modules/uplot/dist/uPlot.esm.js",
    "node_modules/uplot/dist/uPlot.min.css",
)


@checks.register(TAG)
def frontend_installed(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    missing = [path for path in FRONTEND_FILES if not finders.find(path)]
    if not missing:
        return []
    return [
        checks.Error(
            f"front-end packages are not installed (missing: {', '.join(missing)})",
            hint="run `cd frontend && npm ci` (or `make setup`), then start again",
            id="realtime.E001",
        )
    ]


def refuse_to_start_when_broken() -> None:
    """At the gateway's start (daphne imports the ASGI app): stop with the check's message and hint."""
    errors = [m for m in checks.run_checks(tags=[TAG]) if m.is_serious()]
    if errors:
        lines = "\n".join(f"{m.id}: {m.msg}\n  HINT: {m.hint}" for m in errors)
        raise ImproperlyConfigured(f"the gateway cannot start:\n{lines}")
