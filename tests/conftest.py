"""Shared fixtures: real runner processes on port 0, test images; the run-wide log scan's hooks
(``tests/logs.py``: no credential may reach a log line the run writes)."""

from __future__ import annotations

import io
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from tests.logs import RUN
from tests.logs import log_scan_basetemp as log_scan_basetemp
from tests.logs import pytest_configure as pytest_configure
from tests.logs import pytest_runtest_logstart as pytest_runtest_logstart
from tests.logs import pytest_sessionfinish as pytest_sessionfinish
from tests.logs import pytest_terminal_summary as pytest_terminal_summary

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"runner listening on ws://([^\s]+):(\d+)")


@dataclass
class RunnerProcess:
    process: subprocess.Popen[str]
    port: int
    output: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def url(self, app: str, query: str = "") -> str:
        return f"{self.ws_base}/{app}/realtime" + (f"?{query}" if query else "")

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.reader is not None:
            self.reader.join(10)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def log(self) -> str:
        return "".join(self.output)


def start_runner(*args: str, env: dict[str, str] | None = None, timeout: float = 60.0) -> RunnerProcess:
    """Start ``python -m realtime_site.runner --port 0 ARGS`` and wait until it listens."""
    full_env = {**os.environ, **(env or {})}
    RUN.remember("runner secret", full_env.get("RUNNER_SECRET"))
    process = subprocess.Popen(
        [sys.executable, "-m", "realtime_site.runner", "--host", "127.0.0.1", "--port", "0", *args],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    RUN.add_output(f"runner {' '.join(args)[:80]} (pid {process.pid})", output)
    found = threading.Event()
    port: list[int] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            match = LISTENING.search(line)
            if match and not port:
                port.append(int(match[2]))
                found.set()
        found.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    if not found.wait(timeout) or not port:
        RunnerProcess(process, 0, output, reader).kill()
        raise RuntimeError("runner did not start:\n" + "".join(output))
    return RunnerProcess(process, port[0], output, reader)


@pytest.fixture
def runner_factory() -> Iterator:
    started: list[RunnerProcess] = []

    def factory(*args: str, env: dict[str, str] | None = None) -> RunnerProcess:
        runner = start_runner(*args, env=env)
        started.append(runner)
        return runner

    yield factory
    for runner in started:
        runner.kill()


@pytest.fixture(scope="session")
def shared_runner() -> Iterator[RunnerProcess]:
    """One runner for the many tests that only talk to it; ``slow`` apps for scheduling tests."""
    runner = start_runner(
        "--apps",
        "local/stylize,local/echo,test/slow=echo?delay_ms=150&workers=1,"
        "test/broken=stylize?model_dir=/nonexistent,test/paths=echo?paths=realtime+stream",
        "--max-frame-bytes",
        str(256 * 1024),
    )
    yield runner
    runner.stop()


def drawing(width: int = 256, height: int = 256, *, color: tuple[int, int, int] = (230, 120, 40)) -> Image.Image:
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    for i in range(0, width, max(8, width // 8)):
        draw.line((0, i, width, height - i), fill=(i % 256, 100, 255 - i % 256), width=max(2, width // 64))
    draw.ellipse((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=color)
    return img


def encode(img: Image.Image, fmt: str = "JPEG", **options: object) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **options)
    return out.getvalue()


def header_only_png(side: int) -> bytes:
    """A PNG that says it is ``side`` pixels square: a header and no pixels (a decompression bomb's
    shape, refused before decoding)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.fixture(scope="session")
def jpeg_256() -> bytes:
    return encode(drawing(256, 256))
