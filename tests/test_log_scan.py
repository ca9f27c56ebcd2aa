"""The run-wide log scan (``tests/logs.py``): planted credentials are found and masked, clean logs pass,
and a pytest run that leaks one fails (a child pytest with the plugin alone, on planted tests).

What is planted lives outside this run's basetemp (``outside``), or this run's own scan would find it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from django.contrib.auth import get_user_model

from realtime_site.accounts import keys
from tests.conftest import ROOT
from tests.logs import RUN, LogScan, install, mask

TOKEN = jwt.encode({"sub": "1", "apps": ["echo"], "jti": "planted"}, "a signing key for the scanner's tests")
KEY = "0123456789abcdef:" + "S" * 21 + "ecret" + "s" * 17  # the shape of create_api_key's
PASSWORD = "hunter2-not-a-pw-shape"  # only found because it is recorded
CLEAN = """\
127.0.0.1:5000 - - [01/Dec/2026:23:45:47] "GET /accounts/login/" 200 2345
127.0.0.1:5000 - - [01/Dec/2026:23:45:48] "WSCONNECT /local/echo/realtime" - -
INFO realtime_site.gateway: refused: UNAUTHORIZED (no API key: send Authorization: Key KEY_ID:KEY_SECRET)
INFO realtime_site.gateway: admitted: user=3 app=local/echo auth=jwt
"""


@pytest.fixture
def outside() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="log-scan-") as folder:
        yield Path(folder)


def planted(scan: LogScan, path: Path) -> list[str]:
    path.write_text(
        CLEAN
        + f'127.0.0.1:5000 - - "GET /api/apps?fal_jwt_token={TOKEN}" 200 12\n'
        + f"WARNING realtime_site.gateway: refused key {KEY} for carol\n"
        + f"login of carol with {PASSWORD} failed\n"
        + f"signature only: {TOKEN.rsplit('.', 1)[1]}\n"
        + f"upstream refused the token {TOKEN}\n"
        + "Cookie: sessionid=0123456789abcdefghijklmnopqrstuv; csrftoken=x\n"
        + "create_user('carol', password='pw-carol-123')\n"
    )
    scan.add_file(path, "daphne.log")
    return [TOKEN, KEY.split(":")[1], PASSWORD, TOKEN.rsplit(".", 1)[1], "pw-carol-123"]


def test_planted_credentials_in_a_log_file_are_found_masked_and_placed(outside: Path) -> None:
    scan = LogScan()
    scan.remember("token", TOKEN)
    scan.remember("password", PASSWORD)
    values = planted(scan, outside / "daphne.log")
    report = scan.scan()
    assert [(f.source, f.line_no) for f in report.findings] == [("daphne.log", n) for n in range(5, 12)]
    assert [f.kinds for f in report.findings] == [
        ("token", "token in a query", "token signature"),
        ("API key",),
        ("password",),
        ("token signature",),
        ("JWT", "token", "token signature"),
        ("session cookie",),
        ("test password",),
    ]
    shown = "\n".join(map(str, report.findings))
    assert not any(value in shown for value in values), shown
    assert (
        "daphne.log:6: [API key] WARNING realtime_site.gateway: refused key 0123…<API key, 60 chars> for carol" in shown
    )
    assert (
        'daphne.log:5: [token, token in a query, token signature] 127.0.0.1:5000 - - "GET /api/apps?fal_jwt_token=eyJh…'
        in shown
    )


def test_shapes_alone_catch_what_was_never_recorded(outside: Path) -> None:
    """A token minted by daphne, a key printed by another process: found by their shapes."""
    scan = LogScan()
    planted(scan, outside / "daphne.log")
    found = {kind for finding in scan.scan().findings for kind in finding.kinds}
    assert found == {"JWT", "token in a query", "API key", "session cookie", "test password"}  # PASSWORD is missed


def test_a_log_record_and_its_traceback_are_scanned() -> None:
    scan = LogScan()
    scan.remember("password", PASSWORD)
    try:
        raise ValueError(f"bad password {PASSWORD}")
    except ValueError:
        exc_info = sys.exc_info()
    args = ("realtime_site.gateway", logging.WARNING, __file__, 1, "refused %s", (TOKEN,), exc_info)
    scan.record(logging.LogRecord(*args))
    scan.record(logging.LogRecord("realtime_site.gateway", logging.INFO, __file__, 2, "all fine", (), None))
    findings = scan.scan().findings
    assert [f.source for f in findings] == ["logging in the pytest process"] * 2
    assert findings[0].line.startswith("WARNING realtime_site.gateway: refused eyJ") and "password" in str(findings[1])
    assert all(TOKEN not in str(f) and PASSWORD not in str(f) for f in findings)


def test_a_clean_log_passes_and_a_missing_one_is_named(outside: Path) -> None:
    scan = LogScan()
    scan.remember("token", TOKEN)
    (outside / "daphne.log").write_text(CLEAN)
    scan.add_file(outside / "daphne.log")
    scan.add_file(outside / "never-written.log")
    scan.add_output("runner", ["runner listening on ws://127.0.0.1:5001\n"])
    report = scan.scan()
    assert report.findings == [] and report.lines == 5 and report.missing == [str(outside / "never-written.log")]


def test_mask_merges_overlaps_and_keeps_the_rest() -> None:
    line = "a secret-value-here b"
    assert mask(line, [(2, 8, "x"), (4, 19, "y")]) == "a secr…<x, 17 chars> b"
    assert mask("z" * 500, []) == "z" * 400 + "…"


def test_install_records_tokens_made_and_checked_and_a_childs_stderr() -> None:
    scan = LogScan()
    uninstall = install(scan)
    try:
        made = jwt.encode({"sub": "2"}, "another key for the scanner's own test")
        with pytest.raises(jwt.DecodeError):
            jwt.decode("eyJhbGciOi.garbage-presented.x", options={"verify_signature": False})
        get_user_model()(username="unsaved").set_password("pw-unsaved-123456")
        keys._hash("a-presented-secret-0123")  # what create_api_key and authenticate_key hash
        subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('said on stderr')"], capture_output=True)
    finally:
        uninstall()
    assert scan.credentials[made] == "token" and scan.credentials[made.rsplit(".", 1)[1]] == "token signature"
    assert scan.credentials["eyJhbGciOi.garbage-presented.x"] == "token"  # refused, and still a credential
    assert scan.credentials["pw-unsaved-123456"] == "password"
    assert scan.credentials["a-presented-secret-0123"] == "API key secret"
    assert RUN.credentials[made] == "token"  # this run's own scan is installed (tests/conftest.py) and saw it too
    assert any("said on stderr" in "".join(lines) for _, lines in scan.outputs)
    jwt.encode({"sub": "3"}, "after the uninstall, a key nobody records")
    assert not [value for value in scan.credentials if "nobody records" in value]


PLANTED_TESTS = """
import logging
from tests.logs import RUN

def test_writes_logs(tmp_path):
    (tmp_path / "daphne.log").write_text({file_line!r})
    RUN.add_output("runner", [{runner_line!r}])
    logging.getLogger("realtime_site.gateway").warning({record!r}, {record_arg!r})
"""


def child_pytest(folder: Path, **lines: str) -> subprocess.CompletedProcess[str]:
    """A pytest run with only the scan's plugin (no Django) over one planted test."""
    (folder / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    (folder / "test_planted.py").write_text(textwrap.dedent(PLANTED_TESTS.format(**lines)))
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    args = ["-p", "tests.logs", "-p", "no:cacheprovider", "-c", folder / "pytest.ini", "--rootdir", folder]
    return subprocess.run(
        [sys.executable, "-m", "pytest", *args, "--basetemp", folder / "basetemp", folder / "test_planted.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_run_that_leaks_fails_and_prints_the_lines_masked(outside: Path) -> None:
    done = child_pytest(
        outside,
        file_line=f"GET /local/echo/realtime?fal_jwt_token={TOKEN} 101\n",
        runner_line=f"connection refused: bad secret {KEY}\n",
        record="admitted with %s",
        record_arg=TOKEN,
    )
    out = done.stdout
    assert done.returncode == 1 and "1 passed" in out, out + done.stderr
    assert "credentials in 3 log lines" in out
    assert "daphne.log:1: [token in a query] GET /local/echo/realtime?fal_" in out
    assert "test_planted.py::test_writes_logs]:1: [API key] connection refused: bad secret 0123…<API key, 60" in out
    assert "logging in the pytest process:1: [JWT] [in " in out
    assert "WARNING realtime_site.gateway: admitted with eyJh…<JWT, " in out
    assert TOKEN not in out + done.stderr and KEY.split(":")[1] not in out + done.stderr


def test_a_run_with_clean_logs_passes(outside: Path) -> None:
    done = child_pytest(outside, file_line=CLEAN, runner_line="runner listening\n", record="%s", record_arg="fine")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "log scan: no credential in 6 lines of 3 logs" in done.stdout
