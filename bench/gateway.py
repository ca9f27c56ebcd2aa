"""Benchmark of the gateway (daphne + Channels) in front of the runner: added latency and load.

Run from anywhere: ``python bench/gateway.py [--quick]``. It starts a runner with ``local/echo`` and the
gateway under daphne (with a throwaway database, user and API key) as subprocesses of this interpreter,
prints a table, and writes every figure to ``bench/out/gateway.json``.

1. Round trip: one ~85 KB 512x512 JPEG frame, sequential send-then-recv on one connection, through
   gateway + runner against the runner alone, interleaved in alternating blocks; the difference is
   the gateway's added time.
2. Load: N sessions at 8 fps each (a small 256x256 sketch, passed through by echo), first straight to
   the runner, then through the gateway. The load generator is its own process (this script with
   ``--load-worker``). Per run: frames sent, answered, dropped (replaced in the buffer of 1), lost
   (a session's final input unanswered after the drain), misrouted (an answer to a request_id that
   was not sent on that connection), errors, latency, and CPU of runner, daphne and load generator.
   N grows until the gateway loses or misroutes a result or its p99 exceeds the runner's by 30 ms.
3. Usage recording: a second daphne (same runner, database and settings, plus
   ``REALTIME_USAGE_RECORDING=0``). K connections each send the sketch back-to-back (send, wait for
   the answer, send the next) for a block of seconds, from a worker process (``--throughput-worker``);
   blocks alternate between the gateway that records and the one that does not. Results per second
   with recording on must be at least 0.95x those with it off; daphne CPU per frame for each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import daphne
import msgpack
import numpy as np
import psutil
import websockets
from backing import DATABASE_URL, REDIS_URL, fresh_database
from common import (
    JPEG_SIDE,
    LISTENING,
    MAX_SIZE,
    ROOT,
    SKETCH_SIDE,
    STOP_TIMEOUT,
    Child,
    answer_of,
    child,
    clean_env,
    daphne_args,
    expect_line,
    free_port,
    interleaved_round_trips,
    json_safe,
    log_problems,
    machine,
    manage,
    noisy_jpeg,
    noisy_jpeg_near,
    pack,
    print_machine,
    print_servers,
    recorded,
    request,
    round_trips,
    row,
    section,
    sketch_jpeg,
    stats,
    verdict,
    wait_http_ok,
)
from first_result import Route, gateway_routes, measure_first_results, mint_token, session_cookie
from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as sync_connect

SCRIPT = Path(__file__).resolve()
DEFAULT_OUT = ROOT / "bench" / "out" / "gateway.json"
API_KEY = re.compile(r"^[A-Za-z0-9_-]{1,32}:[A-Za-z0-9_-]{1,128}$")
START_TIMEOUT = 120.0
APP_PATH = "/local/echo/realtime"
SHOWN_VERSIONS = ("websockets", "daphne")  # on the machine table
USER, PASSWORD = "bench", "bench-pass-123"
AUTH_ENV = "BENCH_GATEWAY_AUTHORIZATION"  # the load worker's Authorization header, kept out of argv

RT_WARMUP = 100
ADDED_P50_TARGET_MS = 1.5
ADDED_P99_TARGET_MS = 5.0

FPS = 8
RID_STRIDE = 1_000_000  # session i sends request_ids i * RID_STRIDE + 0, 1, 2, ...: unique across sessions
CONNECT_CONCURRENCY = 16
CONNECT_TIMEOUT = 120.0  # for all sessions of one run to connect
DRAIN_SECONDS = 2.0  # after the last send, how long every session's final input may take to be answered
P99_SLACK_MS = 30.0
TARGET_SESSIONS = 100
SETTLE_SECONDS = 60.0  # at most this long to wait for the servers to go idle after a run

THROUGHPUT_CONNECTIONS = 16
THROUGHPUT_WARMUP_SECONDS = 1.0  # one discarded block per gateway first (the second daphne starts cold)
RECV_TIMEOUT = 30.0  # a throughput session gives up when an answer takes longer
RATIO_TARGET = 0.95  # results per second with usage recording on, over those with it off

LARGE_FRAME_BYTES = 118_000  # the larger of the two JPEGs of section 4 (the other is the 83 KB one)
RELAY_CONNECTIONS = 8
RELAY_CPU_TARGET = 1.2  # gateway CPU per frame over a bare websockets relay's
FIRST_RESULT_TARGET_MS = 3.0  # upgrade to first result, p50 above the runner alone's

FULL = {
    "relay_blocks": 6,
    "relay_seconds": 4.0,
    "first_result_rounds": 200,
    "round_trips": 2000,
    "load_seconds": 20.0,
    "sessions": "25,50,100,150,200",
    "throughput_blocks": 6,
    "throughput_seconds": 3.0,
}
QUICK = {
    "relay_blocks": 2,
    "relay_seconds": 2.0,
    "first_result_rounds": 30,
    "round_trips": 200,
    "load_seconds": 5.0,
    "sessions": "10,25",
    "throughput_blocks": 2,
    "throughput_seconds": 2.0,
}


# -- subprocesses ------------------------------------------------------------------------------


def gateway_env(var_dir: str, runner_port: int) -> dict[str, str]:
    return {
        **clean_env(AUTH_ENV),
        "RUNNER_URLS": f"ws://127.0.0.1:{runner_port}",
        "REALTIME_VAR_DIR": var_dir,
        "DJANGO_SETTINGS_MODULE": "realtime_site.settings",
        "REALTIME_FRAMES_PER_MINUTE": "1000000",
        "REALTIME_MAX_CONNECTIONS": "100000",
        "REALTIME_CONNECTS_PER_SECOND": "0",  # every session comes from 127.0.0.1
    }


def provision(env: dict[str, str]) -> str:
    """Migrate the fresh database, create the bench user and an API key; the Authorization header."""
    manage(env, "migrate", "--noinput")
    create = (
        "from django.contrib.auth import get_user_model; "
        f"get_user_model().objects.create_user({USER!r}, password={PASSWORD!r})"
    )
    manage(env, "shell", "-c", create)
    lines = [line.strip() for line in manage(env, "create_api_key", USER).splitlines() if line.strip()]
    if len(lines) != 1 or not API_KEY.match(lines[0]):
        raise RuntimeError(f"create_api_key printed {len(lines)} lines, not one key_id:secret")
    return f"Key {lines[0]}"


def runner_args() -> list[str]:
    return ["-m", "realtime_site.runner", "--host", "127.0.0.1", "--port", "0", "--apps", "local/echo"]


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def settle(procs: list[psutil.Process]) -> float:
    """Wait (at most SETTLE_SECONDS) until the servers are idle (the closes are done); seconds waited."""
    started = time.monotonic()
    while (waited := time.monotonic() - started) < SETTLE_SECONDS:
        before = sum(cpu_seconds(p) for p in procs)
        time.sleep(0.25)
        if sum(cpu_seconds(p) for p in procs) - before < 0.25 * 0.05:  # under 5% of a core
            return waited
    return waited


# -- 1. round trip -----------------------------------------------------------------------------


def bench_round_trip(runner: Child, gateway: Child, auth: str, jpeg: bytes, frames: int, blocks: int) -> dict[str, Any]:
    frame = pack(request(jpeg, JPEG_SIDE, "echo", request_id=1))
    common: dict[str, Any] = {"compression": None, "max_size": MAX_SIZE, "open_timeout": 30}
    with (
        sync_connect(runner.url(APP_PATH), **common) as runner_ws,
        sync_connect(gateway.url(APP_PATH), additional_headers={"Authorization": auth}, **common) as gateway_ws,
    ):
        same = {}
        for name, ws in (("runner", runner_ws), ("gateway", gateway_ws)):
            ws.send(frame)
            answer = answer_of(ws.recv())
            same[name] = answer["images"][0]["content"] == jpeg and answer.get("request_id") == 1
            round_trips(ws, frame, RT_WARMUP)
        runner_ms, gateway_ms = interleaved_round_trips(runner_ws, gateway_ws, frame, frames, blocks)
    runner_s, gateway_s = stats(runner_ms), stats(gateway_ms)
    return {
        "frame_bytes": len(frame),
        "returns_input_bytes": same,
        "frames": frames,
        "blocks": blocks,
        "warmup": RT_WARMUP,
        "runner_ms": runner_s,
        "gateway_ms": gateway_s,
        "added_p50_ms": gateway_s["p50"] - runner_s["p50"],
        "added_p99_ms": gateway_s["p99"] - runner_s["p99"],
        "added_mean_ms": gateway_s["mean"] - runner_s["mean"],
        "target_added_p50_ms": ADDED_P50_TARGET_MS,
        "target_added_p99_ms": ADDED_P99_TARGET_MS,
    }


def print_round_trip(rt: dict[str, Any]) -> None:
    section(f"1. Round trip ({rt['frames']} frames each in {rt['blocks']} alternating blocks, one connection)")
    row("frame (msgpack) size", f"{rt['frame_bytes']:,} B")
    for name, ok in rt["returns_input_bytes"].items():
        row(f"{name}: answer is the input JPEG", str(ok))
    for key, label in (("runner_ms", "runner alone"), ("gateway_ms", "gateway + runner")):
        s = rt[key]
        row(f"{label} p50 / p99 / mean", f"{s['p50']:.3f} / {s['p99']:.3f} / {s['mean']:.3f} ms")
    p50, p99 = rt["added_p50_ms"], rt["added_p99_ms"]
    row(
        "gateway added at p50",
        f"{p50:.3f} ms",
        f"target <= {ADDED_P50_TARGET_MS:g} ms: {verdict(p50 <= ADDED_P50_TARGET_MS)}",
    )
    row(
        "gateway added at p99",
        f"{p99:.3f} ms",
        f"target <= {ADDED_P99_TARGET_MS:g} ms: {verdict(p99 <= ADDED_P99_TARGET_MS)}",
    )
    row("gateway added mean", f"{rt['added_mean_ms']:.3f} ms")


# -- 2. load: the worker (its own process) -----------------------------------------------------


@dataclass
class Session:
    index: int
    final_rid: int
    ws: AsyncConnection | None = None
    sent: dict[int, float] = field(default_factory=dict)  # request_id -> send time
    latency_ms: dict[int, float] = field(default_factory=dict)  # request_id -> round trip
    lag_ms: list[float] = field(default_factory=list)  # how late each send was against its deadline
    errors: list[str] = field(default_factory=list)
    misrouted: int = 0
    duplicates: int = 0
    wrong_image: int = 0
    closed: str | None = None  # why the connection ended before the bench closed it
    final: asyncio.Event = field(default_factory=asyncio.Event)


async def open_session(url: str, headers: dict[str, str], gate: asyncio.Semaphore) -> AsyncConnection:
    async with gate:
        return await async_connect(
            url, additional_headers=headers, compression=None, max_size=MAX_SIZE, open_timeout=60, ping_interval=None
        )


async def send_paced(s: Session, fields: dict[str, Any], start: float, count: int) -> None:
    """One frame every 1/FPS s at absolute deadlines from ``start``, with increasing request_ids."""
    assert s.ws is not None
    for k in range(count):
        deadline = start + k / FPS
        if (delay := deadline - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        rid = s.index * RID_STRIDE + k
        now = time.perf_counter()
        s.lag_ms.append((now - deadline) * 1000)
        s.sent[rid] = now
        try:
            await s.ws.send(pack({**fields, "request_id": rid}))
        except ConnectionClosed as exc:
            s.closed = s.closed or f"send: {exc}"
            return


async def receive(s: Session, image: bytes, closing: asyncio.Event) -> None:
    assert s.ws is not None
    try:
        async for message in s.ws:
            now = time.perf_counter()
            if isinstance(message, str):
                s.errors.append(message[:300])
                continue
            answer = msgpack.unpackb(message)
            rid = answer.get("request_id")
            sent = s.sent.get(rid) if isinstance(rid, int) else None
            if sent is None:
                s.misrouted += 1
            elif rid in s.latency_ms:
                s.duplicates += 1
            else:
                s.latency_ms[rid] = (now - sent) * 1000
                if answer["images"][0]["content"] != image:
                    s.wrong_image += 1
                if rid == s.final_rid:
                    s.final.set()
    except ConnectionClosed as exc:
        if not closing.is_set():
            s.closed = s.closed or f"receive: {exc}"
    if not closing.is_set():
        s.closed = s.closed or "closed by the server"


def summarise_load(sessions: list[Session], connect_errors: list[str], seconds: float) -> dict[str, Any]:
    sent = answered = dropped = lost = 0
    latency: list[float] = []
    lag: list[float] = []
    errors: list[str] = []
    for s in sessions:
        unanswered = s.sent.keys() - s.latency_ms.keys()
        final_lost = s.final_rid not in s.latency_ms
        sent += len(s.sent)
        answered += len(s.latency_ms)
        lost += final_lost
        dropped += len(unanswered) - (s.final_rid in unanswered)
        latency.extend(s.latency_ms.values())
        lag.extend(s.lag_ms)
        errors.extend(s.errors)
    return {
        "sessions": len(sessions) + len(connect_errors),
        "connected": len(sessions),
        "connect_errors": len(connect_errors),
        "connect_error_samples": connect_errors[:3],
        "fps": FPS,
        "seconds": seconds,
        "frames_sent": sent,
        "answered": answered,
        "dropped": dropped,
        "lost": lost + len(connect_errors),
        "misrouted": sum(s.misrouted for s in sessions),
        "duplicates": sum(s.duplicates for s in sessions),
        "wrong_image": sum(s.wrong_image for s in sessions),
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:3],
        "closed_early": sum(s.closed is not None for s in sessions),
        "closed_samples": sorted({s.closed for s in sessions if s.closed})[:3],
        "latency_ms": stats(latency),
        "send_lag_ms": stats(lag),
    }


async def load_worker(url: str, count: int, seconds: float) -> dict[str, Any]:
    """Connect ``count`` sessions, say ``ready``, wait for ``go`` on stdin, drive, say ``sent``, drain."""
    auth = os.environ.get(AUTH_ENV)
    headers = {"Authorization": auth} if auth else {}
    image = sketch_jpeg()
    fields = request(image, SKETCH_SIDE, "sketch")
    frames = max(1, round(seconds * FPS))
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    opened = await asyncio.gather(*(open_session(url, headers, gate) for _ in range(count)), return_exceptions=True)
    sessions: list[Session] = []
    connect_errors: list[str] = []
    for ws in opened:
        if isinstance(ws, BaseException):
            connect_errors.append(f"{type(ws).__name__}: {ws}"[:300])
        else:
            index = len(sessions)
            sessions.append(Session(index, index * RID_STRIDE + frames - 1, ws))
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    closing = asyncio.Event()
    receivers = [asyncio.create_task(receive(s, image, closing)) for s in sessions]
    start = time.perf_counter() + 0.05
    period = 1 / FPS
    # Sessions start staggered across one period, as independent clients would.
    await asyncio.gather(
        *(send_paced(s, fields, start + period * i / max(1, len(sessions)), frames) for i, s in enumerate(sessions))
    )
    print("sent", flush=True)
    finals = [asyncio.create_task(s.final.wait()) for s in sessions]
    if finals:
        await asyncio.wait(finals, timeout=DRAIN_SECONDS)
    for task in finals:
        task.cancel()
    closing.set()
    with contextlib.suppress(TimeoutError):
        closes = (s.ws.close() for s in sessions if s.ws is not None)
        await asyncio.wait_for(asyncio.gather(*closes, return_exceptions=True), 20)
    for task in receivers:
        task.cancel()
    await asyncio.gather(*receivers, return_exceptions=True)
    return summarise_load(sessions, connect_errors, seconds)


def worker_main(args: argparse.Namespace) -> int:
    if args.throughput_worker:
        url, count, seconds = args.throughput_worker
        result = asyncio.run(throughput_worker(url, int(count), float(seconds), args.frames))
    else:
        result = asyncio.run(load_worker(args.load_worker, args.worker_sessions, args.load_seconds))
    print("result " + json.dumps(json_safe(result)), flush=True)
    return 0


# -- 2. load: the driver -----------------------------------------------------------------------


def drive(
    name: str, args: list[str], servers: list[Child], auth: str | None, done: str, timeout: float
) -> dict[str, Any]:
    """Run a worker (this script with ``args``): ``go`` once it is ready; its result, with the wall time from
    ``go`` until it prints ``done`` and the CPU of the servers and of the worker ("load") over that time."""
    env = clean_env(AUTH_ENV)
    if auth:
        env[AUTH_ENV] = auth
    with child(name, [str(SCRIPT), *args], env, stdin=True) as worker:
        expect_line(worker, r"^ready$", CONNECT_TIMEOUT)
        procs = {c.name: psutil.Process(c.proc.pid) for c in servers}
        procs["load"] = psutil.Process(worker.proc.pid)
        before = {name: cpu_seconds(p) for name, p in procs.items()}
        started = time.perf_counter()
        assert worker.proc.stdin is not None
        worker.proc.stdin.write("go\n")
        worker.proc.stdin.flush()
        expect_line(worker, f"^{done}$", timeout)
        wall = time.perf_counter() - started
        cpu = {name: cpu_seconds(p) - before[name] for name, p in procs.items()}
        result = json.loads(expect_line(worker, r"^result (.*)$", DRAIN_SECONDS + 60)[1])
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.proc.wait(STOP_TIMEOUT)  # it exits by itself once it has answered
    if worker.exit_code != 0:
        raise RuntimeError(f"{name} exited with {worker.exit_code}{worker.tail()}")
    result["window_seconds"] = wall
    result["cpu"] = {name: {"seconds": s, "percent_of_core": 100 * s / wall} for name, s in cpu.items()}
    return result


def run_load(target: Child, servers: list[Child], count: int, seconds: float, auth: str | None) -> dict[str, Any]:
    """One load run against ``target``; CPU of servers and worker is taken over the sending period."""
    args = ["--load-worker", target.url(APP_PATH), "--worker-sessions", str(count), "--load-seconds", str(seconds)]
    result = drive("load generator", args, servers, auth, "sent", seconds + 60)
    result["path"] = "gateway" if auth else "runner alone"
    return result


def judge(alone: dict[str, Any], gateway: dict[str, Any]) -> list[str]:
    """Why the gateway run misses the target at its N (empty: it meets it); ``alone`` is the runner's run."""
    reasons = []
    for key in ("lost", "misrouted", "duplicates", "wrong_image", "errors", "closed_early", "connect_errors"):
        if gateway[key]:
            reasons.append(f"{gateway[key]} {key.replace('_', ' ')}")
    bound = alone["latency_ms"]["p99"] + P99_SLACK_MS
    p99 = gateway["latency_ms"]["p99"]
    if not p99 <= bound:  # NaN fails too
        reasons.append(f"p99 {p99:.1f} ms > runner p99 + {P99_SLACK_MS:g} = {bound:.1f} ms")
    return reasons


LOAD_HEADER = (
    f"  {'N':>4} {'path':<8} {'sent':>7} {'answered':>8} {'dropped':>7} {'lost':>4} {'misrt':>5} {'err':>4}"
    f" {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'lag99':>6} {'runner%':>7} {'daphne%':>7} {'load%':>6} {'idle':>5}"
)


def print_load_row(count: int, label: str, r: dict[str, Any]) -> None:
    lat, cpu = r["latency_ms"], r["cpu"]
    pct = [f"{cpu[name]['percent_of_core']:.0f}" if name in cpu else "-" for name in ("runner", "daphne", "load")]
    print(
        f"  {count:>4} {label:<8} {r['frames_sent']:>7} {r['answered']:>8} {r['dropped']:>7} {r['lost']:>4}"
        f" {r['misrouted']:>5} {r['errors']:>4} {lat['p50']:>7.2f} {lat['p99']:>7.2f} {lat['max']:>7.1f}"
        f" {r['send_lag_ms']['p99']:>6.1f} {pct[0]:>7} {pct[1]:>7} {pct[2]:>6} {r['busy_after_close_s']:>5.1f}",
        flush=True,
    )


def bench_load(runner: Child, gateway: Child, auth: str, counts: list[int], seconds: float) -> dict[str, Any]:
    side = f"{SKETCH_SIDE}x{SKETCH_SIDE}"
    section(f"2. Load: N sessions x {FPS} fps, {side} sketch ({len(sketch_jpeg()):,} B), {seconds:g} s a run")
    print("  (CPU: % of one core over the sending period; lag99: the load generator's send lateness p99, ms;")
    print("   idle: seconds until runner and daphne were idle again after the sessions closed)")
    print(LOAD_HEADER, flush=True)
    servers = [runner, gateway]
    quiet = [psutil.Process(c.proc.pid) for c in servers]
    runs: list[dict[str, Any]] = []
    largest: int | None = None
    for count in counts:
        entry: dict[str, Any] = {"sessions": count}
        runs.append(entry)
        try:
            for label, target, key in (("runner", runner, None), ("gateway", gateway, auth)):
                entry[label] = result = run_load(target, servers, count, seconds, key)
                result["busy_after_close_s"] = settle(quiet)  # the next run starts on idle servers
                print_load_row(count, label, result)
            entry["reasons"] = judge(entry["runner"], entry["gateway"])
        except RuntimeError as exc:
            entry["reasons"] = [f"run failed: {exc}"]
        entry["passed"] = not entry["reasons"]
        note = "meets the target" if entry["passed"] else "MISSED: " + "; ".join(entry["reasons"])
        print(f"  {'':>4} {'':<8} {note[:400]}", flush=True)
        if not entry["passed"]:
            break
        largest = count
    ok = largest is not None and largest >= TARGET_SESSIONS
    untried = runs[-1].get("passed") and counts[-1] < TARGET_SESSIONS  # the list stopped short of the target
    note = f"(N = {TARGET_SESSIONS} not tried)" if untried else f"target >= {TARGET_SESSIONS}: {verdict(ok)}"
    row("largest N meeting the target", str(largest), note)
    return {
        "runs": runs,
        "largest_passing_sessions": largest,
        "target_sessions": TARGET_SESSIONS,
        "p99_slack_ms": P99_SLACK_MS,
        "drain_seconds": DRAIN_SECONDS,
        "sketch_bytes": len(sketch_jpeg()),
    }


# -- 3. usage recording: the throughput worker (its own process) ------------------------------


@dataclass
class Saturating:
    """One connection sending back-to-back."""

    index: int
    ws: AsyncConnection
    sent: int = 0
    replies: int = 0  # binary messages received, the right answer or not
    answered: int = 0  # answers to the frame just sent, carrying its image
    misrouted: int = 0
    wrong_image: int = 0
    errors: list[str] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    closed: str | None = None


async def saturate(s: Saturating, inputs: list[tuple[dict[str, Any], bytes]], end: float) -> None:
    """Send a frame, wait for its answer, send the next, until ``end`` (the last answer may come after it).
    ``inputs``: (fields, image) pairs, taken in turn."""
    while (start := time.perf_counter()) < end:
        rid = s.index * RID_STRIDE + s.sent
        fields, image = inputs[s.sent % len(inputs)]
        try:
            await s.ws.send(pack({**fields, "request_id": rid}))
            s.sent += 1
            async with asyncio.timeout(RECV_TIMEOUT):
                reply = await s.ws.recv()
        except (ConnectionClosed, TimeoutError) as exc:
            s.closed = f"{type(exc).__name__}: {exc}"[:300]
            return
        latency = (time.perf_counter() - start) * 1000
        if isinstance(reply, str):
            s.errors.append(reply[:300])
            continue
        s.replies += 1
        answer = msgpack.unpackb(reply)
        if answer.get("request_id") != rid:
            s.misrouted += 1
        elif answer["images"][0]["content"] != image:
            s.wrong_image += 1
        else:
            s.answered += 1
            s.latency_ms.append(latency)


def summarise_throughput(
    sessions: list[Saturating], connect_errors: list[str], seconds: float, elapsed: float
) -> dict[str, Any]:
    answered = sum(s.answered for s in sessions)
    errors = [e for s in sessions for e in s.errors]
    return {
        "connections": len(sessions) + len(connect_errors),
        "connect_errors": len(connect_errors),
        "connect_error_samples": connect_errors[:3],
        "seconds": seconds,
        "elapsed_seconds": elapsed,
        "sent": sum(s.sent for s in sessions),
        "replies": sum(s.replies for s in sessions),
        "answered": answered,
        "frames_per_s": answered / elapsed if elapsed > 0 else math.nan,
        "misrouted": sum(s.misrouted for s in sessions),
        "wrong_image": sum(s.wrong_image for s in sessions),
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:3],
        "closed_early": sum(s.closed is not None for s in sessions),
        "closed_samples": sorted({s.closed for s in sessions if s.closed})[:3],
        "latency_ms": stats([v for s in sessions for v in s.latency_ms]),
    }


def throughput_inputs(frames: str) -> list[tuple[dict[str, Any], bytes]]:
    """``sketch``: the small sketch; ``large``: 512x512 JPEGs of about 83 and 118 KB, in turn."""
    if frames == "sketch":
        image = sketch_jpeg()
        return [(request(image, SKETCH_SIDE, "sketch"), image)]
    images = [noisy_jpeg()[0], noisy_jpeg_near(JPEG_SIDE, LARGE_FRAME_BYTES)[0]]
    return [(request(image, JPEG_SIDE, "echo"), image) for image in images]


async def throughput_worker(url: str, count: int, seconds: float, frames: str) -> dict[str, Any]:
    """Connect ``count`` sessions, say ``ready``, wait for ``go`` on stdin, saturate, say ``done``, close."""
    auth = os.environ.get(AUTH_ENV)
    headers = {"Authorization": auth} if auth else {}
    inputs = throughput_inputs(frames)
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    opened = await asyncio.gather(*(open_session(url, headers, gate) for _ in range(count)), return_exceptions=True)
    sessions: list[Saturating] = []
    connect_errors: list[str] = []
    for ws in opened:
        if isinstance(ws, BaseException):
            connect_errors.append(f"{type(ws).__name__}: {ws}"[:300])
        else:
            sessions.append(Saturating(len(sessions), ws))
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    start = time.perf_counter()
    await asyncio.gather(*(saturate(s, inputs, start + seconds) for s in sessions))
    elapsed = time.perf_counter() - start
    print("done", flush=True)
    with contextlib.suppress(TimeoutError):
        closes = (s.ws.close() for s in sessions)
        await asyncio.wait_for(asyncio.gather(*closes, return_exceptions=True), 20)
    return summarise_throughput(sessions, connect_errors, seconds, elapsed)


# -- 3. usage recording: the driver ------------------------------------------------------------


def run_throughput(
    target: Child, servers: list[Child], count: int, seconds: float, auth: str, frames: str = "sketch"
) -> dict[str, Any]:
    """One block against ``target``; CPU is taken from ``go`` until every session has stopped sending."""
    args = ["--throughput-worker", target.url(APP_PATH), str(count), str(seconds), "--frames", frames]
    return drive("throughput generator", args, servers, auth, "done", seconds + RECV_TIMEOUT + 30)


def recorded_usage(env: dict[str, str], since: float, gateways: dict[str, Child]) -> dict[str, dict[str, int]]:
    """Usage rows each gateway (host:pid) wrote for connections opened since ``since`` (epoch seconds)."""
    names = {label: f"{socket.gethostname()}:{c.proc.pid}" for label, c in gateways.items()}
    code = "\n".join(
        [
            "import datetime, json",
            "from django.db.models import Count, Sum",
            "from realtime_site.usage.models import ConnectionRecord",
            f"since = datetime.datetime.fromtimestamp({since!r}, datetime.UTC)",
            "out = {}",
            f"for label, name in {names!r}.items():",
            "    rows = ConnectionRecord.objects.filter(gateway=name, started_at__gte=since)",
            "    out[label] = rows.aggregate(rows=Count('id'), frames=Sum('frames_in'), results=Sum('results_out'))",
            "print(json.dumps(out))",
        ]
    )
    found = json.loads(manage(env, "shell", "-c", code).strip().splitlines()[-1])
    return {label: {k: v or 0 for k, v in counts.items()} for label, counts in found.items()}


def throughput_totals(blocks: list[dict[str, Any]], daphne: str) -> dict[str, Any]:
    """One gateway's blocks together; ``daphne`` is its process's name in the blocks' CPU figures."""
    answered = sum(b["answered"] for b in blocks)
    elapsed = sum(b["elapsed_seconds"] for b in blocks)
    cpu = sum(b["cpu"][daphne]["seconds"] for b in blocks)
    return {
        "blocks": len(blocks),
        "answered": answered,
        "seconds": elapsed,
        "frames_per_s_median": float(np.median([b["frames_per_s"] for b in blocks])) if blocks else math.nan,
        "frames_per_s_total": answered / elapsed if elapsed > 0 else math.nan,
        "frames_per_s_blocks": [b["frames_per_s"] for b in blocks],
        "daphne_cpu_seconds": cpu,
        "daphne_cpu_ms_per_frame": 1000 * cpu / answered if answered else math.nan,
        **{key: sum(b[key] for b in blocks) for key in ("errors", "misrouted", "wrong_image", "closed_early")},
        "connect_errors": sum(b["connect_errors"] for b in blocks),
    }


def recording_problems(result: dict[str, Any], expected: dict[str, dict[str, int]]) -> list[str]:
    """What makes the comparison unsound: failed frames, or a gateway recording other than it should."""
    problems = []
    for label in ("on", "off"):
        for key in ("errors", "misrouted", "wrong_image", "closed_early", "connect_errors"):
            if result[label][key]:
                problems.append(f"recording {label}: {result[label][key]} {key.replace('_', ' ')}")
    recorded = result["recorded"]
    if recorded["on"] != expected["on"]:
        problems.append(f"recording on: wrote {recorded['on']}, expected {expected['on']}")
    if recorded["off"]["rows"]:
        problems.append(f"recording off: wrote {recorded['off']['rows']} usage rows")
    return problems


THROUGHPUT_HEADER = (
    f"  {'block':>5} {'rec':<4} {'answered':>8} {'frames/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'err':>4}"
    f" {'daphne%':>7} {'other%':>6} {'runner%':>7} {'load%':>6} {'idle':>5}"
)


def print_throughput_row(index: int, label: str, daphne: str, other: str, r: dict[str, Any]) -> None:
    lat, cpu = r["latency_ms"], r["cpu"]
    pct = [f"{cpu[name]['percent_of_core']:.0f}" for name in (daphne, other, "runner", "load")]
    bad = r["errors"] + r["misrouted"] + r["wrong_image"] + r["closed_early"] + r["connect_errors"]
    print(
        f"  {index:>5} {label:<4} {r['answered']:>8} {r['frames_per_s']:>9.1f} {lat['p50']:>7.2f} {lat['p99']:>7.2f}"
        f" {bad:>4} {pct[0]:>7} {pct[1]:>6} {pct[2]:>7} {pct[3]:>6} {r['busy_after_close_s']:>5.1f}",
        flush=True,
    )


def bench_usage_recording(
    runner: Child, on: Child, off: Child, auth: str, env: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    count, blocks, seconds = args.throughput_connections, args.throughput_blocks, args.throughput_seconds
    section("3. Usage recording: throughput with it on vs off")
    print(f"  ({count} connections, each sending the {SKETCH_SIDE}x{SKETCH_SIDE} sketch back-to-back; {blocks} blocks")
    print(f"   of {seconds:g} s per gateway, alternating; CPU: % of one core; daphne% is the gateway under load,")
    print("   other% the idle one; err: errors, misrouted, wrong images, early closes, failed connects)")
    gateways = {"on": on, "off": off}
    servers = [runner, on, off]
    quiet = [psutil.Process(c.proc.pid) for c in servers]
    since = time.time()
    result: dict[str, Any] = {
        "connections": count,
        "blocks_each": blocks,
        "block_seconds": seconds,
        "warmup_seconds": THROUGHPUT_WARMUP_SECONDS,
        "sketch_bytes": len(sketch_jpeg()),
        "target_ratio": RATIO_TARGET,
        "warmup": {},
        "blocks": [],
    }
    for label, target in gateways.items():
        result["warmup"][label] = run_throughput(target, servers, count, THROUGHPUT_WARMUP_SECONDS, auth)
        settle(quiet)
    print(THROUGHPUT_HEADER, flush=True)
    for index in range(blocks):
        for label in ("on", "off")[:: -1 if index % 2 else 1]:  # alternate who goes first: on off off on on ...
            target, other = gateways[label], gateways["off" if label == "on" else "on"]
            block = run_throughput(target, servers, count, seconds, auth)
            block["recording"] = label
            block["busy_after_close_s"] = settle(quiet)
            result["blocks"].append(block)
            print_throughput_row(len(result["blocks"]), label, target.name, other.name, block)
    for label, target in gateways.items():
        result[label] = throughput_totals([b for b in result["blocks"] if b["recording"] == label], target.name)
    result["ratio_on_off"] = ratio = result["on"]["frames_per_s_total"] / result["off"]["frames_per_s_total"]
    on_runs = [result["warmup"]["on"], *(b for b in result["blocks"] if b["recording"] == "on")]
    expected = {
        "on": {
            "rows": sum(r["connections"] - r["connect_errors"] for r in on_runs),
            "frames": sum(r["sent"] for r in on_runs),
            "results": sum(r["replies"] for r in on_runs),
        },
        "off": {"rows": 0},
    }
    result["recorded"] = recorded_usage(env, since, gateways)
    result["recorded_expected"] = expected
    result["problems"] = problems = recording_problems(result, expected)
    result["passed"] = ratio >= RATIO_TARGET and not problems
    print_usage_recording(result)
    return result


def print_usage_recording(r: dict[str, Any]) -> None:
    for label in ("on", "off"):
        t = r[label]
        row(
            f"recording {label}: frames/s median/total",
            f"{t['frames_per_s_median']:.1f} / {t['frames_per_s_total']:.1f}",
        )
    ratio = r["ratio_on_off"]
    row("ratio on / off (totals)", f"{ratio:.3f}", f"target >= {RATIO_TARGET:g}: {verdict(ratio >= RATIO_TARGET)}")
    on_ms, off_ms = r["on"]["daphne_cpu_ms_per_frame"], r["off"]["daphne_cpu_ms_per_frame"]
    row("daphne CPU per frame, on / off", f"{on_ms:.4f} / {off_ms:.4f} ms", f"on / off: {on_ms / off_ms:.3f}")
    rec, exp = r["recorded"], r["recorded_expected"]
    row(
        "usage rows written, on / off",
        f"{rec['on']['rows']} / {rec['off']['rows']}",
        f"expected {exp['on']['rows']} / 0",
    )
    expected = f"expected {exp['on']['frames']} / {exp['on']['results']}"
    row("recorded frames / results (on)", f"{rec['on']['frames']} / {rec['on']['results']}", expected)
    for problem in r["problems"]:
        print(f"  MISSED: {problem[:300]}", flush=True)


# -- 4. relay CPU per frame against a bare websockets relay ------------------------------------


def bench_relay_cpu(runner: Child, gateway: Child, bare: Child, auth: str, args: argparse.Namespace) -> dict[str, Any]:
    """Large frames back-to-back through daphne and through the bare relay, in alternating blocks."""
    count, blocks, seconds = RELAY_CONNECTIONS, args.relay_blocks, args.relay_seconds
    section("4. Relay CPU per frame: the gateway against a bare websockets relay")
    print(f"  ({count} connections, each sending 512x512 JPEGs of 83 and {LARGE_FRAME_BYTES // 1000} KB in turn")
    print(f"   back-to-back; {blocks} blocks of {seconds:g} s per relay, alternating; CPU per answered frame)")
    relays = {"gateway": gateway, "bare": bare}
    servers = [runner, gateway, bare]
    quiet = [psutil.Process(c.proc.pid) for c in servers]
    runs: dict[str, list[dict[str, Any]]] = {"gateway": [], "bare": []}
    for target in relays.values():
        run_throughput(target, servers, count, THROUGHPUT_WARMUP_SECONDS, auth, "large")
        settle(quiet)
    for index in range(blocks):
        for label in ("gateway", "bare")[:: -1 if index % 2 else 1]:
            block = run_throughput(relays[label], servers, count, seconds, auth, "large")
            settle(quiet)
            runs[label].append(block)
            cpu = block["cpu"][relays[label].name]["seconds"]
            per = 1000 * cpu / block["answered"] if block["answered"] else math.nan
            bad = block["errors"] + block["misrouted"] + block["wrong_image"] + block["closed_early"]
            print(
                f"  block {index + 1} {label:<8} {block['answered']:>6} answered, {block['frames_per_s']:>7.1f}/s,"
                f" {per:.4f} ms CPU per frame, p50 {block['latency_ms']['p50']:.2f} ms, {bad} bad",
                flush=True,
            )
    result: dict[str, Any] = {"connections": count, "blocks_each": blocks, "block_seconds": seconds, "blocks": runs}
    for label, target in relays.items():
        answered = sum(b["answered"] for b in runs[label])
        cpu = sum(b["cpu"][target.name]["seconds"] for b in runs[label])
        runner_cpu = sum(b["cpu"]["runner"]["seconds"] for b in runs[label])
        result[label] = {
            "answered": answered,
            "cpu_seconds": cpu,
            "cpu_ms_per_frame": 1000 * cpu / answered if answered else math.nan,
            "runner_cpu_ms_per_frame": 1000 * runner_cpu / answered if answered else math.nan,
            "bad": sum(b[k] for b in runs[label] for k in ("errors", "misrouted", "wrong_image", "closed_early")),
        }
    ratio = result["gateway"]["cpu_ms_per_frame"] / result["bare"]["cpu_ms_per_frame"]
    result.update(ratio=ratio, target_ratio=RELAY_CPU_TARGET)
    result["passed"] = ratio <= RELAY_CPU_TARGET and not result["gateway"]["bad"] and not result["bare"]["bad"]
    for label in ("gateway", "bare"):
        r = result[label]
        note = f"runner {r['runner_cpu_ms_per_frame']:.4f} ms; {r['bad']} bad"
        row(f"{label}: CPU per frame", f"{r['cpu_ms_per_frame']:.4f} ms", note)
    row("ratio gateway / bare", f"{ratio:.3f}", f"target <= {RELAY_CPU_TARGET:g}: {verdict(result['passed'])}")
    return result


# -- 5. upgrade to first result ----------------------------------------------------------------


def bench_first_result(
    label: str, runner: Child, gateway: Child, env: dict[str, str], auth: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Token, key and session paths through ``gateway`` against the runner alone."""
    base_http = f"http://127.0.0.1:{gateway.port}"
    token = mint_token(base_http, auth)
    sessionid = session_cookie(env, USER)
    routes = [
        Route("runner alone", runner.url(APP_PATH)),
        *gateway_routes("gateway", f"ws://127.0.0.1:{gateway.port}", base_http, APP_PATH, auth, token, sessionid),
    ]
    rounds = args.first_result_rounds
    section(f"5. Upgrade to first result, {label} ({rounds} rounds, paths in rotating order)")
    result = measure_first_results(routes, "runner alone", rounds, warmup=max(5, rounds // 10))
    result["database"] = label
    for name, s in result["ms"].items():
        added = result["added_p50_ms"].get(name)
        note = "" if added is None else f"+{added:.2f} ms: target <= {FIRST_RESULT_TARGET_MS:g}: "
        note += "" if added is None else verdict(added <= FIRST_RESULT_TARGET_MS)
        row(f"{name} p50 / p99", f"{s['p50']:.2f} / {s['p99']:.2f} ms", note)
    result["target_added_p50_ms"] = FIRST_RESULT_TARGET_MS
    result["passed"] = all(v <= FIRST_RESULT_TARGET_MS for v in result["added_p50_ms"].values())
    return result


# -- main --------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    """The versions of the packages this benchmark measures, for ``machine()``."""
    return {
        "websockets": websockets.__version__,
        "daphne": daphne.__version__,
        "msgpack": ".".join(map(str, msgpack.version)),
    }


def parse_counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("expected positive integers separated by commas")
    return counts


SECTIONS = ("round-trip", "load", "recording", "relay", "first-result")


def parse_sections(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts for a smoke run")
    parser.add_argument("--round-trips", type=int, help=f"round trips per path ({FULL['round_trips']})")
    parser.add_argument("--blocks", type=int, default=10, help="alternating blocks of round trips (10)")
    parser.add_argument("--load-seconds", type=float, help=f"seconds of load per run ({FULL['load_seconds']:g})")
    parser.add_argument("--sessions", help=f"session counts to try, in order ({FULL['sessions']})")
    parser.add_argument(
        "--throughput-connections",
        type=int,
        default=THROUGHPUT_CONNECTIONS,
        help=f"connections sending back-to-back in the usage recording blocks ({THROUGHPUT_CONNECTIONS})",
    )
    parser.add_argument(
        "--throughput-blocks", type=int, help=f"usage recording blocks per gateway ({FULL['throughput_blocks']})"
    )
    parser.add_argument(
        "--throughput-seconds", type=float, help=f"seconds per usage recording block ({FULL['throughput_seconds']:g})"
    )
    parser.add_argument(
        "--only",
        type=parse_sections,
        default=SECTIONS,
        help=f"sections to run, separated by commas ({','.join(SECTIONS)})",
    )
    parser.add_argument("--relay-blocks", type=int, help=f"section 4 blocks per relay ({FULL['relay_blocks']})")
    parser.add_argument("--relay-seconds", type=float, help=f"seconds per section 4 block ({FULL['relay_seconds']:g})")
    parser.add_argument(
        "--first-result-rounds", type=int, help=f"section 5 rounds per database ({FULL['first_result_rounds']})"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file of all figures")
    parser.add_argument("--load-worker", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--worker-sessions", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--throughput-worker", nargs=3, metavar=("URL", "K", "SECONDS"), help=argparse.SUPPRESS)
    parser.add_argument("--frames", choices=("sketch", "large"), default="sketch", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    try:
        args.sessions = parse_counts(args.sessions)
    except (ValueError, argparse.ArgumentTypeError):
        parser.error(f"--sessions: expected positive integers separated by commas, got {args.sessions!r}")
    if args.round_trips < args.blocks:
        parser.error("need at least one round trip per block")
    if min(args.throughput_connections, args.throughput_blocks) < 1 or not args.throughput_seconds > 0:
        parser.error("--throughput-connections, --throughput-blocks and --throughput-seconds must be positive")
    return args


def run(args: argparse.Namespace, results: dict[str, Any]) -> None:
    jpeg, quality = noisy_jpeg()
    results["round_trip_jpeg"] = {"bytes": len(jpeg), "quality": quality, "side": JPEG_SIDE}
    print(f"\nTest JPEG: {JPEG_SIDE}x{JPEG_SIDE}, {len(jpeg):,} bytes ({len(jpeg) / 1000:.1f} KB, quality {quality})")
    servers: dict[str, Any] = {}
    results["servers"] = servers
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as var_dir:
        runner: Child | None = None
        try:
            with child("runner", runner_args(), clean_env(AUTH_ENV)) as runner:
                runner.port = int(expect_line(runner, LISTENING, START_TIMEOUT)[1])
                env = gateway_env(var_dir, runner.port)
                auth = provision(env)
                with gateway_child("daphne", env, servers) as gateway:
                    serve(args, results, runner, gateway, auth, jpeg)
                    if "relay" in args.only:
                        with bare_relay_child(runner, servers) as bare:
                            results["relay_cpu"] = bench_relay_cpu(runner, gateway, bare, auth, args)
                    if "first-result" in args.only:
                        first = {"sqlite": bench_first_result("SQLite", runner, gateway, env, auth, args)}
                        results["first_result"] = first
                        first["postgresql"] = first_result_postgresql(runner, var_dir, servers, args)
                    if "recording" in args.only:
                        # the same gateway but for one setting, up only for section 3
                        with gateway_child("daphne-off", {**env, "REALTIME_USAGE_RECORDING": "0"}, servers) as off:
                            print(f"gateway without usage recording (daphne-off) on port {off.port}", flush=True)
                            results["usage_recording"] = bench_usage_recording(runner, gateway, off, auth, env, args)
        finally:
            if runner is not None:
                servers["runner"] = {"exit_code": runner.exit_code, "log": log_problems(runner.log)}
            print_servers(servers)


def first_result_postgresql(
    runner: Child, var_dir: str, servers: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """Section 5 again through a gateway on a fresh PostgreSQL database and the Redis channel layer."""
    with fresh_database() as database:
        env = {
            **gateway_env(var_dir, runner.port),
            "DATABASE_URL": DATABASE_URL.format(database),
            "REDIS_URL": REDIS_URL,
        }
        auth = provision(env)
        with gateway_child("daphne-pg", env, servers) as gateway:
            return bench_first_result("PostgreSQL + Redis", runner, gateway, env, auth, args)


@contextlib.contextmanager
def bare_relay_child(runner: Child, servers: dict[str, Any]) -> Iterator[Child]:
    """``bench/bare_relay.py`` in front of the runner; always stopped."""
    relay: Child | None = None
    args = [str(SCRIPT.parent / "bare_relay.py"), "--upstream", f"ws://127.0.0.1:{runner.port}"]
    try:
        with child("bare relay", args, clean_env(AUTH_ENV)) as relay:
            relay.port = int(expect_line(relay, LISTENING, START_TIMEOUT)[1])
            yield relay
    finally:
        if relay is not None:
            servers["bare relay"] = {"exit_code": relay.exit_code, "log": log_problems(relay.log)}


@contextlib.contextmanager
def gateway_child(name: str, env: dict[str, str], servers: dict[str, Any]) -> Iterator[Child]:
    """daphne, answering HTTP; always stopped, its exit code and log problems then in ``servers[name]``."""
    gateway: Child | None = None
    port = free_port()  # daphne cannot report a port 0 it bound: pick one, then let it bind
    try:
        with child(name, daphne_args(port), env) as gateway:
            gateway.port = port
            wait_http_ok(gateway, f"http://127.0.0.1:{port}/accounts/login/", START_TIMEOUT)
            yield gateway
    finally:
        if gateway is not None:
            servers[name] = {"exit_code": gateway.exit_code, "log": log_problems(gateway.log)}


def serve(
    args: argparse.Namespace, results: dict[str, Any], runner: Child, gateway: Child, auth: str, jpeg: bytes
) -> None:
    """Runner and gateway are up: measure."""
    print(f"runner on port {runner.port}, gateway (daphne) on port {gateway.port}", flush=True)
    if "round-trip" in args.only:
        results["round_trip"] = bench_round_trip(runner, gateway, auth, jpeg, args.round_trips, args.blocks)
        print_round_trip(results["round_trip"])
    if "load" in args.only:
        results["load"] = bench_load(runner, gateway, auth, args.sessions, args.load_seconds)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.load_worker or args.throughput_worker:
        return worker_main(args)
    started = time.perf_counter()
    workers = ("load_worker", "worker_sessions", "throughput_worker", "frames")
    config = {k: v for k, v in vars(args).items() if k not in workers}
    config.update(out=str(args.out), fps=FPS, drain_seconds=DRAIN_SECONDS)
    results: dict[str, Any] = {"machine": machine(versions()), "config": config}
    print_machine(results["machine"], SHOWN_VERSIONS)
    with recorded(results, args.out, started):
        run(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
