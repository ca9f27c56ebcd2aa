"""Benchmark of the realtime runner: protocol overhead, stylize latency, overload and memory.

Run from anywhere: ``python bench/runner.py [--quick]`` (``make bench``). It starts its servers as
subprocesses of this interpreter and prints a table; every figure also goes to ``bench/out/runner.json``.

1. Echo: round trips of one ~85 KB JPEG frame against a bare ``websockets`` echo server and
   against the runner's ``local/echo`` app, interleaved in blocks; the ratio is the runner's cost.
2. Stylize: sequential frames at 256 and 512 px; the engine's own time and the round trip.
3. Overload: 8 frames a second on one connection with ``max_buffering=1``; the age of each
   answer (arrival minus the send time of the input it answers), drops, and the runner's RSS.
   Run against ``local/stylize`` and against a deliberately slow echo engine (300 ms a frame).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgpack
import numpy as np
import psutil
import websockets
from common import (
    JPEG_SIDE,
    LISTENING,
    MAX_SIZE,
    ROOT,
    answer_of,
    drawing_jpeg,
    interleaved_round_trips,
    machine,
    noisy_jpeg,
    pack,
    print_machine,
    pump_lines,
    request,
    round_trips,
    row,
    save_results,
    section,
    stats,
    stop_process,
    verdict,
)
from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import connect as async_connect
from websockets.sync.client import ClientConnection as SyncConnection
from websockets.sync.client import connect as sync_connect

DEFAULT_OUT = ROOT / "bench" / "out" / "runner.json"
START_TIMEOUT = 180.0  # loading models may take a while on a busy machine
MB = 1_000_000

OVERLOAD_SIDE = 1024
ECHO_WARMUP = 50
ECHO_P50_TARGET = 1.3
ECHO_P99_TARGET = 2.0
STYLIZE_WARMUP = 5
STYLIZE_TARGETS_MS = {256: 60.0, 512: 250.0}
FPS = 8
AGE_SLACK_MS = 150.0
SLOW_DELAY_MS = 300.0
DRAIN_TIMEOUT = 15.0  # after the last send, how long to wait for its answer

FULL = {"echo_frames": 1000, "stylize_frames": 50, "overload_seconds": 60.0, "slow_seconds": 20.0}
QUICK = {"echo_frames": 100, "stylize_frames": 10, "overload_seconds": 10.0, "slow_seconds": 5.0}


# -- subprocesses ------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[str]
    port: int
    exit_code: int | None = None

    def url(self, path: str = "/") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


def _tail(stderr: IO[str], chars: int = 2000) -> str:
    stderr.seek(0)
    text = stderr.read()[-chars:]
    return f"\n--- stderr (tail) ---\n{text}" if text else ""


def _wait_listening(name: str, lines: queue.Queue[str | None], stderr: IO[str]) -> int:
    deadline = time.monotonic() + START_TIMEOUT
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            break
        if line is None:
            raise RuntimeError(f"{name} exited before listening{_tail(stderr)}")
        if match := LISTENING.search(line):
            return int(match[1])
    raise RuntimeError(f"{name}: no 'listening on' line within {START_TIMEOUT:g} s{_tail(stderr)}")


@contextlib.contextmanager
def spawn(name: str, args: list[str]) -> Iterator[Server]:
    """Start ``python ARGS`` in the repository root and yield it once it listens; always stop it."""
    env = {key: value for key, value in os.environ.items() if key != "RUNNER_SECRET"}  # loopback, no auth
    env["PYTHONUNBUFFERED"] = "1"
    with tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True
        )
        server: Server | None = None
        try:
            lines: queue.Queue[str | None] = queue.Queue()
            assert proc.stdout is not None
            threading.Thread(target=pump_lines, args=(proc.stdout, lines), daemon=True).start()
            server = Server(name, proc, _wait_listening(name, lines, stderr))
            yield server
        finally:
            code = stop_process(proc)
            if server is not None:
                server.exit_code = code
                if code != 0:
                    print(f"warning: {name} exited with {code} after SIGTERM{_tail(stderr)}", file=sys.stderr)


def runner_args(apps: str) -> list[str]:
    return ["-m", "realtime_site.runner", "--host", "127.0.0.1", "--port", "0", "--apps", apps]


# -- 1. echo round trip ------------------------------------------------------------------------


def bench_echo(jpeg: bytes, frames: int, blocks: int) -> dict[str, Any]:
    frame = pack(request(jpeg, JPEG_SIDE, "echo"))
    connect_args: dict[str, Any] = {"compression": None, "max_size": MAX_SIZE, "open_timeout": 30}
    with (
        spawn("bare echo server", ["bench/echo_server.py", "--port", "0"]) as bare,
        spawn("runner local/echo", runner_args("local/echo")) as runner,
        sync_connect(bare.url(), **connect_args) as bare_ws,
        sync_connect(runner.url("/local/echo/realtime"), **connect_args) as runner_ws,
    ):
        bare_ws.send(frame)
        bare_same = bare_ws.recv() == frame
        runner_ws.send(frame)
        runner_same = answer_of(runner_ws.recv(), "runner")["images"][0]["content"] == jpeg
        round_trips(bare_ws, frame, ECHO_WARMUP)
        round_trips(runner_ws, frame, ECHO_WARMUP)
        bare_ms, runner_ms = interleaved_round_trips(bare_ws, runner_ws, frame, frames, blocks)
    bare_s, runner_s = stats(bare_ms), stats(runner_ms)
    return {
        "frame_bytes": len(frame),
        "bare_echoes_unchanged": bare_same,
        "runner_returns_input_bytes": runner_same,
        "frames": frames,
        "blocks": blocks,
        "bare_ms": bare_s,
        "runner_ms": runner_s,
        "ratio_p50": runner_s["p50"] / bare_s["p50"],
        "ratio_p99": runner_s["p99"] / bare_s["p99"],
        "target_ratio_p50": ECHO_P50_TARGET,
        "target_ratio_p99": ECHO_P99_TARGET,
        "exit_codes": {bare.name: bare.exit_code, runner.name: runner.exit_code},
    }


def print_echo(echo: dict[str, Any]) -> None:
    section(f"1. Echo round trip ({echo['frames']} frames in {echo['blocks']} alternating blocks, one connection)")
    row("frame (msgpack) size", f"{echo['frame_bytes']:,} B")
    row("bare server echoes the frame unchanged", str(echo["bare_echoes_unchanged"]))
    row("runner returns the input JPEG bytes", str(echo["runner_returns_input_bytes"]))
    for key, label in (("bare_ms", "bare websockets echo"), ("runner_ms", "runner local/echo")):
        s = echo[key]
        row(f"{label} p50 / p99 / mean", f"{s['p50']:.3f} / {s['p99']:.3f} / {s['mean']:.3f} ms")
    overhead_us = (echo["runner_ms"]["p50"] - echo["bare_ms"]["p50"]) * 1000
    row("runner overhead at p50", f"{overhead_us:.0f} us")
    p50_ok = echo["ratio_p50"] <= ECHO_P50_TARGET
    p99_ok = echo["ratio_p99"] <= ECHO_P99_TARGET
    row("ratio runner/bare p50", f"{echo['ratio_p50']:.2f}", f"target <= {ECHO_P50_TARGET}: {verdict(p50_ok)}")
    row("ratio runner/bare p99", f"{echo['ratio_p99']:.2f}", f"target <= {ECHO_P99_TARGET}: {verdict(p99_ok)}")


# -- 2. stylize per frame ----------------------------------------------------------------------


def stylize_frames(ws: SyncConnection, side: int, frames: int) -> dict[str, Any]:
    image = drawing_jpeg(side)
    fields = request(image, side, "starry", seed=1, output_format="jpeg")
    inference: list[float] = []
    trips: list[float] = []
    for rid in range(STYLIZE_WARMUP + frames):
        start = time.perf_counter()
        ws.send(pack({**fields, "request_id": rid}))
        reply = ws.recv()
        elapsed = (time.perf_counter() - start) * 1000
        answer = answer_of(reply, "runner")
        if answer.get("request_id") != rid:
            raise RuntimeError(f"expected the answer to request {rid}, got {answer.get('request_id')!r}")
        if rid >= STYLIZE_WARMUP:
            inference.append(answer["timings"]["inference"] * 1000)
            trips.append(elapsed)
    target = STYLIZE_TARGETS_MS[side]
    inference_s = stats(inference)
    return {
        "side": side,
        "input_bytes": len(image),
        "frames": frames,
        "inference_ms": inference_s,
        "round_trip_ms": stats(trips),
        "target_ms": target,
        "within_target": inference_s["p50"] <= target,
    }


def print_stylize(results: list[dict[str, Any]]) -> None:
    section(f"2. Stylize per frame (sequential, {results[0]['frames']} frames after {STYLIZE_WARMUP} warm-up)")
    for r in results:
        inf, trip = r["inference_ms"], r["round_trip_ms"]
        side = r["side"]
        row(f"{side}x{side} input", f"{r['input_bytes']:,} B")
        note = f"target p50 <= {r['target_ms']:.0f} ms: {verdict(r['within_target'])}"
        row(f"{side}x{side} inference p50 / p95", f"{inf['p50']:.1f} / {inf['p95']:.1f} ms", note)
        row(f"{side}x{side} round trip p50 / p95", f"{trip['p50']:.1f} / {trip['p95']:.1f} ms")


# -- 3. overload -------------------------------------------------------------------------------


@dataclass
class OverloadState:
    sent: list[float] = field(default_factory=list)  # send time by request_id
    lag_ms: list[float] = field(default_factory=list)  # how late each send was against its deadline
    ages_ms: dict[int, float] = field(default_factory=dict)  # request_id -> age of its answer
    waits_ms: dict[int, float] = field(default_factory=dict)  # request_id -> age minus its own inference
    inference_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    rss: list[tuple[float, float]] = field(default_factory=list)  # (seconds, MB)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


def rss_mb(pid: int) -> float:
    """RSS of the process and its children, in MB."""
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += child.memory_info().rss
    return total / MB


async def sample_rss(pid: int, state: OverloadState, start: float) -> None:
    tick = 0
    while True:
        state.rss.append((time.perf_counter() - start, rss_mb(pid)))
        tick += 1
        await asyncio.sleep(max(0.0, start + tick - time.perf_counter()))


async def send_paced(ws: AsyncConnection, fields: dict[str, Any], state: OverloadState, count: int) -> None:
    """One frame every 1/FPS s at absolute deadlines, with request_id 0, 1, 2, ..."""
    start = time.perf_counter()
    for rid in range(count):
        deadline = start + rid / FPS
        if (delay := deadline - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        now = time.perf_counter()
        state.lag_ms.append((now - deadline) * 1000)
        state.sent.append(now)
        await ws.send(pack({**fields, "request_id": rid}))


async def receive(ws: AsyncConnection, state: OverloadState) -> None:
    async for message in ws:
        now = time.perf_counter()
        if isinstance(message, str):
            state.errors.append(message)
            continue
        answer = msgpack.unpackb(message)
        rid = answer["request_id"]
        state.ages_ms[rid] = (now - state.sent[rid]) * 1000
        state.inference_ms.append(answer["timings"]["inference"] * 1000)
        state.waits_ms[rid] = state.ages_ms[rid] - state.inference_ms[-1]
        state.arrived.set()


async def until_answered(state: OverloadState, rid: int) -> None:
    while rid not in state.ages_ms:
        state.arrived.clear()
        await state.arrived.wait()


async def cancel(*tasks: asyncio.Task[Any]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def drive_overload(server: Server, path: str, fields: dict[str, Any], seconds: float) -> OverloadState:
    state = OverloadState()
    count = max(1, round(seconds * FPS))
    url = server.url(f"{path}?max_buffering=1")
    async with async_connect(url, compression=None, max_size=MAX_SIZE, open_timeout=30) as ws:
        start = time.perf_counter()
        sampler = asyncio.create_task(sample_rss(server.proc.pid, state, start))
        receiver = asyncio.create_task(receive(ws, state))
        try:
            await send_paced(ws, fields, state, count)
            waiter = asyncio.create_task(until_answered(state, count - 1))
            done, _ = await asyncio.wait({waiter, receiver}, timeout=DRAIN_TIMEOUT, return_when="FIRST_COMPLETED")
            await cancel(waiter)
            if receiver in done:
                receiver.result()  # raises what ended it
                raise RuntimeError("the runner closed the connection before answering the last input")
        finally:
            await cancel(sampler, receiver)
        state.rss.append((time.perf_counter() - start, rss_mb(server.proc.pid)))
    return state


def summarise_overload(state: OverloadState, base_ms: float | None, label: str) -> dict[str, Any]:
    """Figures of one overload phase; the age bound is ``base_ms`` (default: inference p50) + slack."""
    sent, answered = len(state.sent), len(state.ages_ms)
    # The final input has no newer one to replace it, so it alone waits out the inference in
    # progress (up to twice the inference time): it is reported apart from the steady state.
    ages = stats([age for rid, age in state.ages_ms.items() if rid != sent - 1])
    # The target read per answer: its age is at most its own engine time + the slack.
    waits = stats([wait for rid, wait in state.waits_ms.items() if rid != sent - 1])
    inference = stats(state.inference_ms)
    bound = (inference["p50"] if base_ms is None else base_ms) + AGE_SLACK_MS
    seconds = np.array([t for t, _ in state.rss])
    mbs = np.array([mb for _, mb in state.rss])
    slope = float(np.polyfit(seconds / 60, mbs, 1)[0]) if len(mbs) >= 2 and np.ptp(seconds) > 0 else math.nan
    return {
        "label": label,
        "fps": FPS,
        "frames_sent": sent,
        "results_received": answered,
        "dropped": sent - answered,
        "errors": state.errors,
        "last_input_answered": sent - 1 in state.ages_ms,
        "send_lag_ms": stats(state.lag_ms),
        "age_ms": ages,
        "final_input_age_ms": state.ages_ms.get(sent - 1, math.nan),
        "age_all_ms": stats(list(state.ages_ms.values())),
        "inference_ms": inference,
        "overloaded": inference["p50"] > 1000 / FPS,
        "bound_ms": bound,
        "bound_rule": f"{'inference p50' if base_ms is None else f'delay {base_ms:g} ms'} + {AGE_SLACK_MS:g} ms",
        "max_age_within_bound": ages["max"] <= bound,
        "wait_beyond_own_inference_ms": waits,
        "every_age_within_own_inference_plus_slack": waits["max"] <= AGE_SLACK_MS,
        "p95_age_within_bound": ages["p95"] <= bound,
        "rss_mb": {
            "start": mbs[0],
            "min": mbs.min(),
            "max": mbs.max(),
            "end": mbs[-1],
            "slope_mb_per_min": slope,
            "samples": [[round(t, 2), round(mb, 2)] for t, mb in state.rss],
        },
    }


def print_overload(title: str, r: dict[str, Any]) -> None:
    section(title)
    age, inf, rss = r["age_ms"], r["inference_ms"], r["rss_mb"]
    row("frames sent / results received", f"{r['frames_sent']} / {r['results_received']}")
    row("dropped (sent - answered)", f"{r['dropped']} ({r['dropped'] / max(1, r['frames_sent']):.0%})")
    row("error messages", str(len(r["errors"])), r["errors"][0][:80] if r["errors"] else "")
    row("last input answered", str(r["last_input_answered"]))
    row("sender lateness p50 / max", f"{r['send_lag_ms']['p50']:.2f} / {r['send_lag_ms']['max']:.2f} ms")
    row(
        "engine inference p50",
        f"{inf['p50']:.1f} ms",
        "" if r["overloaded"] else f"(< {1000 / FPS:g} ms: not overloaded)",
    )
    ages = f"{age['p50']:.1f} / {age['p95']:.1f} / {age['max']:.1f} ms"
    row("result age p50 / p95 / max", ages, "(every answer but the final input's)")
    row("final input's age", f"{r['final_input_age_ms']:.1f} ms", "(nothing replaces it: waits for the busy engine)")
    row("age bound", f"{r['bound_ms']:.1f} ms", f"({r['bound_rule']})")
    row("p95 age within bound", str(r["p95_age_within_bound"]), verdict(r["p95_age_within_bound"]))
    row("max age within bound", str(r["max_age_within_bound"]), verdict(r["max_age_within_bound"]))
    wait = r["wait_beyond_own_inference_ms"]
    row("age minus own inference p50 / p95 / max", f"{wait['p50']:.1f} / {wait['p95']:.1f} / {wait['max']:.1f} ms")
    ok = r["every_age_within_own_inference_plus_slack"]
    row(f"every age <= own inference + {AGE_SLACK_MS:g} ms", str(ok), verdict(ok))
    row(
        "RSS start / min / max / end", f"{rss['start']:.1f} / {rss['min']:.1f} / {rss['max']:.1f} / {rss['end']:.1f} MB"
    )
    row("RSS slope (least squares)", f"{rss['slope_mb_per_min']:+.2f} MB/min", f"({len(rss['samples'])} samples)")


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts for a smoke run")
    parser.add_argument("--echo-frames", type=int, help=f"echo round trips per server ({FULL['echo_frames']})")
    parser.add_argument("--echo-blocks", type=int, default=10, help="alternating blocks (10)")
    parser.add_argument("--stylize-frames", type=int, help=f"frames per size ({FULL['stylize_frames']})")
    parser.add_argument("--overload-seconds", type=float, help=f"stylize overload ({FULL['overload_seconds']:g})")
    parser.add_argument("--slow-seconds", type=float, help=f"slow engine overload ({FULL['slow_seconds']:g})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file of all figures")
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.echo_frames < args.echo_blocks or args.stylize_frames < 1:
        parser.error("need at least one echo frame per block and one stylize frame")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    versions = {
        "websockets": websockets.__version__,
        "msgpack": ".".join(map(str, msgpack.version)),
        "numpy": np.__version__,
    }
    results: dict[str, Any] = {"machine": machine(versions), "config": {**vars(args), "out": str(args.out)}}
    print_machine(results["machine"], ["websockets"])

    jpeg, quality = noisy_jpeg()
    results["echo_jpeg"] = {"bytes": len(jpeg), "quality": quality, "side": JPEG_SIDE}
    print(f"\nTest JPEG: {JPEG_SIDE}x{JPEG_SIDE}, {len(jpeg):,} bytes ({len(jpeg) / 1000:.1f} KB, quality {quality})")
    results["echo"] = bench_echo(jpeg, args.echo_frames, args.echo_blocks)
    print_echo(results["echo"])

    with spawn("runner local/stylize", runner_args("local/stylize")) as stylize:
        with sync_connect(stylize.url("/local/stylize/realtime"), compression=None, max_size=MAX_SIZE) as ws:
            results["stylize"] = [stylize_frames(ws, side, args.stylize_frames) for side in (256, 512)]
        print_stylize(results["stylize"])
        # At 1024 px the real model is slower than the 125 ms between frames: a true overload.
        # A few frames first, so onnxruntime has sized its buffers for 1024 before memory is sampled.
        fields = request(drawing_jpeg(OVERLOAD_SIDE), OVERLOAD_SIDE, "starry", seed=1, output_format="jpeg")
        with sync_connect(stylize.url("/local/stylize/realtime"), compression=None, max_size=MAX_SIZE) as ws:
            for _ in range(3):
                ws.send(pack(fields))
                ws.recv()
        state = asyncio.run(drive_overload(stylize, "/local/stylize/realtime", fields, args.overload_seconds))
        results["overload"] = summarise_overload(state, None, "local/stylize")
        side = f"{OVERLOAD_SIDE}x{OVERLOAD_SIDE}"
        title = f"3a. Overload: local/stylize at {side}, {FPS} fps for {args.overload_seconds:g} s"
        print_overload(title, results["overload"])
    results["overload"]["exit_code"] = stylize.exit_code

    slow_app = f"test/slow=echo?delay_ms={SLOW_DELAY_MS:g}"
    with spawn("runner test/slow", runner_args(slow_app)) as slow:
        state = asyncio.run(
            drive_overload(slow, "/test/slow/realtime", request(jpeg, JPEG_SIDE, "slow"), args.slow_seconds)
        )
        results["slow"] = summarise_overload(state, SLOW_DELAY_MS, slow_app)
        print_overload(f"3b. Overload: {slow_app}, {FPS} fps for {args.slow_seconds:g} s", results["slow"])
    results["slow"]["exit_code"] = slow.exit_code

    save_results(results, args.out, started)
    exits = [results["echo"]["exit_codes"], {"stylize": stylize.exit_code, "slow": slow.exit_code}]
    print(f"\nServers' exit codes after SIGTERM: {', '.join(f'{k}={v}' for e in exits for k, v in e.items())}")
    print(f"Done in {results['elapsed_seconds']:.0f} s; figures in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
