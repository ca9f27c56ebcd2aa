"""The adversarial harness: a live stack, a victim session of another user, and the four checks.

Every case ends with the same four assertions (``Harness.check``):

1. **named outcome**: the offender got what it deserves by name: an ``x-fal-error`` whose ``error``
   is the expected code and whose ``reason`` names the problem, and/or a WebSocket close code, or an
   HTTP status with a JSON ``detail`` (for accepted inputs: the result);
2. **victim unharmed**: a session of another user, open throughout, kept getting its own results
   during and after the case, with no error and no close; no server process died, logged a crash or
   marked its runner down because of the offender;
3. **memory**: daphne's and the runner's resident memory came back near their level before the case
   (a slack of ``RSS_SLACK`` for the allocator; a leak grows by hundreds of MB);
4. **no usage record lost**: every connection of the offender that got past admission has a closed
   ``ConnectionRecord`` (with the frames it sent, where the case knows them), there is none for a
   connection refused at admission, and the victim's open record keeps being updated.

The checks poll with generous deadlines and assert outcomes, never durations. All the problems of
a case are reported together, each prefixed by the number of its assertion.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from websockets.sync.client import connect as ws_connect

from tests.adversarial.shell import DjangoShell
from tests.adversarial.victim import Victim
from tests.gateway.stack import GatewayStack, start_stack

__all__ = ["Case", "Expect", "Harness", "Outcome", "live_harness"]

FRAME_CAP = 256 * 1024  # REALTIME_MAX_FRAME_BYTES of the stacks: bombs stay cheap
RSS_SLACK = 40 * 2**20
DEADLINE = 10.0  # seconds for each thing a check waits for
RUNNER_APPS = "local/echo,test/slow=echo?delay_ms=150&workers=1"
METRICS_TOKEN = "adversarial-metrics-token"
BASE_ENV = {
    "REALTIME_MAX_FRAME_BYTES": str(FRAME_CAP),
    "REALTIME_METRICS_TOKEN": METRICS_TOKEN,
    "USAGE_FLUSH_INTERVAL": "0.2",  # the victim's open record is rewritten often: (4) waits less
    "REALTIME_CREDENTIAL_FAILURES": "0",  # off here: the bad-credential cases all come from 127.0.0.1
    "REALTIME_CONNECTS_PER_SECOND": "0",  # likewise the per-address connection bucket (tests/gateway tests it)
}
# Lines of daphne's log that mean a case hurt the server (a crash, or the runner blamed for a client).
DAPHNE_HARM = re.compile(r"Exception inside application|Internal Server Error|\" 500 |runner \S+ (lost|is down)")
RUNNER_HARM = re.compile(r"Traceback \(most recent call last\)|connection handler failed")


@dataclass(frozen=True)
class Expect:
    """What the offender must get. Codes may be one value or a tuple of allowed values."""

    error: str | tuple[str, ...] | None = None  # x-fal-error code
    reason: str = ""  # regex (case-insensitive) the reason must match
    close: int | tuple[int, ...] | None = None  # WebSocket close code from the server
    lives: bool = False  # after the bad input, a good frame on the same connection gets its result
    result: bool = False  # the input itself is answered by a result
    status: int | tuple[int, ...] | None = None  # HTTP status
    detail: str = ""  # regex the JSON ``detail`` must match (the body's text when ``json`` is false)
    json: bool = True
    admitted: int | range = 0  # connections of the offender that get past admission (and get a record)


@dataclass
class Outcome:
    """What the offender observed; attacks fill it, ``problems`` holds case-specific failures."""

    errors: list[dict[str, Any]] = field(default_factory=list)
    close: int | None = None
    close_reason: str = ""
    lived: bool = False
    results: int = 0
    status: int | None = None
    detail: str | None = None
    body: str = ""
    frames: int | None = None  # frames the gateway received on the case's connections, when known
    problems: list[str] = field(default_factory=list)

    def take(self, message: dict[str, Any]) -> None:
        """Count one message from the server."""
        if message.get("type") == "x-fal-error":
            self.errors.append(message)
        elif message.get("type") != "x-fal-message":
            self.results += 1


@dataclass(frozen=True)
class Case:
    id: str
    attack: Callable[[Harness], Awaitable[Outcome]]
    expect: Expect
    user: str = "attacker"  # whose records (4) counts


@dataclass
class Before:
    at: float
    wall: str
    victim_results: int
    victim_record: tuple[str, int] | None
    rss: dict[str, int]
    log_offset: int
    runner_lines: int


def _allowed(value: Any) -> tuple[Any, ...]:
    return value if isinstance(value, tuple) else (value,)


def rss(pid: int) -> int:
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return 0


def login(http: httpx.Client, username: str, password: str, path: str = "/accounts/login/") -> httpx.Response:
    """Log in through the real form (CSRF token from the page)."""
    page = http.get(path)
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    token = match[1] if match else ""
    form = {"username": username, "password": password, "csrfmiddlewaretoken": token}
    return http.post(path, data=form)


class Harness:
    def __init__(self, stack: GatewayStack, shell: DjangoShell):
        self.stack, self.shell = stack, shell
        self.keys: dict[str, str] = {}
        self.pks: dict[str, int] = {}
        self.victim: Victim | None = None
        self.extras: dict[str, Any] = {}  # what a module's cases share (fault proxies...)
        self.staff = httpx.Client(base_url=stack.http, timeout=30)
        self.clerk = httpx.Client(base_url=stack.http, timeout=30)
        self._cookies: dict[str, str] = {}

    # -- users and credentials ------------------------------------------------------------------

    def add_user(self, name: str, *, password: str | None = None, key: bool = True, **flags: Any) -> str | None:
        """Create a user (and an API key, returned); ``flags`` are User fields (is_staff...)."""
        options = ", ".join(f"{k}={v!r}" for k, v in flags.items())
        self.pks[name] = self.shell(
            f"User.objects.create_user({name!r}, password={password!r}{', ' if options else ''}{options}).pk"
        )
        if key:
            self.keys[name] = self.shell(f"create_api_key(User.objects.get(username={name!r}))[1]")
        return self.keys.get(name)

    def set_limits(self, name: str, **limits: Any) -> None:
        self.shell(f"UserLimits.objects.update_or_create(user_id={self.pks[name]}, defaults={limits!r}) and None")

    def headers(self, name: str = "attacker") -> dict[str, str]:
        return {"Authorization": f"Key {self.keys[name]}"}

    def url(self, path: str = "/local/echo/realtime") -> str:
        return self.stack.ws + path

    def session(self, name: str) -> str:
        """A logged-in session of ``name`` in the database (what a login creates, without the slow
        password hash: the login form itself is a case of its own); returns its key."""
        return self.shell(
            "from django.contrib.sessions.backends.db import SessionStore\n"
            "from django.contrib.auth import SESSION_KEY, BACKEND_SESSION_KEY, HASH_SESSION_KEY\n"
            f"u = User.objects.get(username={name!r}); s = SessionStore()\n"
            "s[SESSION_KEY] = str(u.pk); s[HASH_SESSION_KEY] = u.get_session_auth_hash()\n"
            "s[BACKEND_SESSION_KEY] = 'django.contrib.auth.backends.ModelBackend'\n"
            "s.create(); result = s.session_key"
        )

    def session_cookie(self, name: str = "attacker") -> str:
        """``Cookie`` header value of a logged-in session of ``name`` (made once)."""
        if name not in self._cookies:
            self._cookies[name] = f"sessionid={self.session(name)}"
        return self._cookies[name]

    def token(self, name: str = "attacker", apps: tuple[str, ...] = ("echo",)) -> str:
        response = httpx.post(
            f"{self.stack.http}/tokens/", json={"allowed_apps": list(apps)}, headers=self.headers(name), timeout=30
        )
        assert response.status_code == 200, response.text[:300]
        return response.json()

    # -- the four checks --------------------------------------------------------------------------

    async def check(self, case: Case) -> None:
        """Run one case and assert its four outcomes (every problem reported at once)."""
        before = self._before()
        try:
            outcome = await case.attack(self)
        except Exception as exc:  # the attack could not even be carried out: still check the others
            outcome = Outcome(problems=[f"the attack failed: {exc!r}"[:500]])
        ended = time.monotonic()
        problems = [f"(1) {p}" for p in named_problems(outcome, case.expect)]
        checks = await asyncio.gather(
            self._victim_problems(before, ended),
            self._memory_problems(before),
            asyncio.to_thread(self._usage_problems, before, case, outcome),
        )
        for number, found in zip((2, 3, 4), checks, strict=True):
            problems += [f"({number}) {p}" for p in found]
        assert not problems, f"{case.id}:\n  " + "\n  ".join(problems)

    def _before(self) -> Before:
        assert self.victim is not None and self.stack.daphne is not None
        return Before(
            at=time.monotonic(),
            wall=datetime.now(UTC).isoformat(),
            victim_results=self.victim.results,
            victim_record=self._victim_record(),
            rss=self._rss(),
            log_offset=self.stack.log_path.stat().st_size,
            runner_lines=len(self.stack.runners[0].output),
        )

    def _rss(self) -> dict[str, int]:
        assert self.stack.daphne is not None
        return {"daphne": rss(self.stack.daphne.pid), "runner": rss(self.stack.runners[0].process.pid)}

    def _victim_record(self) -> tuple[str, int] | None:
        row = self.shell(
            f"ConnectionRecord.objects.filter(user_id={self.pks['victim']}, ended_at__isnull=True)"
            ".order_by('-started_at').values_list('id', 'frames_in').first()"
        )
        return (str(row[0]), row[1]) if row else None

    async def _victim_problems(self, before: Before, ended: float) -> list[str]:
        victim = self.victim
        assert victim is not None
        deadline = time.monotonic() + DEADLINE
        while victim.results < before.victim_results + 3 or victim.results_since(ended) < 1:
            if time.monotonic() > deadline:
                got = victim.results - before.victim_results
                return [f"victim: only {got} new results, {victim.results_since(ended)} after the case"]
            await asyncio.sleep(0.05)
        problems = [f"victim: {e.what}" for e in victim.events_since(before.at)]
        if ended - before.at > 3 and victim.results_since(before.at, ended) == 0:
            problems.append(f"victim: no result during the case ({ended - before.at:.0f} s)")
        problems += self._server_problems(before)
        return problems

    def _server_problems(self, before: Before) -> list[str]:
        problems = []
        stack = self.stack
        assert stack.daphne is not None
        if stack.daphne.poll() is not None:
            problems.append(f"daphne exited ({stack.daphne.returncode})")
        if stack.runners[0].process.poll() is not None:
            problems.append(f"the runner exited ({stack.runners[0].process.returncode})")
        with stack.log_path.open("rb") as log:
            log.seek(before.log_offset)
            daphne_log = log.read().decode(errors="replace")
        for line in daphne_log.splitlines():
            if DAPHNE_HARM.search(line):
                problems.append(f"daphne logged: {line.strip()[:200]}")
        for line in stack.runners[0].output[before.runner_lines :]:
            if RUNNER_HARM.search(line):
                problems.append(f"the runner logged: {line.strip()[:200]}")
        return problems[:8]

    async def _memory_problems(self, before: Before) -> list[str]:
        deadline = time.monotonic() + DEADLINE
        while True:
            grown = {name: value - before.rss[name] for name, value in self._rss().items()}
            if all(g <= RSS_SLACK for g in grown.values()):
                return []
            if time.monotonic() > deadline:
                return [
                    f"{name} RSS is {g / 2**20:.0f} MiB above its level before the case"
                    for name, g in grown.items()
                    if g > RSS_SLACK
                ]
            await asyncio.sleep(0.25)

    def _usage_problems(self, before: Before, case: Case, outcome: Outcome) -> list[str]:
        problems = []
        expected = case.expect.admitted
        allowed = expected if isinstance(expected, range) else range(expected, expected + 1)
        deadline = time.monotonic() + DEADLINE
        while True:
            rows = self._records(case.user, before.wall)
            ended = [r for r in rows if r["ended_at"] is not None]
            if len(ended) == len(rows) and len(rows) in allowed:
                break
            if len(rows) > allowed[-1] or time.monotonic() > deadline:  # rows never go away
                problems.append(
                    f"usage: {len(rows)} records of {case.user} ({len(rows) - len(ended)} not closed), "
                    f"expected {expected}, all closed"
                )
                break
            time.sleep(0.1)
        if not problems and outcome.frames is not None and rows:
            counted = sum(r["frames_in"] for r in rows)
            if counted != outcome.frames:
                problems.append(f"usage: the records count {counted} frames, the case sent {outcome.frames}")
        problems += self._victim_record_problems(before)
        return problems

    def _records(self, user: str, since: str) -> list[dict[str, Any]]:
        pk = self.pks.get(user)
        if pk is None:
            return []
        return self.shell(
            f"list(ConnectionRecord.objects.filter(user_id={pk}, started_at__gte=datetime.fromisoformat({since!r}))"
            ".values('ended_at', 'frames_in', 'close_code', 'app', 'user_agent'))"
        )

    def _victim_record_problems(self, before: Before) -> list[str]:
        if before.victim_record is None:
            return ["usage: the victim had no open record before the case"]
        start = time.monotonic()
        nudged = False
        while True:
            now = self._victim_record()
            if now is not None and now[0] == before.victim_record[0] and now[1] > before.victim_record[1]:
                return []
            if time.monotonic() > start + DEADLINE:
                return [f"usage: the victim's open record did not grow: before {before.victim_record}, now {now}"]
            if not nudged:
                self._nudge_recorder()
                nudged = True
            time.sleep(0.1)

    def _nudge_recorder(self) -> None:
        """Open records are rewritten when the recorder wakes: on a close, else every 2 s. A case with
        no connection of its own would wait for that tick; a prober's connection, opened and closed,
        wakes it sooner (the prober's records are nobody's business)."""
        with contextlib.suppress(Exception), ws_connect(self.url(), additional_headers=self.headers("prober")):
            pass

    def metrics(self) -> str:
        return httpx.get(
            f"{self.stack.http}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=30
        ).text

    def close(self) -> None:
        if self.victim is not None:
            self.victim.stop()
        self.staff.close()
        self.clerk.close()
        self.shell.close()
        self.stack.close()


def named_problems(outcome: Outcome, expect: Expect) -> list[str]:
    """Assertion (1): what the offender got against what it must get."""
    problems = list(outcome.problems)
    if expect.error is not None:
        if not outcome.errors:
            problems.append(f"expected x-fal-error {expect.error}, got none (close {outcome.close})")
        else:
            first = outcome.errors[0]
            if first.get("error") not in _allowed(expect.error):
                problems.append(f"expected x-fal-error {expect.error}, got {first.get('error')}: {first.get('reason')}")
            elif not re.search(expect.reason, str(first.get("reason", "")), re.IGNORECASE) or not first.get("reason"):
                problems.append(f"the reason {first.get('reason')!r} does not name /{expect.reason}/")
    elif (expect.lives or expect.result) and outcome.errors:
        problems.append(f"unexpected errors: {[(e.get('error'), e.get('reason')) for e in outcome.errors][:3]}")
    if expect.close is not None and outcome.close not in _allowed(expect.close):
        problems.append(f"expected close code {expect.close}, got {outcome.close} {outcome.close_reason!r}")
    if expect.close is None and (expect.lives or expect.result) and outcome.close is not None:
        problems.append(f"the server closed the connection ({outcome.close} {outcome.close_reason!r})")
    if expect.lives and not outcome.lived:
        problems.append("the connection did not answer a good frame afterwards")
    if expect.result and not outcome.results:
        problems.append("the input got no result")
    if expect.status is None and outcome.status is not None and outcome.status != 101:
        problems.append(f"answered HTTP {outcome.status} instead: {outcome.body[:200]!r}")
    if expect.status is not None:
        if outcome.status not in _allowed(expect.status):
            problems.append(f"expected HTTP {expect.status}, got {outcome.status}: {outcome.body[:200]!r}")
        elif expect.detail:
            said = outcome.detail if expect.json else outcome.body
            if said is None:
                problems.append(f"no JSON detail in the answer: {outcome.body[:200]!r}")
            elif not re.search(expect.detail, said, re.IGNORECASE):
                problems.append(f"the answer {said[:200]!r} does not name /{expect.detail}/")
    return problems


@contextlib.contextmanager
def live_harness(
    tmp: Path, env: dict[str, str] | None = None, *, observer_env: dict[str, str] | None = None
) -> Iterator[Harness]:
    """A stack (runner with echo and a slow app, daphne), the usual users, and the victim running.
    ``observer_env`` overrides the environment of the tests' own Django shell."""
    runner_args = ["--apps", RUNNER_APPS, "--max-frame-bytes", str(FRAME_CAP)]
    stack = start_stack(tmp, [runner_args], {**BASE_ENV, **(env or {})})
    harness = Harness(stack, DjangoShell(stack, observer_env))
    try:
        harness.add_user("victim")
        harness.add_user("prober")
        harness.add_user("attacker")
        harness.add_user("boss", key=False, is_staff=True, is_superuser=True)
        harness.add_user("clerk", key=False, is_staff=True)
        harness.staff.cookies.set("sessionid", harness.session("boss"))
        harness.clerk.cookies.set("sessionid", harness.session("clerk"))
        harness.victim = Victim(harness.url(), harness.headers("victim"))
        harness.victim.start()
        deadline = time.monotonic() + 30
        while harness._victim_record() is None:  # written by the recorder's next round
            assert time.monotonic() < deadline, "the victim's connection was never recorded"
            time.sleep(0.1)
        yield harness
    finally:
        harness.close()
