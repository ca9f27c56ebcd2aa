"""The recorder on PostgreSQL, where columns are strict: over-long or NUL text is made to fit, a row
PostgreSQL refuses is set aside by itself, and every other row of the same round is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT


def test_recorder_on_postgres_sets_aside_only_the_refused_row(database: str, tmp_path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DJANGO_SETTINGS_MODULE")},
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{database}",
        "REALTIME_VAR_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.usage.pg_round"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert result["written"] == {"good": 1, "long_app": 2, "nul_agent": 3, "gone_user": 5}
    assert (result["app_length"], result["agent"]) == (200, "ab")
    assert list(result["set_aside"]) == ["huge_user"] and "out of range" in result["set_aside"]["huge_user"]
    assert result["backlog"] == 0
    assert "set aside" in done.stderr and done.stderr.count("set aside") == 1
