"""The project's settings on a clone where ``npm ci`` never ran (no front-end packages to find)."""

from realtime_site.settings import *  # noqa: F403

STATICFILES_DIRS = []
