"""Which front-end files the site serves: its own scripts and styles, and the two npm packages its
pages import (``@msgpack/msgpack``, ``uplot``), never the rest of ``frontend/`` (test tooling such as
jest, the JS tests, the lockfile). ``collectstatic`` copies and compresses only these."""

from __future__ import annotations

from django.contrib.staticfiles.apps import StaticFilesConfig


class FrontendStaticFiles(StaticFilesConfig):
    """``django.contrib.staticfiles``; the packages are listed in settings.STATICFILES_DIRS."""

    ignore_patterns = [
        *StaticFilesConfig.ignore_patterns,
        "node_modules",  # served package by package, from STATICFILES_DIRS
        "tests",
        "fal-js-spec",
        "package.json",
        "package-lock.json",
        "jest.config.cjs",
    ]
