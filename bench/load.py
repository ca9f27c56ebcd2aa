"""Soak benchmark of a 2x2 cluster: two runners and two gateways (daphne) on Redis and PostgreSQL.

Run as a script: ``python bench/load.py [--quick]``. It needs Redis at 127.0.0.1:6379 (database 9)
and PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth): a fresh database is created for the
run and dropped at the end. Two runners (``local/echo``) and two gateways (both with
``RUNNER_URLS`` naming both runners) run as subprocesses of this interpreter. It prints tables and
writes every figure to ``bench/out/load.json``, and plots to ``bench/out/load-memory.svg`` and
``bench/out/load-latency.svg``.

1. Baseline: N sessions at 8 fps (a 256x256 sketch JPEG, passed through by echo) straight to the
   runners, half each: latency, lost and misrouted answers.
2. Soak: the same N sessions through the gateways, half each, for ``--seconds``. The load generator
   is its own process (this script with ``--soak-worker``) and reports every 10 s window. Every 5 s
   the RSS and open file descriptors of the four servers are sampled. Targets: nothing lost or
   misrouted, p99 at most 50 ms above the baseline's, and no growth: per process an RSS slope
   within +-5 MB/hour after the warm-up (the first minute) and descriptors ending within +10 of
   where they started.
3. Usage records: after the sessions closed, the ``frames_in`` and ``results_out`` summed over the
   gateways' ``ConnectionRecord`` rows must equal the frames the generator sent and the results it
   received.
4. CPU per frame of each tier over the soak's sending period (for a capacity model).

Dropped: frames displaced in the runner's buffer of 1 (never answered, not a session's final
input); lost: sessions whose final input was never answered after the drain; misrouted: answers to
a request_id that was not sent on that connection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import json
import math
import os
import queue
import socket
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import psutil
from backing import DATABASE_URL, REDIS_URL, backing_versions, fresh_database
from common import (
    LISTENING,
    ROOT,
    SKETCH_SIDE,
    STOP_TIMEOUT,
    Child,
    child,
    clean_env,
    expect_line,
    json_safe,
    log_problems,
    machine,
    manage,
    pack,
    print_machine,
    print_servers,
    recorded,
    request,
    section,
    sketch_jpeg,
    stats,
    verdict,
)
from common import row as table_row
from gateway import (
    APP_PATH,
    AUTH_ENV,
    CONNECT_CONCURRENCY,
    CONNECT_TIMEOUT,
    DRAIN_SECONDS,
    FPS,
    RID_STRIDE,
    SHOWN_VERSIONS,
    START_TIMEOUT,
    cpu_seconds,
    gateway_child,
    gateway_env,
    open_session,
    provision,
    runner_args,
    settle,
    versions,
)
from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.exceptions import ConnectionClosed

SCRIPT = Path(__file__).resolve()
DEFAULT_OUT = ROOT / "bench" / "out" / "load.json"

WINDOW_SECONDS = 10.0  # the load generator reports per window
SAMPLE_SECONDS = 5.0  # RSS, descriptors and CPU of every process
WARMUP_SECONDS = 60.0  # growth is measured after this (at most a quarter of the soak)
P99_SLACK_MS = 50.0  # soak p99 may exceed the baseline p99 by this much
RSS_SLOPE_MB_H = 5.0  # "flat": RSS slope within +-this
FDS_SLACK = 10  # "flat": descriptors end within +this of the start
USAGE_WAIT_SECONDS = 30.0  # at most this long for the usage sums to stop changing

FULL = {"sessions": 100, "seconds": 600.0, "baseline_seconds": 60.0}
QUICK = {"sessions": 20, "seconds": 60.0, "baseline_seconds": 10.0}


# -- the load generator (its own process) ------------------------------------------------------


@dataclass
class Tally:
    """Cumulative counts of one target; a window is the difference between two marks."""

    sent: int = 0
    replies: int = 0  # binary messages received, whatever they answer
    answered: int = 0  # answers to a frame sent on that connection, first time
    errors: int = 0  # text messages (error reports)
    latency_ms: array[float] = field(default_factory=lambda: array("d"))
    lag_ms: array[float] = field(default_factory=lambda: array("d"))  # send lateness against the schedule

    def mark(self) -> tuple[int, int, int, int, int]:
        return self.sent, self.replies, self.answered, self.errors, len(self.latency_ms)


@dataclass
class Link:
    """One session: a connection sending at FPS with request_ids index * RID_STRIDE + k."""

    index: int
    target: str
    ws: AsyncConnection
    tally: Tally
    final_rid: int
    pending: dict[int, float] = field(default_factory=dict)  # request_id -> send time, until answered
    next_k: int = 0
    last_rid: int = -1  # the last request_id sent
    final_answered: bool = False
    misrouted: int = 0
    duplicates: int = 0
    wrong_image: int = 0
    error_samples: list[str] = field(default_factory=list)
    closed: str | None = None  # why the connection ended before the generator closed it
    final: asyncio.Event = field(default_factory=asyncio.Event)


async def send_frames(link: Link, fields: dict[str, Any], start: float, count: int) -> None:
    """One frame every 1/FPS s at absolute deadlines from ``start``."""
    for k in range(count):
        deadline = start + k / FPS
        if (delay := deadline - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        rid = link.index * RID_STRIDE + k
        now = time.perf_counter()
        link.tally.lag_ms.append((now - deadline) * 1000)
        link.pending[rid], link.next_k = now, k
        try:
            await link.ws.send(pack({**fields, "request_id": rid}))
        except ConnectionClosed as exc:
            link.pending.pop(rid, None)
            link.closed = link.closed or f"send: {exc}"
            return
        link.last_rid = rid
        link.tally.sent += 1


def take_answer(link: Link, answer: dict[str, Any], image: bytes, now: float) -> None:
    rid = answer.get("request_id")
    sent = link.pending.pop(rid, None) if isinstance(rid, int) else None
    if sent is None:
        mine = isinstance(rid, int) and rid // RID_STRIDE == link.index and rid % RID_STRIDE <= link.next_k
        if mine:
            link.duplicates += 1
        else:
            link.misrouted += 1
        return
    link.tally.answered += 1
    link.tally.latency_ms.append((now - sent) * 1000)
    images = answer.get("images") or [{}]
    if images[0].get("content") != image:
        link.wrong_image += 1
    if rid == link.final_rid:
        link.final_answered = True
        link.final.set()


async def receive_answers(link: Link, image: bytes, closing: asyncio.Event) -> None:
    try:
        async for message in link.ws:
            now = time.perf_counter()
            if isinstance(message, str):
                link.tally.errors += 1
                if len(link.error_samples) < 3:
                    link.error_samples.append(message[:300])
                continue
            link.tally.replies += 1
            take_answer(link, msgpack.unpackb(message), image, now)
    except ConnectionClosed as exc:
        if not closing.is_set():
            link.closed = link.closed or f"receive: {exc}"
    if not closing.is_set():
        link.closed = link.closed or "closed by the server"


def window_of(tally: Tally, mark: tuple[int, int, int, int, int]) -> dict[str, Any]:
    sent, replies, answered, errors, n = mark
    latency = stats(list(tally.latency_ms[n:]))
    return {
        "sent": tally.sent - sent,
        "replies": tally.replies - replies,
        "answered": tally.answered - answered,
        "errors": tally.errors - errors,
        **{key: latency[key] for key in ("p50", "p99", "max")},
    }


async def report_windows(tallies: dict[str, Tally], start: float, seconds: float) -> None:
    """Print ``window {json}`` at every WINDOW_SECONDS from ``start`` (the last one may be shorter)."""
    marks = {label: tally.mark() for label, tally in tallies.items()}
    edges = [min(k * WINDOW_SECONDS, seconds) for k in range(1, math.ceil(seconds / WINDOW_SECONDS) + 1)]
    for edge in edges:
        await asyncio.sleep(max(0.0, start + edge - time.perf_counter()))
        window = {label: window_of(tally, marks[label]) for label, tally in tallies.items()}
        marks = {label: tally.mark() for label, tally in tallies.items()}
        print("window " + json.dumps(json_safe({"t": edge, "targets": window})), flush=True)


def summarise(links: list[Link], tallies: list[Tally], connect_errors: list[str]) -> dict[str, Any]:
    sent = sum(t.sent for t in tallies)
    answered = sum(t.answered for t in tallies)
    final_unanswered = sum(link.last_rid == link.final_rid and not link.final_answered for link in links)
    errors = [e for link in links for e in link.error_samples]
    return {
        "sessions": len(links) + len(connect_errors),
        "connect_errors": len(connect_errors),
        "connect_error_samples": connect_errors[:3],
        "sent": sent,
        "replies": sum(t.replies for t in tallies),
        "answered": answered,
        "dropped": sent - answered - final_unanswered,
        "lost": sum(not link.final_answered for link in links) + len(connect_errors),
        "misrouted": sum(link.misrouted for link in links),
        "duplicates": sum(link.duplicates for link in links),
        "wrong_image": sum(link.wrong_image for link in links),
        "errors": sum(t.errors for t in tallies),
        "error_samples": sorted(set(errors))[:3],
        "closed_early": sum(link.closed is not None for link in links),
        "closed_samples": sorted({link.closed for link in links if link.closed})[:3],
        "latency_ms": stats([v for t in tallies for v in t.latency_ms]),
        "send_lag_ms": stats([v for t in tallies for v in t.lag_ms]),
    }


async def connect_all(
    targets: list[tuple[str, str]], count: int, tallies: dict[str, Tally], final_k: int
) -> tuple[list[Link], dict[str, list[str]]]:
    """Session i goes to target i mod len(targets); the links, and connect errors per target."""
    auth = os.environ.get(AUTH_ENV)
    headers = {"Authorization": auth} if auth else {}
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    plan = [targets[i % len(targets)] for i in range(count)]
    opened = await asyncio.gather(*(open_session(url, headers, gate) for _, url in plan), return_exceptions=True)
    links: list[Link] = []
    failed: dict[str, list[str]] = {label: [] for label, _ in targets}
    for (label, _), ws in zip(plan, opened, strict=True):
        if isinstance(ws, BaseException):
            failed[label].append(f"{type(ws).__name__}: {ws}"[:300])
        else:
            index = len(links)
            links.append(Link(index, label, ws, tallies[label], index * RID_STRIDE + final_k))
    return links, failed


async def soak_worker(targets: list[tuple[str, str]], count: int, seconds: float) -> dict[str, Any]:
    """Connect, say ``ready``, wait for ``go`` on stdin, drive (windows on stdout), say ``sent``, drain."""
    image = sketch_jpeg()
    fields = request(image, SKETCH_SIDE, "sketch")
    frames = max(1, round(seconds * FPS))
    tallies = {label: Tally() for label, _ in targets}
    links, failed = await connect_all(targets, count, tallies, frames - 1)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    closing = asyncio.Event()
    receivers = [asyncio.create_task(receive_answers(link, image, closing)) for link in links]
    start = time.perf_counter() + 0.05
    period = 1 / FPS
    # Sessions start staggered across one period, as independent clients would.
    senders = (
        send_frames(link, fields, start + period * i / max(1, len(links)), frames) for i, link in enumerate(links)
    )
    await asyncio.gather(*senders, report_windows(tallies, start, seconds))
    print("sent", flush=True)
    finals = [asyncio.create_task(link.final.wait()) for link in links]
    if finals:
        await asyncio.wait(finals, timeout=DRAIN_SECONDS)
    for task in finals:
        task.cancel()
    closing.set()
    with contextlib.suppress(TimeoutError):
        closes = (link.ws.close() for link in links)
        await asyncio.wait_for(asyncio.gather(*closes, return_exceptions=True), 20)
    for task in receivers:
        task.cancel()
    await asyncio.gather(*receivers, return_exceptions=True)
    per_target = {
        label: summarise([x for x in links if x.target == label], [tallies[label]], failed[label])
        for label, _ in targets
    }
    every_error = [e for errors in failed.values() for e in errors]
    return {"targets": per_target, "all": summarise(links, list(tallies.values()), every_error)}


def worker_main(args: argparse.Namespace) -> int:
    if not all("=" in spec for spec in args.soak_worker):
        raise SystemExit("--soak-worker: expected LABEL=URL")
    targets = [(label, url) for label, url in (spec.split("=", 1) for spec in args.soak_worker)]
    result = asyncio.run(soak_worker(targets, args.worker_sessions, args.worker_seconds))
    print("result " + json.dumps(json_safe(result)), flush=True)
    return 0


# -- the cluster -------------------------------------------------------------------------------


@contextlib.contextmanager
def runner_child(name: str, servers: dict[str, Any]) -> Iterator[Child]:
    """A runner on a free port; always stopped, its exit code and log problems then in ``servers[name]``."""
    runner: Child | None = None
    try:
        with child(name, runner_args(), clean_env(AUTH_ENV)) as runner:
            runner.port = int(expect_line(runner, LISTENING, START_TIMEOUT)[1])
            yield runner
    finally:
        if runner is not None:
            servers[name] = {"exit_code": runner.exit_code, "log": log_problems(runner.log)}


def cluster_env(var_dir: str, runners: list[Child], database: str) -> dict[str, str]:
    return {
        **gateway_env(var_dir, runners[0].port),
        "RUNNER_URLS": ",".join(f"ws://127.0.0.1:{r.port}" for r in runners),
        "REDIS_URL": REDIS_URL,
        "DATABASE_URL": DATABASE_URL.format(database),
        "REALTIME_FRAMES_PER_MINUTE": "1000000",
        "REALTIME_MAX_CONNECTIONS": "100000",
        "REALTIME_CONNECTS_PER_SECOND": "0",  # every session comes from 127.0.0.1
    }


# -- sampling and driving ----------------------------------------------------------------------


def sample(procs: dict[str, psutil.Process], t: float) -> dict[str, Any]:
    """RSS (MB), open descriptors and CPU seconds of every process, at ``t`` seconds."""
    out = {}
    for name, proc in procs.items():
        with proc.oneshot():
            out[name] = {"rss_mb": proc.memory_info().rss / 1e6, "fds": proc.num_fds(), "cpu_s": cpu_seconds(proc)}
    return {"t": round(t, 3), "procs": out}


def short(name: str) -> str:
    return f"{name[0]}{name[-1]}"  # gateway1 -> g1


def fmt(value: float | None, spec: str = ">6.1f") -> str:
    width = spec.lstrip(">").split(".")[0]
    return f"{'-':>{width}}" if value is None or math.isnan(value) else f"{value:{spec}}"


def print_window_header(targets: list[str], servers: list[str]) -> None:
    groups = "".join(f" {label + ' (sent, answered, p50/p99 ms)':^27} |" for label in targets)
    print(f"  {'':>5} {groups}{'RSS MB':^{7 * len(servers)}}|{'fds':^{6 * len(servers)}}")
    cells = "".join(f" {'sent':>6} {'ans':>6} {'p50':>6} {'p99':>6} |" for _ in targets)
    rss = "".join(f" {short(n):>6}" for n in servers)
    fds = "".join(f" {short(n):>5}" for n in servers)
    print(f"  {'t s':>5} {cells}{rss} |{fds}", flush=True)


def print_window(window: dict[str, Any], s: dict[str, Any], targets: list[str], servers: list[str]) -> None:
    cells = "".join(
        f" {w['sent']:>6} {w['answered']:>6} {fmt(w['p50'])} {fmt(w['p99'])} |"
        for w in (window["targets"][label] for label in targets)
    )
    rss = "".join(f" {s['procs'][n]['rss_mb']:>6.1f}" for n in servers)
    fds = "".join(f" {s['procs'][n]['fds']:>5}" for n in servers)
    print(f"  {window['t']:>5.0f} {cells}{rss} |{fds}", flush=True)


def follow(
    worker: Child, procs: dict[str, psutil.Process], servers: list[str], targets: list[str], seconds: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """From ``go`` until the worker says ``sent``: samples every SAMPLE_SECONDS, windows as they come."""
    started = time.perf_counter()
    samples = [sample(procs, 0.0)]
    windows: list[dict[str, Any]] = []
    assert worker.proc.stdin is not None
    worker.proc.stdin.write("go\n")
    worker.proc.stdin.flush()
    deadline, next_at = started + seconds + 60, started + SAMPLE_SECONDS
    while True:
        now = time.perf_counter()
        if now >= next_at:
            samples.append(sample(procs, now - started))
            next_at += SAMPLE_SECONDS
            continue
        if now >= deadline:
            raise RuntimeError(f"the load generator did not finish sending within {seconds + 60:g} s{worker.tail()}")
        try:
            line = worker.lines.get(timeout=min(next_at, deadline) - now)
        except queue.Empty:
            continue
        if line is None:
            raise RuntimeError(f"the load generator exited (code {worker.proc.wait()}){worker.tail()}")
        if line.strip() == "sent":
            samples.append(sample(procs, time.perf_counter() - started))
            return samples, windows
        if line.startswith("window "):
            windows.append(json.loads(line.removeprefix("window ")))
            print_window(windows[-1], samples[-1], targets, servers)


def run_phase(
    targets: dict[str, str], servers: dict[str, psutil.Process], auth: str | None, count: int, seconds: float
) -> dict[str, Any]:
    """One load generator over ``targets`` (label -> URL); its result, windows, samples and CPU."""
    env = clean_env(AUTH_ENV)
    if auth:
        env[AUTH_ENV] = auth
    specs = [f"{label}={url}" for label, url in targets.items()]
    args = [str(SCRIPT), "--soak-worker", *specs, "--worker-sessions", str(count), "--worker-seconds", str(seconds)]
    with child("load generator", args, env, stdin=True) as worker:
        expect_line(worker, r"^ready$", CONNECT_TIMEOUT)
        procs = {**servers, "load": psutil.Process(worker.proc.pid)}
        print_window_header(list(targets), list(servers))
        samples, windows = follow(worker, procs, list(servers), list(targets), seconds)
        result = json.loads(expect_line(worker, r"^result (.*)$", DRAIN_SECONDS + 60)[1])
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.proc.wait(STOP_TIMEOUT)  # it exits by itself once it has answered
    if worker.exit_code != 0:
        raise RuntimeError(f"the load generator exited with {worker.exit_code}{worker.tail()}")
    wall = samples[-1]["t"]
    first, last = samples[0]["procs"], samples[-1]["procs"]
    result["cpu"] = {
        name: {"seconds": (s := last[name]["cpu_s"] - first[name]["cpu_s"]), "percent_of_core": 100 * s / wall}
        for name in procs
    }
    result.update(seconds=seconds, sending_seconds=wall, windows=windows, samples=samples)
    return result


# -- figures -----------------------------------------------------------------------------------


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) in value per hour; NaN under two distinct times."""
    if len({t for t, _ in points}) < 2:
        return math.nan
    t, v = np.array(points).T
    return float(np.polyfit(t / 3600, v, 1)[0])


def trend(samples: list[dict[str, Any]], name: str, key: str, warmup: float) -> dict[str, float]:
    """Start (first sample after the warm-up), end, max (whole run) and slope per hour (after the warm-up)."""
    every = [(s["t"], s["procs"][name][key]) for s in samples]
    warm = [(t, v) for t, v in every if t >= warmup] or every[-1:]
    return {
        "start": warm[0][1],
        "end": warm[-1][1],
        "max": max(v for _, v in every),
        "slope_per_hour": slope_per_hour(warm),
    }


def growth(samples: list[dict[str, Any]], after: dict[str, Any], names: list[str], warmup: float) -> dict[str, Any]:
    out = {}
    for name in names:
        rss, fds = trend(samples, name, "rss_mb", warmup), trend(samples, name, "fds", warmup)
        flat = abs(rss["slope_per_hour"]) <= RSS_SLOPE_MB_H and fds["end"] - fds["start"] <= FDS_SLACK
        out[name] = {
            "rss_mb": rss,
            "fds": fds,
            "idle_before": {k: samples[0]["procs"][name][k] for k in ("rss_mb", "fds")},
            "idle_after": {k: after["procs"][name][k] for k in ("rss_mb", "fds")},
            "flat": flat,
        }
    return out


USAGE_QUERY = """
import json
from django.db.models import Count, Q, Sum
from realtime_site.usage.models import ConnectionRecord
rows = ConnectionRecord.objects.filter(gateway__in={names!r})
sums = dict(
    rows=Count("id"), open=Count("id", filter=Q(ended_at__isnull=True)),
    frames=Sum("frames_in"), results=Sum("results_out"), dropped=Sum("frames_dropped"),
)
out = {{"total": rows.aggregate(**sums)}}
for key in ("gateway", "runner"):
    out[key] = {{r[key]: {{k: r[k] or 0 for k in sums}} for r in rows.values(key).annotate(**sums)}}
print(json.dumps(out))
"""


def query_usage(env: dict[str, str], names: list[str]) -> dict[str, Any]:
    found = json.loads(manage(env, "shell", "-v", "0", "-c", USAGE_QUERY.format(names=names)).strip().splitlines()[-1])
    found["total"] = {k: v or 0 for k, v in found["total"].items()}
    return found


def settled_usage(env: dict[str, str], names: list[str]) -> tuple[dict[str, Any], float]:
    """The usage sums once two reads in a row agree and no record is open (at most USAGE_WAIT_SECONDS)."""
    started = time.monotonic()
    last: dict[str, Any] | None = None
    while True:
        found = query_usage(env, names)
        waited = time.monotonic() - started
        if (found == last and not found["total"]["open"]) or waited >= USAGE_WAIT_SECONDS:
            return found, waited
        last = found
        time.sleep(1.0)


def usage_check(env: dict[str, str], gateways: dict[str, Child], soak: dict[str, Any]) -> dict[str, Any]:
    names = {f"{socket.gethostname()}:{c.proc.pid}": label for label, c in gateways.items()}
    found, waited = settled_usage(env, list(names))
    total, sent = found["total"], soak["all"]
    frames_missing = sent["sent"] - total["frames"]
    results_missing = sent["replies"] - total["results"]
    return {
        "waited_seconds": waited,
        "recorded": total,
        "by_gateway": {names.get(k, k): v for k, v in found["gateway"].items()},
        "by_runner": found["runner"],
        "expected": {
            "rows": sent["sessions"] - sent["connect_errors"],
            "frames": sent["sent"],
            "results": sent["replies"],
        },
        "frames_missing": frames_missing,
        "results_missing": results_missing,
        "lost": abs(frames_missing) + abs(results_missing),
    }


def ms_per_frame(seconds: float, frames: int) -> float:
    return 1000 * seconds / frames if frames else math.nan


def cpu_per_frame(
    baseline: dict[str, Any], soak: dict[str, Any], usage: dict[str, Any] | None, runners: dict[str, Child]
) -> dict[str, Any]:
    cpu, sent = soak["cpu"], soak["all"]["sent"]
    gateways = [label for label in soak["targets"]]
    by_url = (usage or {}).get("by_runner", {})
    runner_frames = {name: by_url.get(f"ws://127.0.0.1:{c.port}", {}).get("frames", 0) for name, c in runners.items()}
    return {
        "frames": sent,
        "gateway_ms": ms_per_frame(sum(cpu[g]["seconds"] for g in gateways), sent),
        "runner_ms": ms_per_frame(sum(cpu[r]["seconds"] for r in runners), sent),
        "per_gateway_ms": {g: ms_per_frame(cpu[g]["seconds"], soak["targets"][g]["sent"]) for g in gateways},
        "per_runner_ms": {r: ms_per_frame(cpu[r]["seconds"], runner_frames[r]) for r in runners},
        "runner_frames": runner_frames,
        "runner_ms_baseline": ms_per_frame(
            sum(baseline["cpu"][r]["seconds"] for r in runners), baseline["all"]["sent"]
        ),
        "percent_of_core": {name: c["percent_of_core"] for name, c in cpu.items()},
    }


# -- printing ----------------------------------------------------------------------------------


def row(label: str, value: str, note: str = "") -> None:
    """A row of this benchmark's tables: wider labels than the other benchmarks'."""
    table_row(label, value, note, label_width=52, value_width=22)


TOTALS_HEADER = (
    f"  {'target':<10} {'sessions':>8} {'sent':>8} {'answered':>8} {'dropped':>7} {'lost':>4} {'misrt':>5}"
    f" {'err':>4} {'closed':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'lag99':>6}"
)


def print_totals(result: dict[str, Any]) -> None:
    print(TOTALS_HEADER)
    for label, r in [*result["targets"].items(), ("all", result["all"])]:
        lat = r["latency_ms"]
        print(
            f"  {label:<10} {r['sessions']:>8} {r['sent']:>8} {r['answered']:>8} {r['dropped']:>7} {r['lost']:>4}"
            f" {r['misrouted'] + r['duplicates']:>5} {r['errors']:>4} {r['closed_early'] + r['connect_errors']:>6}"
            f" {fmt(lat['p50'], '>7.2f')} {fmt(lat['p99'], '>7.2f')} {fmt(lat['max'], '>7.1f')}"
            f" {fmt(r['send_lag_ms']['p99'])}",
            flush=True,
        )
    for key in ("error_samples", "closed_samples", "connect_error_samples"):
        for sample_text in result["all"][key]:
            print(f"    {key.split('_')[0]}: {sample_text[:200]}")


def print_growth(memory: dict[str, Any], warmup: float) -> None:
    print(f"  (start: first sample after the {warmup:g} s warm-up; slope: least squares after the warm-up, per hour;")
    print("   idle: before the soak's first frame / after its sessions closed and the servers went quiet;")
    print("   MB: 10^6 bytes)")
    print(
        f"  {'process':<10} {'RSS start':>9} {'end':>7} {'max':>7} {'MB/h':>7} {'idle b/a':>13}"
        f" {'fds start':>9} {'end':>5} {'max':>5} {'fds/h':>7} {'idle b/a':>9}  growth"
    )
    for name, g in memory.items():
        rss, fds, before, after = g["rss_mb"], g["fds"], g["idle_before"], g["idle_after"]
        print(
            f"  {name:<10} {rss['start']:>9.1f} {rss['end']:>7.1f} {rss['max']:>7.1f}"
            f" {fmt(rss['slope_per_hour'], '>7.1f')} {before['rss_mb']:>6.1f}/{after['rss_mb']:<6.1f}"
            f" {fds['start']:>9} {fds['end']:>5} {fds['max']:>5}"
            f" {fmt(fds['slope_per_hour'], '>7.1f')} {before['fds']:>4}/{after['fds']:<4}"
            f"  {'flat' if g['flat'] else 'GROWING'}: {verdict(g['flat'])}",
            flush=True,
        )


def print_usage(u: dict[str, Any]) -> None:
    rec, exp = u["recorded"], u["expected"]
    row("usage rows (still open)", f"{rec['rows']} ({rec['open']})", f"expected {exp['rows']} (0)")
    row("recorded frames_in / frames sent", f"{rec['frames']} / {exp['frames']}", f"missing {u['frames_missing']}")
    row(
        "recorded results_out / results received",
        f"{rec['results']} / {exp['results']}",
        f"missing {u['results_missing']}",
    )
    row("frames dropped (recorded)", str(rec["dropped"]))
    for url, r in sorted(u["by_runner"].items()):
        row(f"  via runner {url}", f"{r['rows']} sessions, {r['frames']} frames")
    row("usage records lost", str(u["lost"]), f"target 0: {verdict(u['lost'] == 0)}")
    row("waited for the sums to settle", f"{u['waited_seconds']:.1f} s")


def print_cpu(c: dict[str, Any]) -> None:
    per_g = ", ".join(f"{k} {v:.3f}" for k, v in c["per_gateway_ms"].items())
    per_r = ", ".join(f"{k} {v:.3f}" for k, v in c["per_runner_ms"].items())
    row("gateway CPU per frame (ms)", f"{c['gateway_ms']:.3f}", per_g)
    row("runner CPU per frame (ms, local/echo: transport only)", f"{c['runner_ms']:.3f}", per_r)
    row("runner CPU per frame, baseline straight (ms)", f"{c['runner_ms_baseline']:.3f}")
    pct = ", ".join(f"{k} {v:.0f}%" for k, v in c["percent_of_core"].items())
    row("CPU over the sending period (% of one core)", "", pct)


# -- plots (hand-written SVG) ------------------------------------------------------------------

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
SVG_WIDTH, PANEL_HEIGHT = 960, 300
LEFT, RIGHT, TOP, BOTTOM = 70, 230, 40, 46


@dataclass
class Panel:
    title: str
    unit: str
    series: dict[str, list[tuple[float, float | None]]]  # name -> (seconds, value); None breaks the line
    refs: dict[str, float] = field(default_factory=dict)  # labelled horizontal lines
    zero: bool = True  # the y axis starts at 0
    min_span: float = 1.0


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def y_range(panel: Panel) -> tuple[float, float]:
    values = [v for points in panel.series.values() for _, v in points if v is not None and not math.isnan(v)]
    values += [v for v in panel.refs.values() if not math.isnan(v)]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    lo = 0.0 if panel.zero else lo
    if hi - lo < panel.min_span:
        middle = (hi + lo) / 2
        lo, hi = (0.0, panel.min_span) if panel.zero else (middle - panel.min_span / 2, middle + panel.min_span / 2)
    pad = 0.05 * (hi - lo)
    return (lo if panel.zero else lo - pad), hi + pad


def polylines(points: list[tuple[float, float | None]], sx: Any, sy: Any, color: str, dash: str = "") -> list[str]:
    """One polyline per unbroken run of points (a None or NaN value breaks the line)."""
    runs: list[list[str]] = [[]]
    for t, v in points:
        if v is None or math.isnan(v):
            runs.append([])
        else:
            runs[-1].append(f"{sx(t):.1f},{sy(v):.1f}")
    style = f' stroke-dasharray="{dash}"' if dash else ""
    return [
        f'<polyline fill="none" stroke="{color}" stroke-width="1.6"{style} points="{" ".join(run)}"/>'
        for run in runs
        if run
    ]


def render_panel(panel: Panel, top: float, x_max: float, x_scale: float, x_unit: str, marks: dict[str, float]) -> str:
    plot_w, plot_h = SVG_WIDTH - LEFT - RIGHT, PANEL_HEIGHT - TOP - BOTTOM
    y0, y1 = top + TOP, top + TOP + plot_h
    lo, hi = y_range(panel)

    def sx(t: float) -> float:
        return LEFT + plot_w * t / x_max

    def sy(v: float) -> float:
        return y1 - plot_h * (v - lo) / (hi - lo)

    out = [f'<text x="{LEFT}" y="{top + 24}" font-size="15" font-weight="bold">{html.escape(panel.title)}</text>']
    out.append(f'<rect x="{LEFT}" y="{y0}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>')
    for v in nice_ticks(lo, hi):
        out.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{sy(v):.1f}" y2="{sy(v):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{LEFT - 6}" y="{sy(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
    for t in nice_ticks(0, x_max / x_scale):
        x = sx(t * x_scale)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y1}" y2="{y1 + 4}" stroke="#999"/>')
        out.append(f'<text x="{x:.1f}" y="{y1 + 17}" text-anchor="middle">{t:g}</text>')
    out.append(f'<text x="{LEFT + plot_w / 2}" y="{y1 + 36}" text-anchor="middle">time ({x_unit})</text>')
    out.append(f'<text x="16" y="{(y0 + y1) / 2}" transform="rotate(-90 16 {(y0 + y1) / 2})" text-anchor="middle">')
    out.append(f"{html.escape(panel.unit)}</text>")
    for label, t in marks.items():
        out.append(
            f'<line x1="{sx(t):.1f}" x2="{sx(t):.1f}" y1="{y0}" y2="{y1}" stroke="#888" stroke-dasharray="2 3"/>'
        )
        out.append(f'<text x="{sx(t) + 4:.1f}" y="{y0 + 12}" fill="#666">{html.escape(label)}</text>')
    legend: list[tuple[str, str, str]] = []
    for i, (label, v) in enumerate(panel.refs.items()):
        color = ["#555", "#e08000", "#777"][i % 3]
        out += polylines([(0, v), (x_max, v)], sx, sy, color, "6 4")
        legend.append((label, color, "6 4"))
    for i, (name, points) in enumerate(panel.series.items()):
        out += polylines(points, sx, sy, COLORS[i % len(COLORS)])
        legend.append((name, COLORS[i % len(COLORS)], ""))
    for i, (label, color, dash) in enumerate(legend):
        y = y0 + 8 + 18 * i
        style = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<line x1="{LEFT + plot_w + 14}" x2="{LEFT + plot_w + 38}" y1="{y}" y2="{y}" stroke="{color}"')
        out.append(f' stroke-width="2"{style}/>')
        out.append(f'<text x="{LEFT + plot_w + 44}" y="{y + 4}">{html.escape(label)}</text>')
    return "\n".join(out)


def write_svg(path: Path, panels: list[Panel], x_max: float, marks: dict[str, float] | None = None) -> None:
    x_max = max(x_max, 1e-9)
    x_scale, x_unit = (60.0, "min") if x_max > 180 else (1.0, "s")
    height = PANEL_HEIGHT * len(panels)
    body = "\n".join(
        render_panel(p, i * PANEL_HEIGHT, x_max, x_scale, x_unit, marks or {}) for i, p in enumerate(panels)
    )
    path.write_text(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_WIDTH}" height="{height}"'
        f' viewBox="0 0 {SVG_WIDTH} {height}" font-family="sans-serif" font-size="12">\n'
        f'<rect width="100%" height="100%" fill="white"/>\n{body}\n</svg>\n'
    )


def plot(results: dict[str, Any], out: Path, servers: list[str]) -> list[Path]:
    soak, baseline, warmup = results["soak"], results["baseline"], results["config"]["warmup_seconds"]
    samples = soak["samples"]
    rss_at = {name: results["memory"][name]["rss_mb"]["start"] for name in servers}
    memory = [
        Panel(
            "Resident memory per process (soak)",
            "RSS (MB)",
            {name: [(s["t"], s["procs"][name]["rss_mb"]) for s in samples] for name in servers},
            zero=False,
            min_span=10.0,
        ),
        Panel(
            "RSS change since the end of the warm-up",
            "RSS - RSS at warm-up end (MB)",
            {name: [(s["t"], s["procs"][name]["rss_mb"] - rss_at[name]) for s in samples] for name in servers},
            zero=False,
            min_span=4.0,
        ),
        Panel(
            "Open file descriptors per process (soak)",
            "open fds",
            {name: [(s["t"], float(s["procs"][name]["fds"])) for s in samples] for name in servers},
            zero=False,
            min_span=20.0,
        ),
    ]
    windows, base = soak["windows"], baseline["all"]["latency_ms"]
    targets = list(soak["targets"])
    p99_base = base["p99"] if base["p99"] is not None else math.nan
    latency = [
        Panel(
            f"p99 latency per {WINDOW_SECONDS:g} s window, per gateway",
            "p99 (ms)",
            {g: [(w["t"], w["targets"][g]["p99"]) for w in windows] for g in targets},
            refs={"baseline p99 (runners)": p99_base, f"baseline p99 + {P99_SLACK_MS:g} ms": p99_base + P99_SLACK_MS},
        ),
        Panel(
            f"p50 latency per {WINDOW_SECONDS:g} s window, per gateway",
            "p50 (ms)",
            {g: [(w["t"], w["targets"][g]["p50"]) for w in windows] for g in targets},
            refs={"baseline p50 (runners)": base["p50"] if base["p50"] is not None else math.nan},
        ),
    ]
    x_max = soak["sending_seconds"]
    paths = [out.with_name("load-memory.svg"), out.with_name("load-latency.svg")]
    write_svg(paths[0], memory, x_max, {"warm-up ends": warmup})
    write_svg(paths[1], latency, x_max)
    return paths


# -- the run -----------------------------------------------------------------------------------


def judge(results: dict[str, Any], servers: list[str]) -> dict[str, bool]:
    soak, baseline = results["soak"]["all"], results["baseline"]["all"]
    bad = ("lost", "misrouted", "duplicates", "wrong_image", "errors", "closed_early", "connect_errors")
    usage = results.get("usage_records")
    return {
        "baseline_clean": not any(baseline[k] for k in bad),
        "soak_clean": not any(soak[k] for k in bad),
        "p99_over_baseline": results["p99_over_baseline_ms"] <= P99_SLACK_MS,  # NaN fails
        **{f"flat_{name}": results["memory"][name]["flat"] for name in servers},
        "usage_records": usage is not None and usage["lost"] == 0,
    }


def run_baseline(
    args: argparse.Namespace, runners: dict[str, Child], procs: dict[str, psutil.Process]
) -> dict[str, Any]:
    count, seconds = args.sessions, args.baseline_seconds
    section(f"1. Baseline: {count} sessions x {FPS} fps straight to the runners, {seconds:g} s")
    targets = {name: c.url(APP_PATH) for name, c in runners.items()}
    result = run_phase(targets, procs, None, count, seconds)
    print_totals(result)
    return result


def run_soak(
    args: argparse.Namespace, gateways: dict[str, Child], procs: dict[str, psutil.Process], auth: str
) -> dict[str, Any]:
    count, seconds = args.sessions, args.seconds
    section(f"2. Soak: {count} sessions x {FPS} fps through the gateways, {seconds:g} s")
    targets = {name: c.url(APP_PATH) for name, c in gateways.items()}
    result = run_phase(targets, procs, auth, count, seconds)
    result["busy_after_close_s"] = settle(list(procs.values()))
    result["after_close"] = sample(procs, math.nan)  # once the servers went quiet
    print_totals(result)
    return result


def report(results: dict[str, Any], args: argparse.Namespace, env: dict[str, str], cluster: dict[str, Any]) -> None:
    gateways, runners, names = cluster["gateways"], cluster["runners"], cluster["names"]
    soak, baseline = results["soak"], results["baseline"]
    delta = soak["all"]["latency_ms"]["p99"] - baseline["all"]["latency_ms"]["p99"]
    results["p99_over_baseline_ms"] = delta
    for label, r in [("baseline (runners)", baseline["all"]), *soak["targets"].items(), ("soak, all", soak["all"])]:
        row(f"{label} p50 / p99", f"{fmt(r['latency_ms']['p50'], '.2f')} / {fmt(r['latency_ms']['p99'], '.2f')} ms")
    row(
        "soak p99 - baseline p99", f"{delta:.2f} ms", f"target <= {P99_SLACK_MS:g} ms: {verdict(delta <= P99_SLACK_MS)}"
    )

    section("Memory and file descriptors (soak)")
    results["memory"] = growth(soak["samples"], soak["after_close"], names, args.warmup_seconds)
    print_growth(results["memory"], args.warmup_seconds)
    if args.seconds < 600:
        print("  (slopes from a soak this short are extrapolated from little data: read them with care)")

    section("3. Usage records in PostgreSQL vs the load generator")
    results["usage_records"] = usage_check(env, gateways, soak)
    print_usage(results["usage_records"])

    section("4. CPU per frame over the soak's sending period")
    results["cpu_per_frame"] = cpu_per_frame(baseline, soak, results["usage_records"], runners)
    print_cpu(results["cpu_per_frame"])

    section("Verdicts")
    results["verdicts"] = verdicts = judge(results, names)
    for key, ok in verdicts.items():
        row(key.replace("_", " "), verdict(ok))
    results["passed"] = all(verdicts.values())


def run(args: argparse.Namespace, results: dict[str, Any]) -> None:
    servers: dict[str, Any] = {}
    results["servers"] = servers
    try:
        with fresh_database() as database, tempfile.TemporaryDirectory(prefix="bench-load-") as var_dir:
            results["cluster"] = {"database": database, "redis": REDIS_URL}
            with contextlib.ExitStack() as stack:
                runners = {f"runner{i}": stack.enter_context(runner_child(f"runner{i}", servers)) for i in (1, 2)}
                env = cluster_env(var_dir, list(runners.values()), database)
                auth = provision(env)
                manage(env, "collectstatic", "--noinput", "-v", "0")
                gateways = {
                    f"gateway{i}": stack.enter_context(gateway_child(f"gateway{i}", env, servers)) for i in (1, 2)
                }
                serve(args, results, env, runners, gateways, auth)
    finally:
        print_servers(servers)


def serve(
    args: argparse.Namespace,
    results: dict[str, Any],
    env: dict[str, str],
    runners: dict[str, Child],
    gateways: dict[str, Child],
    auth: str,
) -> None:
    """The cluster is up: measure."""
    everyone = {**gateways, **runners}
    ports = {name: c.port for name, c in everyone.items()}
    results["cluster"].update(ports=ports, runner_urls=env["RUNNER_URLS"])
    print("\ncluster: " + ", ".join(f"{name} on port {port}" for name, port in ports.items()), flush=True)
    procs = {name: psutil.Process(c.proc.pid) for name, c in everyone.items()}
    results["baseline"] = run_baseline(args, runners, procs)
    settle(list(procs.values()))
    results["soak"] = run_soak(args, gateways, procs, auth)
    cluster = {"gateways": gateways, "runners": runners, "names": list(everyone)}
    report(results, args, env, cluster)
    paths = plot(results, args.out, list(everyone))
    print(f"\nplots: {', '.join(str(p) for p in paths)}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="baseline 10 s, soak 60 s, 20 sessions")
    parser.add_argument("--sessions", type=int, help=f"sessions, split over both targets ({FULL['sessions']})")
    parser.add_argument("--seconds", type=float, help=f"soak length ({FULL['seconds']:g})")
    parser.add_argument("--baseline-seconds", type=float, help=f"baseline length ({FULL['baseline_seconds']:g})")
    parser.add_argument(
        "--warmup-seconds", type=float, help=f"growth is measured after this ({WARMUP_SECONDS:g}, at most soak / 4)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file of all figures (plots beside it)")
    parser.add_argument("--soak-worker", nargs="+", metavar="LABEL=URL", help=argparse.SUPPRESS)
    parser.add_argument("--worker-sessions", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--worker-seconds", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.warmup_seconds is None:
        args.warmup_seconds = min(WARMUP_SECONDS, args.seconds / 4)
    if args.sessions < 1 or not (args.seconds > 0 and args.baseline_seconds > 0):
        parser.error("--sessions, --seconds and --baseline-seconds must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.soak_worker:
        return worker_main(args)
    started = time.perf_counter()
    workers = ("soak_worker", "worker_sessions", "worker_seconds")
    config = {k: v for k, v in vars(args).items() if k not in workers}
    config.update(out=str(args.out), fps=FPS, window_seconds=WINDOW_SECONDS, sample_seconds=SAMPLE_SECONDS)
    results: dict[str, Any] = {"machine": machine(versions()), "config": config}
    print_machine(results["machine"], SHOWN_VERSIONS)
    with recorded(results, args.out, started):
        results["machine"].update(backing_versions())
        backing = f"{results['machine']['redis']} / {results['machine']['postgresql']}"
        print(f"  {'redis / postgresql':<36} {backing:>26}", flush=True)
        run(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
