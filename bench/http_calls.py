"""Benchmark of the apps' HTTP forms against the WebSocket, in one run.

Run from anywhere: ``python bench/http_calls.py [--quick]``. It starts a runner (``local/stylize``,
``local/echo``) and the gateway under daphne as subprocesses, prints a table and writes every figure
to ``bench/out/http_calls.json``.

1. Stream: ``local/stylize`` at 512x512 (a ~85 KB JPEG drawing), one call at a time: the time to the
   first event (the quarter-size preview) and to the final result over ``POST /local/stylize/stream``,
   beside the same input over an open WebSocket with ``previews=1``, calls alternating between the two.
   Target: the stream's first event within 40 % of its final result's time (p50).
2. Run: ``local/echo`` with a 256x256 sketch (echo answers it without work), ``POST /local/echo`` on a
   kept-alive HTTP connection against one realtime frame on an open WebSocket, in alternating blocks.
   Target: run adds at most 3 ms p50. The runner's open sessions after the calls show whether the
   gateway reused its upstream sessions (no WebSocket handshake per call).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import msgpack
from common import (
    JPEG_SIDE,
    LISTENING,
    MAX_SIZE,
    ROOT,
    SKETCH_SIDE,
    block_sizes,
    child,
    clean_env,
    drawing_jpeg,
    expect_line,
    log_problems,
    machine,
    print_machine,
    print_servers,
    recorded,
    row,
    section,
    sketch_jpeg,
    stats,
    verdict,
)
from gateway import AUTH_ENV, START_TIMEOUT, gateway_child, gateway_env, provision
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as sync_connect

DEFAULT_OUT = ROOT / "bench" / "out" / "http_calls.json"
FIRST_EVENT_TARGET = 0.40  # of the final result's time
RUN_ADDED_TARGET_MS = 3.0
FULL = {"stream_calls": 30, "run_calls": 1000, "blocks": 10}
QUICK = {"stream_calls": 6, "run_calls": 100, "blocks": 4}
WARMUP = 3


def data_url(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def sse_call(http: httpx.Client, path: str, body: dict[str, Any]) -> tuple[float, float, int]:
    """(ms to the first event, ms to the last, number of events) of one stream call."""
    started = time.perf_counter()
    first = last = 0.0
    events = 0
    with http.stream("POST", path, json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{path} answered {response.status_code}: {response.read()[:300]!r}")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events += 1
                last = (time.perf_counter() - started) * 1000
                first = first or last
                if "x-fal-error" in line[:40]:
                    raise RuntimeError(f"{path}: {line[:300]}")
    return first, last, events


def ws_call(ws: ClientConnection, frame: bytes) -> tuple[float, float, int]:
    """The same over an open WebSocket with previews: first message, the final result, messages."""
    started = time.perf_counter()
    ws.send(frame)
    first = 0.0
    messages = 0
    while True:
        reply = ws.recv()
        if isinstance(reply, str):
            raise RuntimeError(f"the WebSocket answered an error: {reply[:300]}")
        messages += 1
        elapsed = (time.perf_counter() - started) * 1000
        first = first or elapsed
        if not msgpack.unpackb(reply).get("partial"):
            return first, elapsed, messages


def bench_stream(http: httpx.Client, ws: ClientConnection, jpeg: bytes, calls: int) -> dict[str, Any]:
    body = {"prompt": "starry night", "image_url": data_url(jpeg), "image_size": "square", "seed": 1}
    frame = msgpack.packb({**body, "image_url": None, "image_bytes": jpeg}, use_bin_type=True)
    for _ in range(WARMUP):
        sse_call(http, "/local/stylize/stream", body)
        ws_call(ws, frame)
    runs: dict[str, list[tuple[float, float, int]]] = {"stream": [], "websocket": []}
    for index in range(calls):
        order = [
            ("stream", lambda: sse_call(http, "/local/stylize/stream", body)),
            ("websocket", lambda: ws_call(ws, frame)),
        ]
        for name, call in order[:: -1 if index % 2 else 1]:
            runs[name].append(call())
    out: dict[str, Any] = {"calls": calls, "jpeg_bytes": len(jpeg)}
    for name, values in runs.items():
        first, final = stats([v[0] for v in values]), stats([v[1] for v in values])
        out[name] = {"first_event_ms": first, "final_ms": final, "events": values[0][2]}
    stream_ratio = out["stream"]["first_event_ms"]["p50"] / out["stream"]["final_ms"]["p50"]
    out.update(first_over_final=stream_ratio, target=FIRST_EVENT_TARGET, ok=stream_ratio <= FIRST_EVENT_TARGET)
    return out


def bench_run(http: httpx.Client, ws: ClientConnection, sketch: bytes, calls: int, blocks: int) -> dict[str, Any]:
    body = {
        "prompt": "echo",
        "image_url": data_url(sketch),
        "image_size": {"width": SKETCH_SIDE, "height": SKETCH_SIDE},
    }
    frame = msgpack.packb({**body, "image_url": None, "image_bytes": sketch}, use_bin_type=True)

    def run_once() -> float:
        started = time.perf_counter()
        response = http.post("/local/echo", json=body)
        if response.status_code != 200:
            raise RuntimeError(f"/local/echo answered {response.status_code}: {response.text[:300]}")
        return (time.perf_counter() - started) * 1000

    def frame_once() -> float:
        started = time.perf_counter()
        ws.send(frame)
        if isinstance(ws.recv(), str):
            raise RuntimeError("the WebSocket answered an error")
        return (time.perf_counter() - started) * 1000

    for _ in range(20):
        run_once(), frame_once()
    times: dict[str, list[float]] = {"run": [], "realtime": []}
    for index, count in enumerate(block_sizes(calls, blocks)):
        order = [("run", run_once), ("realtime", frame_once)]
        for name, once in order[:: -1 if index % 2 else 1]:
            times[name].extend(once() for _ in range(count))
    run_s, frame_s = stats(times["run"]), stats(times["realtime"])
    added = run_s["p50"] - frame_s["p50"]
    return {
        "calls": calls,
        "blocks": blocks,
        "sketch_bytes": len(sketch),
        "run_ms": run_s,
        "realtime_ms": frame_s,
        "added_p50_ms": added,
        "target_added_p50_ms": RUN_ADDED_TARGET_MS,
        "ok": added <= RUN_ADDED_TARGET_MS,
    }


def runner_sessions(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        health = json.load(response)
    return {app["id"]: app.get("load", {}).get("connections", 0) for app in health["apps"]}


def print_results(results: dict[str, Any]) -> None:
    s = results["stream"]
    section(f"1. local/stylize at {JPEG_SIDE}x{JPEG_SIDE}, {s['calls']} calls each, alternating")
    for name in ("stream", "websocket"):
        first, final = s[name]["first_event_ms"], s[name]["final_ms"]
        row(
            f"{name}: first event p50 / p95",
            f"{first['p50']:.1f} / {first['p95']:.1f} ms",
            f"{s[name]['events']} events",
        )
        row(f"{name}: final result p50 / p95", f"{final['p50']:.1f} / {final['p95']:.1f} ms")
    row(
        "stream: first event / final (p50)",
        f"{s['first_over_final']:.2f}",
        f"target <= {FIRST_EVENT_TARGET}: {verdict(s['ok'])}",
    )
    r = results["run"]
    section(f"2. local/echo, {r['calls']} calls each in {r['blocks']} alternating blocks")
    for name in ("run", "realtime"):
        ms = r[f"{name}_ms"]
        row(f"{name}: p50 / p95 / p99", f"{ms['p50']:.2f} / {ms['p95']:.2f} / {ms['p99']:.2f} ms")
    row("run added (p50)", f"{r['added_p50_ms']:.2f} ms", f"target <= {RUN_ADDED_TARGET_MS}: {verdict(r['ok'])}")
    row("runner sessions open after", json.dumps(results["runner_sessions_after"]), "upstream sessions reused")


def run(args: argparse.Namespace, results: dict[str, Any]) -> None:
    jpeg = drawing_jpeg(JPEG_SIDE)
    sketch = sketch_jpeg()
    servers: dict[str, Any] = {}
    results["servers"] = servers
    runner_cmd = [
        "-m",
        "realtime_site.runner",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--apps",
        "local/stylize,local/echo",
    ]
    with tempfile.TemporaryDirectory(prefix="bench-http-") as var_dir:
        try:
            with child("runner", runner_cmd, clean_env(AUTH_ENV)) as runner:
                runner.port = int(expect_line(runner, LISTENING, START_TIMEOUT)[1])
                env = gateway_env(var_dir, runner.port)
                auth = provision(env)
                with gateway_child("daphne", env, servers) as gateway:
                    base = f"http://127.0.0.1:{gateway.port}"
                    common: dict[str, Any] = {"compression": None, "max_size": MAX_SIZE, "open_timeout": 30}
                    headers = {"Authorization": auth}
                    with (
                        httpx.Client(base_url=base, headers=headers, timeout=60) as http,
                        sync_connect(
                            f"ws://127.0.0.1:{gateway.port}/local/stylize/realtime?previews=1",
                            additional_headers=headers,
                            **common,
                        ) as stylize_ws,
                        sync_connect(
                            f"ws://127.0.0.1:{gateway.port}/local/echo/realtime", additional_headers=headers, **common
                        ) as echo_ws,
                    ):
                        results["stream"] = bench_stream(http, stylize_ws, jpeg, args.stream_calls)
                        results["run"] = bench_run(http, echo_ws, sketch, args.run_calls, args.blocks)
                    results["runner_sessions_after"] = runner_sessions(runner.port)
            servers["runner"] = {"exit_code": runner.exit_code, "log": log_problems(runner.log)}
        finally:
            if "run" in results:
                print_results(results)
            print_servers(servers)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few calls, for a smoke run")
    parser.add_argument(
        "--stream-calls", type=int, help=f"stream calls (and WebSocket inputs) ({FULL['stream_calls']})"
    )
    parser.add_argument("--run-calls", type=int, help=f"run calls (and realtime frames) ({FULL['run_calls']})")
    parser.add_argument("--blocks", type=int, help=f"alternating blocks of section 2 ({FULL['blocks']})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    results: dict[str, Any] = {"machine": machine({}), "config": {**vars(args), "out": str(args.out)}}
    print_machine(results["machine"], ())
    with recorded(results, args.out, started):
        run(args, results)
    ok = results.get("stream", {}).get("ok") and results.get("run", {}).get("ok")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
