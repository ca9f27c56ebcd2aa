"""Run-wide credential scan of every log line the test run writes (issue 18).

What is scanned (the sources of ``RUN``):

- log files: each stack's daphne logs (registered by ``GatewayStack``), and at the end every ``*.log``
  under pytest's basetemp (nginx's access and error logs; whatever a harness adds later);
- in-memory outputs: each runner's stdout and stderr (``start_runner``), and the stderr of every child
  the pytest process waits on with ``Popen.communicate`` (``subprocess.run`` too: the client CLI,
  ``manage.py``, daphne started only to fail);
- the pytest process's own logging: every ``LogRecord`` created, through a record factory (so loggers
  that do not propagate, and levels that caplog lowers, are seen too), with its traceback.

What counts as a credential:

- values recorded where the test process makes or checks them: every token ``jwt.encode`` returns or
  ``jwt.decode`` is given (issued, forged and refused alike; its signature alone too), every API key
  secret that is hashed (created or presented), every password set (``set_password``), the in-process
  ``SECRET_KEY``; and by the stack helpers: keys printed by ``manage.py create_api_key``, passwords in the
  code run by ``manage.py shell``, credentials in what it prints, runner and Django secrets;
- shapes, whoever made them (daphne mints tokens in another process): a JWT, an API key (16 hex digits,
  ``:``, 43 base64url characters), a ``fal_jwt_token`` query value, a ``sessionid`` cookie, a test
  password (they all read ``pw-NAME-...``). Refused garbage is no exception: a server that logs what a
  client sent as its credential leaks it, valid or not.

When: in ``pytest_sessionfinish`` (tryfirst: before tmp_path cleanup, and after every fixture's teardown,
so the lines written at shutdown are in), which turns a passing exit status into a failure when anything
is found; ``pytest_terminal_summary`` prints each finding: its source, line number and the line with the
credentials masked. A hook rather than a test that runs last: it runs for any subset of the tests, sees
what fixture teardown writes after the last test, and cannot be deselected or reordered.
"""

from __future__ import annotations

import logging
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

__all__ = ["RUN", "Finding", "LogScan", "Report", "install", "mask"]

SHAPES: dict[str, str] = {  # the value alone is masked; order matters where two match at one place
    "token in a query": r"(?<=fal_jwt_token=)[^\s&\"'#]+",
    "JWT": r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*",
    "API key": r"(?<![0-9A-Za-z])[0-9a-f]{16}:[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])",
    "session cookie": r"(?<=sessionid=)[a-z0-9]{32}",
    "test password": r"(?<![\w-])pw-[A-Za-z0-9]+(?:-[A-Za-z0-9]+)+",
}
SHAPE = re.compile("|".join(f"(?P<s{i}>{pattern})" for i, pattern in enumerate(SHAPES.values())))
KIND_OF_GROUP = {f"s{i}": kind for i, kind in enumerate(SHAPES)}
PASSWORD_LITERAL = re.compile(r"password\s*=\s*(['\"])(.+?)\1")  # in code given to ``manage.py shell``
MIN_LENGTH = 8  # shorter recorded values ("x", a garbage "pw") would match ordinary text
SHOWN = 60  # findings printed; the count says how many more


def _kind(match: re.Match[str]) -> str:
    return KIND_OF_GROUP[match.lastgroup or ""]


@dataclass(frozen=True)
class Finding:
    source: str
    line_no: int
    line: str  # masked
    kinds: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.source}:{self.line_no}: [{', '.join(self.kinds)}] {self.line}"


@dataclass
class Report:
    findings: list[Finding]
    scanned: list[tuple[str, int]]  # (source, lines)
    credentials: int
    missing: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def lines(self) -> int:
        return sum(lines for _, lines in self.scanned)


def _shown(value: str, kind: str) -> str:
    keep = min(4, len(value) // 4)
    return f"{value[:keep]}…<{kind}, {len(value)} chars>"


def mask(line: str, spans: list[tuple[int, int, str]], limit: int = 400) -> str:
    """``line`` with each span ``(start, end, kind)`` masked (overlapping spans merge), then cut to ``limit``."""
    merged: list[list[Any]] = []
    for start, end, kind in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end, kind])
    out, at = [], 0
    for start, end, kind in merged:
        out += [line[at:start], _shown(line[start:end], kind)]
        at = end
    text = "".join([*out, line[at:]])
    return text if len(text) <= limit else text[:limit] + "…"


class LogScan:
    """Log sources and credentials, gathered during a run and scanned at its end."""

    def __init__(self) -> None:
        self.credentials: dict[str, str] = {}  # value -> kind
        self.files: dict[Path, str] = {}  # path -> name shown
        self.dirs: list[Path] = []  # every *.log below, at the end
        self.outputs: list[tuple[str, list[str]]] = []  # (name, lines that may still grow)
        self.records: list[str] = []  # the pytest process's log records, formatted
        self.current = ""  # the test running, named in records and outputs
        self._lock = threading.Lock()

    # -- credentials ----------------------------------------------------------------------------

    def remember(self, kind: str, value: object) -> None:
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        if not isinstance(value, str) or len(value := value.strip()) < MIN_LENGTH:
            return
        with self._lock:
            self.credentials.setdefault(value, kind)
        if kind == "token" and value.count(".") == 2 and len(signature := value.rsplit(".", 1)[1]) >= 16:
            self.remember("token signature", signature)  # a line that quotes only the part that matters
        elif kind == "API key" and ":" in value:
            self.remember("API key secret", value.split(":", 1)[1])

    def remember_shapes(self, text: str) -> None:
        """Every credential-shaped string in ``text`` (what a helper printed), as a credential."""
        for match in SHAPE.finditer(text):
            kind = _kind(match)
            self.remember("token" if kind in ("JWT", "token in a query") else kind, match[0])

    # -- sources --------------------------------------------------------------------------------

    def add_file(self, path: Path, name: str | None = None) -> None:
        with self._lock:
            self.files.setdefault(Path(path), name or str(path))

    def add_dir(self, path: Path) -> None:
        with self._lock:
            self.dirs.append(Path(path))

    def add_output(self, name: str, lines: list[str]) -> None:
        """An in-memory output, read at the end (the list may still grow until then)."""
        with self._lock:
            self.outputs.append((f"{name} [in {self.current}]" if self.current else name, lines))

    def add_text(self, name: str, text: str | bytes) -> None:
        if isinstance(text, bytes):
            text = text.decode(errors="replace")
        if text:
            self.add_output(name, [text])

    def record(self, record: logging.LogRecord) -> None:
        """Keep a log record as its handlers would write it: message, traceback, stack."""
        try:
            during = f"[in {self.current}] " if self.current else ""
            parts = [f"{during}{record.levelname} {record.name}: {record.getMessage()}"]
            if record.exc_info:
                parts.append(logging.Formatter().formatException(record.exc_info))
            elif record.exc_text:
                parts.append(record.exc_text)
            if record.stack_info:
                parts.append(record.stack_info)
            self.records.append("\n".join(parts))
        except Exception as exc:  # a broken log call stays the caller's problem, as with a handler
            self.records.append(f"{record.name}: <not formattable: {type(exc).__name__}> {record.msg!r}")

    # -- the scan -------------------------------------------------------------------------------

    def _texts(self) -> Iterator[tuple[str, str | None]]:
        files = dict(self.files)
        for folder in self.dirs:
            for path in sorted(folder.rglob("*.log")) if folder.is_dir() else []:
                files.setdefault(path, str(path))
        for path, name in files.items():
            yield name, path.read_text(errors="replace") if path.is_file() else None
        for name, lines in self.outputs:
            yield name, "".join(list(lines))
        if self.records:
            yield "logging in the pytest process", "\n".join(list(self.records))

    def scan_text(self, source: str, text: str, credentials: dict[str, str] | None = None) -> list[Finding]:
        known = self.credentials if credentials is None else credentials
        present = [value for value in list(known) if value in text]
        if not present and not SHAPE.search(text):
            return []
        findings = []
        for number, line in enumerate(text.splitlines(), 1):
            spans = [(m.start(), m.end(), _kind(m)) for m in SHAPE.finditer(line)]
            for value in present:
                start = line.find(value)
                while start >= 0:
                    spans.append((start, start + len(value), known[value]))
                    start = line.find(value, start + 1)
            if spans:
                findings.append(Finding(source, number, mask(line, spans), tuple(sorted({s[2] for s in spans}))))
        return findings

    def scan(self) -> Report:
        began = time.monotonic()
        credentials = dict(self.credentials)
        findings: list[Finding] = []
        scanned: list[tuple[str, int]] = []
        missing: list[str] = []
        for name, text in self._texts():
            if text is None:
                missing.append(name)
                continue
            scanned.append((name, len(text.splitlines())))
            findings += self.scan_text(name, text, credentials)
        return Report(findings, scanned, len(credentials), missing, time.monotonic() - began)


RUN = LogScan()


def _argv(args: object) -> str:
    words = [str(a) for a in args] if isinstance(args, list | tuple) else [str(args)]
    return " ".join(words)[:120]


def install(scan: LogScan) -> Callable[[], None]:
    """Feed ``scan`` from this process: log records, children's stderr, credentials made or checked here.
    Returns what undoes it."""
    undo: list[Callable[[], None]] = []

    def patch(owner: Any, name: str, make: Callable[[Any], Any]) -> None:
        original = getattr(owner, name)  # an AttributeError here means a hook point moved: fix the hook
        setattr(owner, name, make(original))
        undo.append(lambda: setattr(owner, name, original))

    base_factory = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = base_factory(*args, **kwargs)
        scan.record(record)
        return record

    logging.setLogRecordFactory(factory)
    undo.append(lambda: logging.setLogRecordFactory(base_factory))

    def communicate(original: Callable[..., tuple[Any, Any]]) -> Callable[..., tuple[Any, Any]]:
        def keeping(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            out, err = original(self, *args, **kwargs)
            if err:
                scan.add_text(f"stderr of {_argv(self.args)}", err)
            return out, err

        return keeping

    patch(subprocess.Popen, "communicate", communicate)

    def recording(kind: str, result: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Wrap a function so that its first argument (or its result) is remembered as ``kind``."""

        def make(original: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                if not result:  # before the call: a refused argument counts too
                    scan.remember(kind, args[0] if args else next(iter(kwargs.values()), None))
                value = original(*args, **kwargs)
                if result:
                    scan.remember(kind, value)
                return value

            return wrapper

        return make

    import jwt

    patch(jwt, "encode", recording("token", result=True))
    patch(jwt, "decode", recording("token", result=False))
    from django.apps import apps

    if apps.ready:  # under pytest-django; a bare ``pytest -p tests.logs`` has no Django
        from django.conf import settings
        from django.contrib.auth.base_user import AbstractBaseUser

        from realtime_site.accounts import keys

        scan.remember("SECRET_KEY", settings.SECRET_KEY)

        def set_password(original: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(user: Any, raw_password: str | None) -> Any:
                scan.remember("password", raw_password)
                return original(user, raw_password)

            return wrapper

        def hash_secret(original: Callable[[str], str]) -> Callable[[str], str]:
            def wrapper(secret: str) -> str:  # every key secret made or presented passes here
                scan.remember("API key secret", secret)
                return original(secret)

            return wrapper

        patch(AbstractBaseUser, "set_password", set_password)
        patch(keys, "_hash", hash_secret)

    def uninstall() -> None:
        for step in reversed(undo):
            step()

    return uninstall


# -- pytest hooks (tests/conftest.py imports them; ``-p tests.logs`` loads them alone) -------------

_REPORT = pytest.StashKey[Report]()
_INSTALLED = pytest.StashKey[bool]()


@pytest.hookimpl(trylast=True)  # after pytest-django's, which sets Django up
def pytest_configure(config: pytest.Config) -> None:
    if not config.stash.get(_INSTALLED, False):
        config.stash[_INSTALLED] = True
        install(RUN)


def pytest_runtest_logstart(nodeid: str, location: object) -> None:
    RUN.current = nodeid


@pytest.fixture(scope="session", autouse=True)
def log_scan_basetemp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every ``*.log`` under this run's basetemp is scanned at the end."""
    RUN.add_dir(tmp_path_factory.getbasetemp())


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    report = RUN.scan()
    session.config.stash[_REPORT] = report
    if report.findings and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    report = config.stash.get(_REPORT, None)
    if report is None:
        return
    write = terminalreporter.write_line
    if report.findings:
        terminalreporter.section(f"credentials in {len(report.findings)} log lines (issue 18)", red=True, bold=True)
        for finding in report.findings[:SHOWN]:
            write(str(finding))
        if len(report.findings) > SHOWN:
            write(f"... and {len(report.findings) - SHOWN} more")
        terminalreporter.stats["log lines with credentials"] = report.findings  # named in the final line too
    else:
        write(
            f"log scan: no credential in {report.lines} lines of {len(report.scanned)} logs "
            f"({report.credentials} credentials recorded, and their shapes; {report.seconds:.1f} s)"
        )
    if config.get_verbosity() > 0:
        for name, lines in report.scanned:
            write(f"log scan: {lines:7d} lines  {name}")
    if report.missing:
        write(f"log scan: registered but never written, so not scanned: {', '.join(report.missing[:10])}")
