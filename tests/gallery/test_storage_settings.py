"""Where the gallery's files go, from the environment: the local file system under the var directory
by default; an S3-compatible bucket (django-storages, objects private, signed URLs) with
REALTIME_S3_BUCKET and REALTIME_S3_ENDPOINT_URL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

SHOW = (
    "import json, django; django.setup(); from django.conf import settings; "
    "print(json.dumps({'default': settings.STORAGES['default'], 'media': str(settings.MEDIA_ROOT)}))"
)


def storages(tmp_path: Path, **env: str) -> dict:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("REALTIME_S3")}
    environment |= {"DJANGO_SETTINGS_MODULE": "realtime_site.settings", "REALTIME_VAR_DIR": str(tmp_path), **env}
    done = subprocess.run([sys.executable, "-c", SHOW], cwd=ROOT, env=environment, capture_output=True, text=True,
                          check=True)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_files_go_under_the_var_directory_by_default(tmp_path: Path) -> None:
    found = storages(tmp_path)
    assert found["default"]["BACKEND"] == "django.core.files.storage.FileSystemStorage"
    assert found["media"] == str(tmp_path / "media")


def test_a_bucket_from_the_environment_is_an_s3_store_with_private_objects(tmp_path: Path) -> None:
    found = storages(tmp_path, REALTIME_S3_BUCKET="kept-things", REALTIME_S3_ENDPOINT_URL="https://s3.example.test")
    assert found["default"] == {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {"bucket_name": "kept-things", "endpoint_url": "https://s3.example.test", "default_acl": "private",
                    "querystring_auth": True},
    }  # fmt: skip
