"""The wire contract has one source, ``realtime_site/protocol/``: the JS client's copy of its names
and numbers (``frontend/realtime.js``, read by node itself) must agree with it."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from realtime_site.protocol import HTTP_STATUS, MAX_BUFFERING_RANGE, CloseCode, ErrorCode
from tests.conftest import ROOT

PRINT = """
import * as client from "./realtime.js";
console.log(JSON.stringify({
  closeCodes: client.CLOSE_CODE, maxBuffering: client.MAX_BUFFERING_RANGE, status: client.ERROR_STATUS,
  fatalCloses: [...client.FATAL_CLOSE_CODES], fatalErrors: [...client.FATAL_ERRORS],
}));
"""


@pytest.fixture(scope="module")
def js() -> dict:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    done = subprocess.run(
        [node, "--input-type=module", "-e", PRINT], cwd=ROOT / "frontend", capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_js_close_codes_are_the_protocols(js: dict) -> None:
    assert js["closeCodes"] == {name: CloseCode[name].value for name in js["closeCodes"]}
    assert set(js["fatalCloses"]) <= {code.value for code in CloseCode}


def test_the_js_error_codes_and_buffering_range_are_the_protocols(js: dict) -> None:
    assert set(js["status"]) | set(js["fatalErrors"]) <= {code.value for code in ErrorCode}
    assert js["status"] == {code: HTTP_STATUS[ErrorCode(code)] for code in js["status"]}  # the HTTP endpoints' too
    assert tuple(js["maxBuffering"]) == MAX_BUFFERING_RANGE
