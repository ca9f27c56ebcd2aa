"""Benchmark of shared rooms: a stroke on its way to the other members, beside a plain Channels group
echo, and one inference stream per room however many draw in it.

Run from anywhere: ``python bench/rooms.py [--quick]``. It starts a runner (``local/echo``, and
``bench/slow``: echo with a fixed service time, ``delay_ms``), the gateway under daphne (a throwaway
database, the users logged in over HTTP, an API key) and ``bench/group_echo.py`` under a second daphne
as subprocesses, prints tables and writes every figure to ``bench/out/rooms.json``. Every client is a
WebSocket in this one asyncio process, so sends and receives are timed on one clock.

1. Stroke latency: rooms of 2, 8 and 16 members, each a distinct user (on ``local/echo``). One member
   draws one message every 20 ms: a stroke is a ``down``, 48 ``move``s of 4 points and an ``up``, so
   50 messages and 192 points a second, under the 60 and 1500 a member may send. Each other member
   times every relayed ``op``, matched by ``(m, n)`` to its send (the first 0.5 s is left out of the
   latency); ops sent against ops received, member by member, are the drops. The same members and pace
   through the group echo (no room, no checks, no canvas) are the baseline; at each size the room and
   the baseline run in turn. Target: the room's p50 at most 30 ms.
2. One stream per room: a single user draws over ``/bench/slow/realtime?max_buffering=1`` (a 512x512
   JPEG every 128 ms, as the drawing page throttles its frames), then 8 members of a room on
   ``bench/slow`` all draw at the pace above for as long; one member counts the results it is sent.
   Targets: the room's results per second within 15 % of the single user's, and no duplicate
   inference: the frames the gateway recorded for the room (its usage records, flushed every second)
   equal to the results the room got, and the runner serving the room on one session.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shlex
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import channels
import daphne
import httpx
import msgpack
import psutil
import websockets
from common import (
    JPEG_SIDE,
    LISTENING,
    MAX_SIZE,
    ROOT,
    Child,
    child,
    clean_env,
    daphne_args,
    drawing_jpeg,
    expect_line,
    free_port,
    log_problems,
    machine,
    manage,
    pack,
    print_machine,
    print_servers,
    recorded,
    request,
    row,
    section,
    stats,
    verdict,
    wait_http_ok,
)
from gateway import AUTH_ENV, START_TIMEOUT, cpu_seconds, gateway_child, gateway_env, provision
from http_calls import runner_sessions
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

DEFAULT_OUT = ROOT / "bench" / "out" / "rooms.json"
SHOWN_VERSIONS = ("daphne", "channels", "websockets")
PASSWORD = "bench-room-pass-123"
USERS = "room-{:02d}"
ECHO_APP = "local/echo"
SLOW_APP = "bench/slow"

TICK = 0.020  # a drawer's messages, one every 20 ms
STROKE_MESSAGES = 50  # down, 48 moves, up
POINTS_PER_MOVE = 4
WARMUP_SECONDS = 0.5  # ops sent this early in a run are left out of the latency
READY_TIMEOUT = 30.0
DRAIN_SECONDS = 3.0  # after the last send, how long the others may take to get every op
CONNECT_OPTIONS: dict[str, Any] = {"compression": None, "max_size": MAX_SIZE, "open_timeout": 30, "ping_interval": None}

P50_TARGET_MS = 30.0
FRAME_INTERVAL = 0.128  # the drawing page's throttle (frontend/draw/main.js), as the room's driver paces
RATE_WARMUP = 1.0  # results in the first second of a run are not counted in the rate
RATE_TOLERANCE = 0.15
LINGER_SECONDS = 1.0  # after the drawing, the last frame's result may still come
USAGE_FLUSH_SECONDS = 1.0  # the gateway's USAGE_FLUSH_INTERVAL here
USAGE_SETTLE_SECONDS = 3.0  # then the usage rows and the room's frames are written

FULL = {"sizes": "2,8,16", "relay_seconds": 8.0, "rate_seconds": 10.0}
QUICK = {"sizes": "2,8,16", "relay_seconds": 3.0, "rate_seconds": 4.0}


# -- the servers -------------------------------------------------------------------------------


def runner_args(delay_ms: float) -> list[str]:
    apps = f"{ECHO_APP},{SLOW_APP}=echo?delay_ms={delay_ms:g}"
    return ["-m", "realtime_site.runner", "--host", "127.0.0.1", "--port", "0", "--apps", apps]


@contextlib.contextmanager
def group_echo_child(servers: dict[str, Any]) -> Iterator[Child]:
    """``bench/group_echo.py`` under its own daphne; always stopped, its exit code and log in ``servers``."""
    echo: Child | None = None
    port = free_port()
    env = {**clean_env(AUTH_ENV), "PYTHONPATH": str(ROOT / "bench")}
    try:
        with child("daphne-echo", [*daphne_args(port)[:-1], "group_echo:application"], env) as echo:
            echo.port = port
            wait_http_ok(echo, f"http://127.0.0.1:{port}/", START_TIMEOUT)
            yield echo
    finally:
        if echo is not None:
            servers[echo.name] = {"exit_code": echo.exit_code, "log": log_problems(echo.log)}


def make_users(env: dict[str, str], count: int) -> list[str]:
    """``count`` users with one password (hashed once); their names."""
    names = [USERS.format(i) for i in range(count)]
    code = (
        "from django.contrib.auth import get_user_model; from django.contrib.auth.hashers import make_password; "
        f"User = get_user_model(); hashed = make_password({PASSWORD!r}); "
        f"User.objects.bulk_create([User(username=name, password=hashed) for name in {names!r}])"
    )
    manage(env, "shell", "-c", code)
    return names


def log_in(base: str, name: str) -> httpx.Client:
    """A client logged in as ``name`` through the login form: it holds the session cookie."""
    client = httpx.Client(base_url=base, timeout=60)
    page = client.get("/accounts/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    if token is None:
        raise RuntimeError(f"the login page has no CSRF token ({page.status_code})")
    answer = client.post(
        "/accounts/login/", data={"username": name, "password": PASSWORD, "csrfmiddlewaretoken": token[1]}
    )
    if answer.status_code != 302:
        raise RuntimeError(f"logging {name} in answered {answer.status_code}: {answer.text[:300]}")
    return client


def make_room(owner: httpx.Client, app: str) -> str:
    """A room made the way the drawing page's Share makes one; its slug."""
    answer = owner.post(
        "/rooms/",
        data={"app": app, "csrfmiddlewaretoken": owner.cookies["csrftoken"]},
        headers={"Referer": f"{owner.base_url}/"},
    )
    location = answer.headers.get("location", "")
    if answer.status_code != 302 or not location.startswith("/rooms/"):
        raise RuntimeError(f"POST /rooms/ answered {answer.status_code}: {answer.text[:300]}")
    return location.split("/")[2]


def member_headers(client: httpx.Client) -> dict[str, str]:
    """A member's WebSocket headers: the session cookie, and this site's page as the Origin."""
    cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    return {"Cookie": cookie, "Origin": str(client.base_url).rstrip("/")}


def room_figures(env: dict[str, str], slug: str) -> dict[str, Any]:
    """What the gateway recorded for ``SLOW_APP``: usage rows per mode, and the room's frames."""
    code = "\n".join(
        [
            "import json",
            "from django.db.models import Count, Sum",
            "from realtime_site.rooms.models import Room",
            "from realtime_site.usage.models import ConnectionRecord",
            f"rows = ConnectionRecord.objects.filter(app={SLOW_APP!r})",
            "out = {}",
            "for mode in ('realtime', 'room'):",
            "    out[mode] = rows.filter(mode=mode).aggregate(rows=Count('id'), frames=Sum('frames_in'),",
            "        results=Sum('results_out'), dropped=Sum('frames_dropped'))",
            f"out['room_frames'] = Room.objects.get(slug={slug!r}).frames",
            "print(json.dumps(out))",
        ]
    )
    found = json.loads(manage(env, "shell", "-c", code).strip().splitlines()[-1])
    for mode in ("realtime", "room"):
        found[mode] = {k: v or 0 for k, v in found[mode].items()}
    return found


# -- the clients -------------------------------------------------------------------------------


@dataclass
class Peer:
    """One member's WebSocket (a room's, or the group echo's) and what it sent and was sent."""

    label: str
    ws: ClientConnection
    connection: str = ""  # what the others get as ``m``: the room's name for it, or the label
    sent: dict[int, float] = field(default_factory=dict)  # n -> send time
    lag_ms: list[float] = field(default_factory=list)  # how late each send was against its deadline
    got: dict[tuple[str, int], float] = field(default_factory=dict)  # the others' (m, n) -> receive time
    duplicates: int = 0
    results: list[tuple[float, Any]] = field(default_factory=list)  # (receive time, request_id)
    kinds: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    bytes_in: int = 0
    closed: str | None = None  # why it ended before the bench closed it
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # a room's: welcomed, and given the state


async def read(peer: Peer, closing: asyncio.Event) -> None:
    try:
        async for message in peer.ws:
            now = time.perf_counter()
            peer.bytes_in += len(message)
            if isinstance(message, str):
                peer.errors.append(message[:300])
                continue
            data = msgpack.unpackb(message)
            kind = str(data.get("t"))
            peer.kinds[kind] += 1
            if kind in ("op", "down", "move", "up"):  # a room's relay, or the echo of the sent op itself
                key = (str(data.get("m")), data.get("n"))
                if key in peer.got:
                    peer.duplicates += 1
                else:
                    peer.got[key] = now
            elif kind == "result":
                peer.results.append((now, data.get("request_id")))
            elif kind == "welcome":
                peer.connection = data["connection"]
            elif kind == "state" and peer.connection:
                peer.ready.set()
            elif kind == "error":
                peer.errors.append(f"{data.get('error')}: {data.get('reason')}"[:300])
    except ConnectionClosed as exc:
        if not closing.is_set():
            peer.closed = peer.closed or f"receive: {exc}"
    if not closing.is_set():
        peer.closed = peer.closed or "closed by the server"


def stroke_ticks(seconds: float) -> int:
    """Messages a drawer sends in about ``seconds``: whole strokes."""
    return max(1, round(seconds / (TICK * STROKE_MESSAGES))) * STROKE_MESSAGES


async def draw(peer: Peer, start: float, ticks: int, seed: int, *, tag: bool) -> None:
    """One message every TICK from ``start``, at absolute deadlines: strokes of a random walk. With
    ``tag`` the message names its sender in ``m`` (the group echo passes it on as it is)."""
    rng = random.Random(seed)
    x, y = rng.randint(96, 416), rng.randint(96, 416)
    stroke = 0
    for i in range(ticks):
        deadline = start + i * TICK
        if (delay := deadline - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        step = i % STROKE_MESSAGES
        if step == 0:
            stroke += 1
            op: dict[str, Any] = {"t": "down", "k": stroke, "c": f"#{rng.randrange(1 << 24):06x}", "w": 8, "p": [x, y]}
        elif step == STROKE_MESSAGES - 1:
            op = {"t": "up", "k": stroke}
        else:
            points: list[int] = []
            for _ in range(POINTS_PER_MOVE):
                x, y = min(max(x + rng.randint(-6, 6), 8), 504), min(max(y + rng.randint(-6, 6), 8), 504)
                points += [x, y]
            op = {"t": "move", "k": stroke, "p": points}
        op["n"] = n = i + 1
        if tag:
            op["m"] = peer.connection
        frame = msgpack.packb(op)
        peer.sent[n] = now = time.perf_counter()
        peer.lag_ms.append((now - deadline) * 1000)
        try:
            await peer.ws.send(frame)
        except ConnectionClosed as exc:
            peer.closed = peer.closed or f"send: {exc}"
            return


async def drained(peers: list[Peer], drawers: list[Peer], within: float) -> bool:
    """Wait until every other member has each drawer's last op (the relay keeps order), at most ``within`` s."""
    deadline = time.perf_counter() + within
    wanted = [(r, (d.connection, max(d.sent))) for d in drawers if d.sent for r in peers if r is not d]
    while time.perf_counter() < deadline:
        if all(key in r.got for r, key in wanted):
            return True
        await asyncio.sleep(0.02)
    return False


@dataclass
class Run:
    peers: list[Peer]
    drawers: list[Peer]
    start: float  # the first send
    seconds: float  # from the first send until drained
    drained: bool
    cpu: dict[str, dict[str, float]]
    probe: Any = None


async def run_members(
    url: str,
    headers: list[dict[str, str]],
    drawers: int,
    seconds: float,
    procs: dict[str, psutil.Process],
    *,
    room: bool,
    linger: float = 0.0,
    probe: Callable[[], Awaitable[Any]] | None = None,
) -> Run:
    """Connect one member per ``headers`` (in a room: until each is welcomed and has the state), let the
    first ``drawers`` draw for about ``seconds``, wait for the relay to drain (and ``linger`` more), close.
    ``probe`` is awaited halfway through the drawing. CPU of ``procs`` (and of this process) is taken from
    the first send until drained."""
    closing = asyncio.Event()
    peers: list[Peer] = []
    readers: list[asyncio.Task[None]] = []
    try:
        for index, extra in enumerate(headers):
            ws = await connect(url, additional_headers=extra, **CONNECT_OPTIONS)
            peers.append(peer := Peer(f"member-{index:02d}", ws, connection=f"member-{index:02d}"))
            if room:
                peer.connection = ""  # the room names it in its welcome
            else:
                peer.ready.set()  # the group echo joins the group before it accepts
            readers.append(asyncio.create_task(read(peer, closing)))
        try:
            await asyncio.wait_for(asyncio.gather(*(p.ready.wait() for p in peers)), READY_TIMEOUT)
        except TimeoutError:
            said = sorted({e for p in peers for e in p.errors} | {p.closed for p in peers if p.closed})
            waiting = sum(not p.ready.is_set() for p in peers)
            raise RuntimeError(
                f"{waiting} members not given the state within {READY_TIMEOUT:g} s: {said[:3]}"
            ) from None
        procs = {**procs, "bench": psutil.Process()}
        before = {name: cpu_seconds(p) for name, p in procs.items()}
        ticks = stroke_ticks(seconds)
        start = time.perf_counter() + 0.05
        drawing = [
            draw(p, start + TICK * i / drawers, ticks, seed=i, tag=not room) for i, p in enumerate(peers[:drawers])
        ]
        results = await asyncio.gather(*drawing, _after(ticks * TICK / 2, probe))
        done = await drained(peers, peers[:drawers], DRAIN_SECONDS)
        elapsed = time.perf_counter() - start
        cpu = {name: cpu_seconds(p) - before[name] for name, p in procs.items()}
        await asyncio.sleep(linger)
        return Run(
            peers,
            peers[:drawers],
            start,
            elapsed,
            done,
            {name: {"seconds": s, "percent_of_core": 100 * s / elapsed} for name, s in cpu.items()},
            results[-1],
        )
    finally:
        closing.set()
        with contextlib.suppress(TimeoutError):
            closes = (p.ws.close() for p in peers)
            await asyncio.wait_for(asyncio.gather(*closes, return_exceptions=True), 20)
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)


async def _after(delay: float, probe: Callable[[], Awaitable[Any]] | None) -> Any:
    if probe is None:
        return None
    await asyncio.sleep(delay)
    return await probe()


def relay_figures(run: Run) -> dict[str, Any]:
    """Latency of each drawer's ops to each other member, and the ops that never came."""
    latency: list[float] = []
    expected = 0
    missing: list[int] = []  # per receiving member
    for receiver in run.peers:
        lost = 0
        for drawer in run.drawers:
            if drawer is receiver:
                continue
            for n, sent_at in drawer.sent.items():
                expected += 1
                got = receiver.got.get((drawer.connection, n))
                if got is None:
                    lost += 1
                elif sent_at >= run.start + WARMUP_SECONDS:
                    latency.append((got - sent_at) * 1000)
        missing.append(lost)
    errors = [e for p in run.peers for e in p.errors]
    kinds: Counter[str] = Counter()
    for p in run.peers:
        kinds.update(p.kinds)
    return {
        "members": len(run.peers),
        "drawers": len(run.drawers),
        "ops_sent": sum(len(d.sent) for d in run.drawers),
        "ops_expected": expected,
        "ops_received": expected - sum(missing),
        "dropped": sum(missing),
        "dropped_most_by_one_member": max(missing, default=0),
        "duplicates": sum(p.duplicates for p in run.peers),
        "drained": run.drained,
        "latency_ms": stats(latency),
        "send_lag_ms": stats([lag for d in run.drawers for lag in d.lag_ms]),
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:3],
        "closed_early": sum(p.closed is not None for p in run.peers),
        "closed_samples": sorted({p.closed for p in run.peers if p.closed})[:3],
        "messages_received_by_type": dict(kinds),
        "kb_received_per_member_per_s": sum(p.bytes_in for p in run.peers) / len(run.peers) / run.seconds / 1000,
        "seconds": run.seconds,
        "cpu": run.cpu,
    }


def result_rate(times: list[float], start: float, seconds: float) -> float:
    """Results per second that came from ``start + RATE_WARMUP`` until ``start + seconds``."""
    window = seconds - RATE_WARMUP
    return sum(start + RATE_WARMUP <= t < start + seconds for t in times) / window if window > 0 else float("nan")


async def single_user(url: str, auth: str, jpeg: bytes, seconds: float, proc: psutil.Process) -> dict[str, Any]:
    """One user on the realtime WebSocket: a frame every FRAME_INTERVAL, as the drawing page sends them."""
    ws = await connect(url, additional_headers={"Authorization": auth}, **CONNECT_OPTIONS)
    results: list[tuple[float, Any]] = []
    errors: list[str] = []

    async def receive() -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in ws:
                if isinstance(message, str):
                    errors.append(message[:300])
                    continue
                answer = msgpack.unpackb(message)
                if answer.get("images"):
                    results.append((time.perf_counter(), answer.get("request_id")))
                elif answer.get("type") == "x-fal-error":
                    errors.append(f"{answer.get('error')}: {answer.get('reason')}"[:300])

    reader = asyncio.create_task(receive())
    fields = request(jpeg, JPEG_SIDE, "sketch", output_format="jpeg")
    frames = max(1, round(seconds / FRAME_INTERVAL))
    before = cpu_seconds(proc)
    start = time.perf_counter() + 0.05
    try:
        for k in range(frames):
            if (delay := start + k * FRAME_INTERVAL - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            await ws.send(pack({**fields, "request_id": k}))
        await asyncio.sleep(LINGER_SECONDS)
        cpu = cpu_seconds(proc) - before
    finally:
        await ws.close()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    answered = {rid for _, rid in results}
    return {
        "frames_sent": frames,
        "results": len(results),
        "distinct_results": len(answered),
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:3],
        "results_per_s": result_rate([t for t, _ in results], start, frames * FRAME_INTERVAL),
        "seconds": frames * FRAME_INTERVAL,
        "daphne_percent_of_core": 100 * cpu / (time.perf_counter() - start),
    }


# -- 1. stroke latency -------------------------------------------------------------------------


RELAY_HEADER = (
    f"  {'members':>7} {'path':<8} {'sent':>5} {'recv/member':>11} {'dropped':>7} {'dup':>3} {'err':>3}"
    f" {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'max ms':>7} {'lag99':>5} {'KB/s in':>7} {'daphne%':>7} {'bench%':>6}"
)


def print_relay_row(label: str, r: dict[str, Any], daphne_name: str) -> None:
    lat, cpu = r["latency_ms"], r["cpu"]
    per_member = r["ops_received"] / max(1, r["members"] - r["drawers"])
    print(
        f"  {r['members']:>7} {label:<8} {r['ops_sent']:>5} {per_member:>11.1f} {r['dropped']:>7}"
        f" {r['duplicates']:>3} {r['errors'] + r['closed_early']:>3} {lat['p50']:>7.2f} {lat['p95']:>7.2f}"
        f" {lat['p99']:>7.2f} {lat['max']:>7.1f} {r['send_lag_ms']['p99']:>5.1f}"
        f" {r['kb_received_per_member_per_s']:>7.1f}"
        f" {cpu[daphne_name]['percent_of_core']:>7.0f} {cpu['bench']['percent_of_core']:>6.0f}",
        flush=True,
    )


def bench_relay(
    gateway: Child, echo: Child, members: list[httpx.Client], sizes: list[int], seconds: float
) -> dict[str, Any]:
    ticks = stroke_ticks(seconds)
    section(f"1. Stroke latency: one member draws, the others receive ({ticks} messages, {ticks * TICK:g} s a run)")
    print(f"  (a message every {TICK * 1000:g} ms: down, {STROKE_MESSAGES - 2} moves of {POINTS_PER_MOVE} points, up;")
    print(f"   latency from the send to each other member's receipt, the first {WARMUP_SECONDS:g} s left out;")
    print("   dropped: ops some member never got; err: errors and early closes; lag99: p99 of how late the drawer")
    print("   sent against its schedule, ms (this process's own stalls); KB/s in: all a member was sent;")
    print("   CPU: % of one core, daphne% the process serving the run, bench% this process's clients)")
    print(RELAY_HEADER, flush=True)
    procs = {"daphne": psutil.Process(gateway.proc.pid), "daphne-echo": psutil.Process(echo.proc.pid)}
    runs: list[dict[str, Any]] = []
    for index, size in enumerate(sizes):
        entry: dict[str, Any] = {"members": size}
        slug = make_room(members[0], ECHO_APP)
        entry["room_slug"] = slug
        paths = {
            "room": (gateway.url(f"/rooms/{slug}/ws"), [member_headers(c) for c in members[:size]], True, "daphne"),
            "baseline": (echo.url(f"/bench-{size}"), [{} for _ in range(size)], False, "daphne-echo"),
        }
        for label in ("room", "baseline")[:: -1 if index % 2 else 1]:  # alternate who goes first
            url, headers, room, name = paths[label]
            run = asyncio.run(run_members(url, headers, 1, seconds, procs, room=room))
            entry[label] = figures = relay_figures(run)
            print_relay_row(label, figures, name)
        room_s, base_s = entry["room"]["latency_ms"], entry["baseline"]["latency_ms"]
        entry["ratio_p50"] = room_s["p50"] / base_s["p50"]
        entry["ratio_p99"] = room_s["p99"] / base_s["p99"]
        entry["p50_ok"] = room_s["p50"] <= P50_TARGET_MS
        entry["no_drops"] = not entry["room"]["dropped"] and not entry["room"]["closed_early"]
        runs.append(entry)
    print()
    for entry in runs:
        size, room_s = entry["members"], entry["room"]["latency_ms"]
        row(
            f"{size} members: room p50 / p99",
            f"{room_s['p50']:.2f} / {room_s['p99']:.2f} ms",
            f"target p50 <= {P50_TARGET_MS:g} ms: {verdict(entry['p50_ok'])}",
        )
        row(
            f"{size} members: room / baseline p50, p99",
            f"{entry['ratio_p50']:.2f} / {entry['ratio_p99']:.2f}",
        )
        room = entry["room"]
        row(
            f"{size} members: room ops dropped",
            f"{room['dropped']} of {room['ops_expected']}",
            f"target 0: {verdict(entry['no_drops'])}",
        )
    return {
        "sizes": sizes,
        "messages_per_run": ticks,
        "tick_ms": TICK * 1000,
        "points_per_move": POINTS_PER_MOVE,
        "warmup_seconds": WARMUP_SECONDS,
        "target_p50_ms": P50_TARGET_MS,
        "runs": runs,
    }


# -- 2. one stream per room --------------------------------------------------------------------


def bench_stream(
    runner: Child,
    gateway: Child,
    env: dict[str, str],
    auth: str,
    members: list[httpx.Client],
    seconds: float,
    delay_ms: float,
) -> dict[str, Any]:
    count = len(members)
    section(f"2. One stream per room: {SLOW_APP} (echo, {delay_ms:g} ms a frame), {seconds:g} s each")
    print(
        f"  (single user: a {JPEG_SIDE}x{JPEG_SIDE} JPEG every {FRAME_INTERVAL * 1000:g} ms on the realtime WebSocket,"
    )
    print(f"   max_buffering=1; room: {count} members all drawing, a message every {TICK * 1000:g} ms each; results")
    print(f"   per second from {RATE_WARMUP:g} s into the run to its end, as one member got them)", flush=True)
    daphne_proc = psutil.Process(gateway.proc.pid)
    procs = {"daphne": daphne_proc, "runner": psutil.Process(runner.proc.pid)}
    jpeg = drawing_jpeg(JPEG_SIDE)
    single = asyncio.run(
        single_user(gateway.url(f"/{SLOW_APP}/realtime?max_buffering=1"), auth, jpeg, seconds, daphne_proc)
    )
    slug = make_room(members[0], SLOW_APP)

    async def sessions() -> dict[str, int]:
        return await asyncio.to_thread(runner_sessions, runner.port)

    run = asyncio.run(
        run_members(
            gateway.url(f"/rooms/{slug}/ws"),
            [member_headers(c) for c in members],
            count,
            seconds,
            procs,
            room=True,
            linger=LINGER_SECONDS,
            probe=sessions,
        )
    )
    relay = relay_figures(run)
    observer = run.peers[0]
    drawn_for = stroke_ticks(seconds) * TICK
    got = [len(p.results) for p in run.peers]
    room = {
        "members": count,
        "slug": slug,
        "results_per_s": result_rate([t for t, _ in observer.results], run.start, drawn_for),
        "results": len(observer.results),
        "distinct_results": len({rid for _, rid in observer.results}),
        "results_per_member_min_max": [min(got), max(got)],
        "relay": relay,
        "runner_sessions_during": run.probe,
    }
    time.sleep(USAGE_SETTLE_SECONDS)  # the usage rows and the room's frames are written
    recorded_now = room_figures(env, slug)
    ratio = room["results_per_s"] / single["results_per_s"]
    runner_sessions_slow = (run.probe or {}).get(SLOW_APP)
    frames = recorded_now["room"]["frames"]
    result = {
        "app": SLOW_APP,
        "delay_ms": delay_ms,
        "seconds": seconds,
        "frame_interval_ms": FRAME_INTERVAL * 1000,
        "single": single,
        "room": room,
        "recorded": recorded_now,
        "ratio_room_single": ratio,
        "target_tolerance": RATE_TOLERANCE,
        "rate_ok": abs(ratio - 1) <= RATE_TOLERANCE,
        "one_stream_ok": (
            frames == room["distinct_results"] == room["results"] == recorded_now["room"]["results"]
            and recorded_now["room_frames"] == frames
            and runner_sessions_slow == 1
            and min(got) == max(got)
        ),
    }
    print_stream(result)
    return result


def print_stream(r: dict[str, Any]) -> None:
    single, room, rec = r["single"], r["room"], r["recorded"]
    row(
        "single user: results/s",
        f"{single['results_per_s']:.2f}",
        f"{single['results']} results for {single['frames_sent']} frames, {single['errors']} errors",
    )
    lo, hi = room["results_per_member_min_max"]
    row(
        f"room of {room['members']}: results/s (one member)",
        f"{room['results_per_s']:.2f}",
        f"{room['results']} results; each member got {lo}..{hi}",
    )
    ratio, tolerance = r["ratio_room_single"], r["target_tolerance"]
    row("room / single user", f"{ratio:.3f}", f"target 1 +- {tolerance:g}: {verdict(r['rate_ok'])}")
    row(
        "room: frames recorded / results",
        f"{rec['room']['frames']} / {rec['room']['results']}",
        f"usage rows ({rec['room']['rows']}, mode room); the room's frames: {rec['room_frames']}",
    )
    row("room: results one member got", f"{room['results']}", f"{room['distinct_results']} distinct request_ids")
    sessions = room["runner_sessions_during"] or {}
    row(
        f"runner sessions of {r['app']} mid-room",
        str(sessions.get(r["app"])),
        f"no duplicate inference (frames = results, one session): {verdict(r['one_stream_ok'])}",
    )
    row(
        "single user: frames recorded / results",
        f"{rec['realtime']['frames']} / {rec['realtime']['results']}",
        f"usage rows ({rec['realtime']['rows']}, mode realtime)",
    )
    relay, lat = room["relay"], room["relay"]["latency_ms"]
    row(
        f"room of {room['members']} drawing: op p50 / p99",
        f"{lat['p50']:.2f} / {lat['p99']:.2f} ms",
        f"{relay['dropped']} of {relay['ops_expected']} ops dropped; lag99 {relay['send_lag_ms']['p99']:.1f} ms; daphne"
        f" {relay['cpu']['daphne']['percent_of_core']:.0f}%, runner {relay['cpu']['runner']['percent_of_core']:.0f}%",
    )


# -- main --------------------------------------------------------------------------------------


def verdicts(results: dict[str, Any]) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for entry in results.get("relay", {}).get("runs", []):
        out[f"room p50 <= {P50_TARGET_MS:g} ms, {entry['members']} members"] = entry["p50_ok"]
        out[f"no op dropped, {entry['members']} members"] = entry["no_drops"]
    if stream := results.get("stream"):
        out[f"room results/s within {stream['target_tolerance']:.0%} of one user's"] = stream["rate_ok"]
        out["no duplicate inference"] = stream["one_stream_ok"]
        relay = stream["room"]["relay"]
        out[f"no op dropped, {relay['members']} members all drawing"] = (
            not relay["dropped"] and not relay["closed_early"]
        )
    servers = results.get("servers", {})
    out["servers exit 0, no tracebacks or ERROR lines"] = bool(servers) and all(
        s["exit_code"] == 0 and not s["log"]["tracebacks"] and not s["log"]["error_lines"] for s in servers.values()
    )
    return out


def run(args: argparse.Namespace, results: dict[str, Any]) -> None:
    servers: dict[str, Any] = {}
    results["servers"] = servers
    people = max(max(args.sizes), args.rate_members)
    with tempfile.TemporaryDirectory(prefix="bench-rooms-") as var_dir:
        runner: Child | None = None
        try:
            with child("runner", runner_args(args.delay_ms), clean_env(AUTH_ENV)) as runner:
                runner.port = int(expect_line(runner, LISTENING, START_TIMEOUT)[1])
                env = {**gateway_env(var_dir, runner.port), "USAGE_FLUSH_INTERVAL": str(USAGE_FLUSH_SECONDS)}
                auth = provision(env)
                names = make_users(env, people)
                with gateway_child("daphne", env, servers) as gateway, group_echo_child(servers) as echo:
                    print(
                        f"runner on port {runner.port}, gateway (daphne) on {gateway.port},"
                        f" group echo (daphne-echo) on {echo.port}",
                        flush=True,
                    )
                    base = f"http://127.0.0.1:{gateway.port}"
                    with ThreadPoolExecutor(4) as pool:
                        members = list(pool.map(lambda name: log_in(base, name), names))
                    try:
                        print(f"{len(members)} users logged in over HTTP", flush=True)
                        results["relay"] = bench_relay(gateway, echo, members, args.sizes, args.relay_seconds)
                        results["stream"] = bench_stream(
                            runner, gateway, env, auth, members[: args.rate_members], args.rate_seconds, args.delay_ms
                        )
                    finally:
                        for client in members:
                            client.close()
        finally:
            if runner is not None:
                servers["runner"] = {"exit_code": runner.exit_code, "log": log_problems(runner.log)}
            print_servers(servers)
    results["verdicts"] = verdicts(results)
    results["load_average_at_end"] = load = [round(v, 2) for v in os.getloadavg()]
    section("Verdict")
    row("load average (1/5/15 min) at the end", " / ".join(f"{v:.2f}" for v in load))
    for label, ok in results["verdicts"].items():
        row(label, verdict(ok), label_width=52, value_width=6)


def parse_counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 2:
        raise ValueError(text)
    return counts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke run")
    parser.add_argument("--sizes", help=f"room sizes of section 1, members ({FULL['sizes']})")
    parser.add_argument("--relay-seconds", type=float, help=f"seconds of drawing per run ({FULL['relay_seconds']:g})")
    parser.add_argument(
        "--rate-seconds", type=float, help=f"seconds of drawing in section 2, each ({FULL['rate_seconds']:g})"
    )
    parser.add_argument("--rate-members", type=int, default=8, help="members drawing in section 2's room (8)")
    parser.add_argument("--delay-ms", type=float, default=40.0, help=f"{SLOW_APP}'s service time, ms (40)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file of all figures")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    try:
        args.sizes = parse_counts(args.sizes)
    except ValueError:
        parser.error(f"--sizes: expected integers of at least 2 separated by commas, got {args.sizes!r}")
    if args.rate_members < 1 or args.rate_seconds <= RATE_WARMUP or args.relay_seconds <= 0:
        parser.error(f"--rate-members must be positive, --rate-seconds above {RATE_WARMUP:g}, --relay-seconds above 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    command = shlex.join([sys.executable, *(sys.argv if argv is None else [sys.argv[0], *argv])])
    versions = {
        "daphne": daphne.__version__,
        "channels": channels.__version__,
        "websockets": websockets.__version__,
    }
    config = {**vars(args), "out": str(args.out), "command": command}
    results: dict[str, Any] = {"machine": machine(versions), "config": config}
    print(f"Command: {command}")
    print_machine(results["machine"], SHOWN_VERSIONS)
    with recorded(results, args.out, started):
        run(args, results)
    return 0 if results["verdicts"] and all(results["verdicts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
