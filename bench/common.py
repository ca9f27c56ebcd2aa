"""Helpers shared by the benchmark scripts: child processes, test images, figures and tables.

Imported as ``from common import ...``: the scripts run as ``python bench/X.py``, so ``bench/`` is on
``sys.path``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import platform
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import msgpack
import numpy as np
import psutil
from PIL import Image, ImageDraw

if TYPE_CHECKING:
    from websockets.sync.client import ClientConnection as SyncConnection

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"listening on ws://(?:\[[^\]]*\]|[^:/\s]+):(\d+)")
STOP_TIMEOUT = 10.0
MAX_SIZE = 16 * 1024 * 1024

JPEG_SIDE = 512
JPEG_TARGET = 85_000
JPEG_RANGE = (80_000, 90_000)
SKETCH_SIDE = 256


# -- subprocesses ------------------------------------------------------------------------------


@dataclass
class Child:
    """A ``python`` child process, its stdout lines (``None`` at the end) and its stderr file."""

    name: str
    proc: subprocess.Popen[str]
    stderr: IO[str]
    lines: queue.Queue[str | None]
    port: int = 0
    exit_code: int | None = None
    log: str = ""  # all of stderr, read when it stopped

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def tail(self, chars: int = 2000) -> str:
        if not self.stderr.closed:
            self.stderr.seek(0)
        text = (self.log if self.stderr.closed else self.stderr.read())[-chars:]
        return f"\n--- {self.name} stderr (tail) ---\n{text}" if text else ""


def pump_lines(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    """Read a child's stdout to the end, so the pipe never fills."""
    for line in stream:
        lines.put(line)
    lines.put(None)


def stop_process(proc: subprocess.Popen[str]) -> int:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def clean_env(*dropped: str) -> dict[str, str]:
    """This environment without the project's settings (no RUNNER_SECRET, no foreign database or Redis),
    nor the variables named in ``dropped``."""
    prefixes = ("RUNNER_", "REALTIME_", "DJANGO_")
    names = {"DATABASE_URL", "REDIS_URL", "USAGE_FLUSH_INTERVAL", *dropped}
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes) and k not in names}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextlib.contextmanager
def child(name: str, args: list[str], env: dict[str, str], *, stdin: bool = False) -> Iterator[Child]:
    """Start ``python ARGS`` in the repository root; always stop it (its stderr ends up in ``log``)."""
    with tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        c = Child(name, proc, stderr, queue.Queue())
        try:
            assert proc.stdout is not None
            threading.Thread(target=pump_lines, args=(proc.stdout, c.lines), daemon=True).start()
            yield c
        finally:
            c.exit_code = stop_process(proc)
            stderr.seek(0)
            c.log = stderr.read()


def expect_line(c: Child, pattern: re.Pattern[str] | str, timeout: float) -> re.Match[str]:
    """The first stdout line of ``c`` that matches ``pattern`` (searched), within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            line = c.lines.get(timeout=remaining)
        except queue.Empty:
            break
        if line is None:
            raise RuntimeError(f"{c.name} exited (code {c.proc.wait()}) before printing {pattern!r}{c.tail()}")
        if match := re.search(pattern, line):
            return match
    raise RuntimeError(f"{c.name}: no {pattern!r} within {timeout:g} s{c.tail()}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http_ok(c: Child, url: str, timeout: float) -> None:
    """Poll ``url`` until it answers 200 (raises when ``c`` exits first or ``timeout`` seconds pass)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if c.proc.poll() is not None:
            raise RuntimeError(f"{c.name} exited with {c.proc.returncode} before answering {url}{c.tail()}")
        with contextlib.suppress(OSError, urllib.error.URLError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{c.name}: {url} did not answer 200 within {timeout:g} s{c.tail()}")


def manage(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    """``python manage.py ARGS``; its stdout (raises with stderr when it fails)."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {args[0]} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


def daphne_args(port: int) -> list[str]:
    size = str(MAX_SIZE)
    return [
        "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
        "--websocket-max-message-size", size, "--websocket-max-frame-size", size,
        "realtime_site.asgi:application",
    ]  # fmt: skip


def log_problems(log: str, *, log_bytes: bool = True) -> dict[str, Any]:
    """Tracebacks and ERROR / CRITICAL lines in a server's stderr (and its length, with ``log_bytes``)."""
    bad = [line for line in log.splitlines() if re.search(r"\b(ERROR|CRITICAL)\b", line)]
    first = log.find("Traceback")
    problems: dict[str, Any] = {
        "tracebacks": log.count("Traceback (most recent call last)"),
        "error_lines": len(bad),
        "first_error_lines": bad[:5],
        "first_traceback": log[first : first + 3000] if first >= 0 else None,
    }
    if log_bytes:
        problems["log_bytes"] = len(log)
    return problems


# -- inputs ------------------------------------------------------------------------------------


def jpeg_bytes(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def noisy_jpeg() -> tuple[bytes, int]:
    """A seeded noisy gradient at the JPEG quality that lands nearest 85 KB; (bytes, quality)."""
    rng = np.random.default_rng(1234)
    y, x = np.mgrid[0:JPEG_SIDE, 0:JPEG_SIDE].astype(np.float32)
    base = np.stack([x / 2, y / 2, (x + y) / 4], axis=-1)
    image = Image.fromarray(np.clip(base + rng.normal(0, 16, base.shape), 0, 255).astype(np.uint8))
    candidates = ((jpeg_bytes(image, q), q) for q in range(40, 96))
    data, quality = min(candidates, key=lambda d: abs(len(d[0]) - JPEG_TARGET))
    if not JPEG_RANGE[0] <= len(data) <= JPEG_RANGE[1]:
        raise RuntimeError(f"test JPEG is {len(data)} bytes, outside {JPEG_RANGE}")
    return data, quality


def sketch_jpeg(side: int = SKETCH_SIDE, seed: int = 7) -> bytes:
    """A few dark strokes on white, like a drawing in progress: a few KB."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (side, side), "white")
    draw = ImageDraw.Draw(image)
    for stroke in range(4):
        x0, y0, x1, y1 = (int(v) for v in rng.integers(side // 8, side - side // 8, 4))
        draw.line([(x0, y0), (x1, y1)], fill=(30, 30, 30), width=2)
        if stroke % 2:
            radius = int(rng.integers(side // 16, side // 6))
            draw.ellipse([x1 - radius, y1 - radius, x1 + radius, y1 + radius], outline=(30, 30, 30), width=2)
    return jpeg_bytes(image, 70)


def drawing_jpeg(side: int, seed: int = 7) -> bytes:
    """A line drawing on white: lines and circles, deterministic."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (side, side), "white")
    draw = ImageDraw.Draw(image)
    for _ in range(24):
        colour = tuple(int(c) for c in rng.integers(0, 200, 3))
        width = int(rng.integers(2, 7))
        x0, y0, x1, y1 = (int(v) for v in rng.integers(0, side, 4))
        draw.line([(x0, y0), (x1, y1)], fill=colour, width=width)
        radius = int(rng.integers(side // 32, side // 6))
        draw.ellipse([x1 - radius, y1 - radius, x1 + radius, y1 + radius], outline=colour, width=width)
    return jpeg_bytes(image, 90)


def request(image: bytes, side: int, prompt: str, **extra: Any) -> dict[str, Any]:
    return {"prompt": prompt, "image_bytes": image, "image_size": {"width": side, "height": side}, **extra}


def pack(fields: dict[str, Any]) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


def answer_of(reply: bytes | str, who: str = "") -> dict[str, Any]:
    """The decoded result; an error message (text) raises, naming ``who`` answered it."""
    if isinstance(reply, str):
        raise RuntimeError(f"{who} answered with an error: {reply[:300]}".lstrip())
    return msgpack.unpackb(reply)


def round_trips(ws: SyncConnection, frame: bytes, count: int) -> list[float]:
    """Sequential send-then-recv of ``frame``; round-trip times in ms."""
    times: list[float] = []
    for _ in range(count):
        start = time.perf_counter()
        ws.send(frame)
        reply = ws.recv()
        times.append((time.perf_counter() - start) * 1000)
        if not isinstance(reply, bytes):
            raise RuntimeError(f"text reply: {reply[:300]}")
    return times


def block_sizes(total: int, blocks: int) -> list[int]:
    """``total`` split into ``blocks`` sizes that differ by at most one, the larger first."""
    base, extra = divmod(total, blocks)
    return [base + (i < extra) for i in range(blocks)]


def interleaved_round_trips(
    first: SyncConnection, second: SyncConnection, frame: bytes, total: int, blocks: int
) -> tuple[list[float], list[float]]:
    """``total`` round trips on each connection, in ``blocks`` blocks that alternate which goes first;
    the times in ms of ``first`` and of ``second``."""
    first_ms: list[float] = []
    second_ms: list[float] = []
    for index, count in enumerate(block_sizes(total, blocks)):
        order = [(first, first_ms), (second, second_ms)]
        for ws, sink in order[:: -1 if index % 2 else 1]:  # alternate who goes first
            sink.extend(round_trips(ws, frame, count))
    return first_ms, second_ms


# -- figures -----------------------------------------------------------------------------------


def stats(values: list[float]) -> dict[str, float]:
    """n, p50, p95, p99, mean and max; NaN when there are no values."""
    if not values:
        return {"n": 0, **dict.fromkeys(("p50", "p95", "p99", "mean", "max"), math.nan)}
    a = np.asarray(values, dtype=np.float64)
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"n": len(a), "p50": p50, "p95": p95, "p99": p99, "mean": a.mean(), "max": a.max()}


def json_safe(value: Any) -> Any:
    """NaN becomes null; numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def save_results(results: dict[str, Any], out: Path, started: float) -> None:
    """Add ``elapsed_seconds`` (since ``started``, a ``perf_counter``) and write ``results`` as JSON to ``out``."""
    results["elapsed_seconds"] = round(time.perf_counter() - started, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(json_safe(results), indent=2) + "\n")


@contextlib.contextmanager
def recorded(results: dict[str, Any], out: Path, started: float) -> Iterator[None]:
    """Run the body; whatever happens, save ``results`` (with ``failed`` when it raised) and say where."""
    try:
        yield
    except BaseException as exc:
        results["failed"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        save_results(results, out, started)
        print(f"\nDone in {results['elapsed_seconds']:.0f} s; figures in {out}")


# -- tables ------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def row(label: str, value: str, note: str = "", *, label_width: int = 36, value_width: int = 26) -> None:
    print(f"  {label:<{label_width}} {value:>{value_width}}  {note}".rstrip(), flush=True)


def section(title: str) -> None:
    print(f"\n{title}\n{'-' * len(title)}", flush=True)


def print_servers(servers: dict[str, Any], title: str = "Servers") -> None:
    """Each server's exit code after SIGTERM and the problems in its log."""
    section(title)
    for name, s in servers.items():
        problems = s["log"]
        row(f"{name}: exit code after SIGTERM", str(s["exit_code"]))
        row(f"{name}: tracebacks / ERROR lines", f"{problems['tracebacks']} / {problems['error_lines']}")
        for line in problems["first_error_lines"][:3]:
            print(f"    {line[:200]}")
        if problems["first_traceback"]:
            print("    " + problems["first_traceback"][:1500].replace("\n", "\n    "))


# -- the machine -------------------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine(versions: dict[str, str]) -> dict[str, Any]:
    """CPU, memory, load, platform and Python, then ``versions`` (package -> version)."""
    return {
        "cpu_count": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "cpu_model": cpu_model(),
        "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        **versions,
    }


def print_machine(info: dict[str, Any], packages: Sequence[str]) -> None:
    """The ``machine()`` table; the versions of Python and of ``packages`` on one row."""
    section("Machine")
    row("CPU", f"{info['cpu_count']} logical, {info['physical_cores']} physical", info["cpu_model"])
    row("memory", f"{info['memory_gb']} GB")
    row("load average (1/5/15 min)", " / ".join(f"{v:.2f}" for v in info["load_average"]))
    names = ["python", *packages]
    row(" / ".join(names), " / ".join(str(info[name]) for name in names))
    row("platform", info["platform"])


def noisy_jpeg_near(side: int, target: int, seed: int = 1234) -> tuple[bytes, int]:
    """A seeded noisy gradient of ``side`` x ``side`` at the JPEG quality that lands nearest ``target``
    bytes; (bytes, quality). The caller checks the size is close enough."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32)
    scale = 255 / max(1, side - 1)
    base = np.stack([x * scale, y * scale, (x + y) * scale / 2], axis=-1)
    image = Image.fromarray(np.clip(base + rng.normal(0, 16, base.shape), 0, 255).astype(np.uint8))
    candidates = ((jpeg_bytes(image, q), q) for q in range(20, 96))
    return min(candidates, key=lambda d: abs(len(d[0]) - target))
