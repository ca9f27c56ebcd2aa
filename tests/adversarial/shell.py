"""One long-lived ``manage.py shell`` of a stack: the ORM in milliseconds instead of a process per query.

Each request is a line of Python (an expression, or statements) evaluated in a namespace that holds
the project's models; the answer comes back as JSON on a line marked with a record separator, so
whatever else the shell prints (logs, warnings) is skipped.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from typing import Any

from tests.conftest import ROOT
from tests.gateway.stack import GatewayStack

__all__ = ["DjangoShell", "ShellError"]

MARK = "\x1e"
_LOOP = r"""
import json, sys
from datetime import datetime, timedelta
from django.db import close_old_connections
from django.contrib.auth import get_user_model
from django.utils import timezone
from realtime_site.accounts.keys import create_api_key
from realtime_site.accounts.models import ApiKey, IssuedToken, UserLimits
from realtime_site.usage.models import ConnectionRecord
ns = dict(globals())
ns["User"] = get_user_model()
for line in sys.stdin:
    code = json.loads(line)
    close_old_connections()  # a connection broken by a fault is replaced, not reused
    try:
        try:
            compiled, statement = compile(code, "<case>", "eval"), False
        except SyntaxError:
            compiled, statement = compile(code, "<case>", "exec"), True
        value = eval(compiled, ns)
        answer = {"value": ns.pop("result", None) if statement else value}
    except Exception as exc:
        answer = {"error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write("\x1e" + json.dumps(answer, default=str) + "\n")
    sys.stdout.flush()
"""


class ShellError(RuntimeError):
    """The code raised in the shell; the message is its type and text."""


class DjangoShell:
    def __init__(self, stack: GatewayStack, env: dict[str, str] | None = None):
        """``env`` overrides the stack's (the tests' observer may reach the database directly)."""
        self._process = subprocess.Popen(
            [sys.executable, "manage.py", "shell", "-v", "0", "-c", _LOOP],
            cwd=ROOT,
            env={**stack.env, **(env or {})},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._lock = threading.Lock()

    def __call__(self, code: str) -> Any:
        """Evaluate ``code``; statements return the variable ``result`` if they set one."""
        process = self._process
        assert process.stdin is not None and process.stdout is not None
        with self._lock:
            process.stdin.write(json.dumps(code) + "\n")
            process.stdin.flush()
            while True:
                line = process.stdout.readline()
                if not line:
                    raise ShellError(f"the shell ended (exit status {process.poll()})")
                if line.startswith(MARK):
                    break
        answer = json.loads(line[1:])
        if "error" in answer:
            raise ShellError(f"{answer['error']} (in: {code[:200]})")
        return answer["value"]

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
