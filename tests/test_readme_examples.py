"""Every fenced code block of README.md, run against a live stack (real daphne and runner on 127.0.0.1).

Each block, known by its key (language and first line), is either in ``RUN`` (the function that runs
it and checks what it produced) or in ``NOT_RUNNABLE`` with the reason; a block in neither, or a
table entry no block matches, fails ``test_every_block_is_run_or_listed``. Blocks run as written but
for what ``Live.prepare`` changes: the address, the API key, and a preamble for the free names.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Playwright, Route, sync_playwright

from tests.conftest import ROOT
from tests.gateway.stack import GatewayStack, start_stack

README = ROOT / "README.md"
DRAWING = ROOT / "examples" / "drawing.png"
NODE_MODULES = ROOT / "frontend" / "node_modules"
PYTHON = ROOT / ".venv" / "bin" / "python"
CHROMIUM = "/usr/bin/chromium"
PASSWORD = "pw-demo-readme-8431"
FENCE = re.compile(r"^ {0,3}```(\w*)[ \t]*\n(.*?)^ {0,3}```[ \t]*$", re.M | re.S)
KEY = re.compile(r"[\w-]+:[\w-]+")
WIDTH_AND_TIMING = re.compile(r"512 (\d+(?:\.\d+)?(?:e-?\d+)?)")  # what the examples print
FAL_IMPORT_MAP = json.dumps({"imports": {"@fal-ai/client": "/__readme__/fal-client.js"}})
WAIT = 30.0  # seconds a browser example may take to show its result (a bound, not an assertion)


@dataclass(frozen=True)
class Block:
    lang: str  # "sh", "python", "js" or "" (untagged)
    code: str
    line: int  # where it starts in README.md, for messages

    @property
    def key(self) -> str:
        """Language and first line (spaces collapsed, a trailing comment cut): stable when blocks move."""
        first = re.sub(r"(?<=\S)\s+(#|//)\s.*$", "", self.code.split("\n", 1)[0])
        return f"{self.lang or 'text'}: {' '.join(first.split())}"

    def where(self) -> str:
        return f"README.md line {self.line}, block {self.key!r}"


def readme_blocks() -> list[Block]:
    text = README.read_text()
    return [Block(m[1], m[2], text.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(text)]


def find_block(key: str) -> Block:
    found = [block for block in readme_blocks() if block.key == key]
    assert found, f"README.md has no block {key!r} any more: update RUN in {Path(__file__).name}"
    return found[0]


def js_preamble() -> str:
    """``pngBytes`` and ``jpegBytes`` (examples/drawing.png, and as a JPEG) and an ``img`` on the page."""
    png = DRAWING.read_bytes()
    jpeg = io.BytesIO()
    with Image.open(DRAWING) as image:
        image.convert("RGB").save(jpeg, "JPEG")

    def as_bytes(data: bytes) -> str:
        return f'Uint8Array.from(atob("{base64.b64encode(data).decode()}"), (c) => c.charCodeAt(0))'

    return (
        f"const pngBytes = {as_bytes(png)};\nconst jpegBytes = {as_bytes(jpeg.getvalue())};\n"
        'const img = document.body.appendChild(Object.assign(document.createElement("img"), { id: "readme-img" }));\n'
    )


PREAMBLES = {"python": 'png = open("examples/drawing.png", "rb").read()\n', "js": js_preamble()}

# @fal-ai/client ships CommonJS only: its files behind a small require(), as one ES module for the
# browser; its three dependencies are imported as their own ES builds (msgpack by the page's import map).
FAL_CLIENT_MODULE = """
import * as msgpack from "@msgpack/msgpack";
import * as robot3 from "/__readme__/node_modules/robot3/machine.js";
import * as eventsourceParser from "/__readme__/node_modules/eventsource-parser/dist/index.js";
const packages = { "@msgpack/msgpack": msgpack, robot3, "eventsource-parser": eventsourceParser };
const factories = { FACTORIES };
const loaded = {};
function resolve(from, spec) {
  const parts = from.split("/").slice(0, -1);
  for (const part of spec.split("/")) part === ".." ? parts.pop() : part !== "." && parts.push(part);
  const path = parts.join("/");
  return [path, `${path}.js`, `${path}/index.js`].find((name) => name in factories);
}
function load(name) {
  if (!(name in loaded)) {
    const module = (loaded[name] = { exports: {} });
    factories[name](module, module.exports, (spec) => packages[spec] ?? load(resolve(name, spec)));
  }
  return loaded[name].exports;
}
export const { fal } = load("src/index.js");
"""


def fal_client_module() -> str:
    package = NODE_MODULES / "@fal-ai" / "client"
    files = {"package.json": f"module.exports = {(package / 'package.json').read_text()};"}
    files |= {p.relative_to(package).as_posix(): p.read_text() for p in sorted((package / "src").rglob("*.js"))}
    factories = ",\n".join(
        f"{json.dumps(name)}: function (module, exports, require) {{\n{code}\n}}" for name, code in files.items()
    )
    return FAL_CLIENT_MODULE.replace("FACTORIES", factories)


@dataclass(repr=False)
class Live:
    """The stack, the user ``demo`` and its key, and (once a JS block asks) a browser logged in as demo."""

    stack: GatewayStack
    tmp: Path
    key: str = ""
    key_run: subprocess.CompletedProcess[str] | None = None
    playwright: Playwright | None = None
    browser: Browser | None = None
    context: BrowserContext | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.stack.port}"

    def prepare(self, block: Block) -> str:
        """The only changes made to a block: ``localhost:8000`` becomes the stack's address,
        ``KEY_ID:KEY_SECRET`` the key the README's own create_api_key block printed, and Python and JS
        blocks get a preamble defining ``png`` / ``pngBytes``, ``jpegBytes`` and ``img``."""
        code = block.code.replace("localhost:8000", self.host)
        if self.key:
            code = code.replace("KEY_ID:KEY_SECRET", self.key)
        return PREAMBLES.get(block.lang, "") + code

    def env(self) -> dict[str, str]:
        """The README's exports. realtime_site imports from the work folder as `make setup`'s pip install -e
        makes it (tests/client/test_installed.py checks that install)."""
        return {
            **os.environ,
            "REALTIME_BASE_URL": f"http://{self.host}",
            "REALTIME_KEY": self.key,
        }

    def workdir(self, name: str) -> Path:
        """A fresh stand-in for the checkout: examples/drawing.png and .venv, nothing written into ROOT."""
        work = self.tmp / name
        (work / "examples").mkdir(parents=True)
        (work / "examples" / DRAWING.name).write_bytes(DRAWING.read_bytes())
        (work / ".venv").symlink_to(ROOT / ".venv")
        return work

    def page(self) -> tuple[Page, list[ConsoleMessage], list[str]]:
        """A new drawing page, logged in as demo; its console messages and its errors."""
        if self.context is None:
            self.playwright = sync_playwright().start()
            self.browser = self.playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            self.context = self.browser.new_context()
            self.context.route("**/__readme__/**", serve_test_files)
            login = self.context.new_page()
            login.goto(f"{self.stack.http}/accounts/login/?next=/")
            login.fill("#id_username", "demo")
            login.fill("#id_password", PASSWORD)
            login.click("button[type=submit]")
            login.wait_for_url(f"{self.stack.http}/")
            login.close()
        page = self.context.new_page()
        logs: list[ConsoleMessage] = []
        errors: list[str] = []

        def console(message: ConsoleMessage) -> None:
            logs.append(message)
            if message.type in ("error", "warning"):
                errors.append(f"console.{message.type}: {message.text}")

        page.on("console", console)
        page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
        page.goto(f"{self.stack.http}/")
        return page, logs, errors

    def close(self) -> None:
        if self.browser is not None:
            self.browser.close()
        if self.playwright is not None:
            self.playwright.stop()
        self.stack.close()


def serve_test_files(route: Route) -> None:
    """The test page's extra files, from frontend/node_modules; they never reach the server."""
    path = route.request.url.split("/__readme__/", 1)[1]
    if path == "fal-client.js":
        return route.fulfill(body=fal_client_module(), content_type="text/javascript")
    file = (NODE_MODULES / path.removeprefix("node_modules/")).resolve()
    if not file.is_relative_to(NODE_MODULES.resolve()) or not file.is_file():
        return route.fulfill(status=404)
    return route.fulfill(body=file.read_bytes(), content_type="text/javascript")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    stack = start_stack(tmp_path_factory.mktemp("readme-var"), [["--apps", "local/stylize,local/echo"]])
    live = Live(stack, tmp_path_factory.mktemp("readme-work"))
    try:
        make = f"get_user_model().objects.create_user('demo', password={PASSWORD!r})"
        stack.manage("shell", "-c", f"from django.contrib.auth import get_user_model; {make}")
        block = find_block("sh: .venv/bin/python manage.py create_api_key demo")  # the key every other block uses
        live.key_run = subprocess.run(
            ["bash", "-e", "-c", live.prepare(block)], cwd=ROOT, env=stack.env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        live.key = live.key_run.stdout.strip()
        yield live
    finally:
        live.close()


def report(block: Block, done: subprocess.CompletedProcess[str]) -> str:
    return f"{block.where()} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"


def run_python(block: Block, live: Live) -> tuple[Path, subprocess.CompletedProcess[str]]:
    work = live.workdir(f"line-{block.line}")
    (work / "readme_block.py").write_text(live.prepare(block))
    done = subprocess.run(
        [str(PYTHON), "readme_block.py"], cwd=work, env=live.env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, report(block, done)
    return work, done


def assert_jpeg(path: Path, block: Block, size: tuple[int, int] | None = None) -> None:
    assert path.is_file(), f"{block.where()} wrote no {path.name}"
    with Image.open(path) as image:
        assert image.format == "JPEG", f"{block.where()}: {path.name} is {image.format}"
        assert size is None or image.size == size, f"{block.where()}: {path.name} is {image.size}"


def assert_width_and_timing(text: str, block: Block) -> None:
    match = WIDTH_AND_TIMING.fullmatch(text.strip())
    assert match and float(match[1]) > 0, f"{block.where()} printed {text!r}, not the width 512 and a timing"


def check_key_block(block: Block, live: Live) -> None:
    assert live.key_run is not None
    assert live.key_run.returncode == 0, report(block, live.key_run)
    assert KEY.fullmatch(live.key), f"{block.where()} printed {live.key!r}, not KEY_ID:KEY_SECRET"


def check_fal_client_python(block: Block, live: Live) -> None:
    work, _ = run_python(block, live)
    assert_jpeg(work / "out.jpg", block, (512, 512))


def check_prints_width(block: Block, live: Live) -> None:
    _, done = run_python(block, live)
    assert_width_and_timing(done.stdout, block)


def check_streams_a_preview_then_the_result(block: Block, live: Live) -> None:
    _, done = run_python(block, live)
    assert done.stdout.split() == ["preview", "128", "result", "512"], report(block, done)


def check_command_line(block: Block, live: Live) -> None:
    """The commands as written; the ``--watch`` one is stopped as Ctrl+C would, once it wrote its file."""
    work = live.workdir(f"line-{block.line}")
    commands = [shlex.split(line) for line in block.code.replace("\\\n", " ").splitlines() if "--out" in line]
    outs = {words[words.index("--out") + 1]: words for words in commands}
    watched = [work / out for out, words in outs.items() if "--watch" in words]
    process = subprocess.Popen(
        ["bash", "-e", "-c", live.prepare(block)], cwd=work, env=live.env(), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + WAIT
    while watched and not watched[0].exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if watched:
        with contextlib.suppress(ProcessLookupError):  # as Ctrl+C in its terminal
            os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    done = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert done.returncode == 0, report(block, done)
    for out, words in outs.items():
        size = re.fullmatch(r"(\d+)(?:x(\d+))?", words[words.index("--size") + 1] if "--size" in words else "512")
        assert_jpeg(work / out, block, (int(size[1]), int(size[2] or size[1])) if size else None)
    assert stderr.count("ms inference") >= len(outs), report(block, done)  # one timing line per result
    assert not watched or "watching" in stderr, report(block, done)


def check_runner_synopsis(block: Block, live: Live) -> None:
    """A synopsis, not a command: every option it names is one the runner takes."""
    done = subprocess.run(
        [str(PYTHON), "-m", "realtime_site.runner", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, report(block, done)
    for option in re.findall(r"--[\w-]+", block.code):
        assert option in done.stdout, f"{block.where()}: the runner has no {option}"


def run_js(block: Block, live: Live, arrived: Callable[[Page, list[ConsoleMessage]], Any]) -> list[str]:
    """The block as a module script in the drawing page, until ``arrived`` sees its result."""
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (as tests/browser)")
    page, logs, errors = live.page()
    page.add_script_tag(type="importmap", content=FAL_IMPORT_MAP)  # the test page's own: Chromium merges it
    page.add_script_tag(type="module", content=live.prepare(block))
    deadline = time.monotonic() + WAIT
    while not arrived(page, logs):
        assert not errors, f"{block.where()}: {errors}"
        assert time.monotonic() < deadline, f"{block.where()}: no result; console: {[m.text for m in logs]}"
        page.wait_for_timeout(100)
    assert not errors, f"{block.where()}: {errors}"
    texts = [m.text for m in logs]
    page.close()
    return texts


def check_js_logs_width(block: Block, live: Live) -> None:
    texts = run_js(block, live, lambda page, logs: any(WIDTH_AND_TIMING.fullmatch(m.text) for m in logs))
    assert_width_and_timing(next(text for text in texts if WIDTH_AND_TIMING.fullmatch(text)), block)


def check_js_logs_result(block: Block, live: Live) -> None:
    def width(message: ConsoleMessage) -> object:
        return message.args[0].evaluate("(r) => r?.images?.[0]?.width") if message.args else None

    run_js(block, live, lambda page, logs: any(width(m) == 512 for m in logs))


def check_js_shows_image(block: Block, live: Live) -> None:
    run_js(block, live, lambda page, logs: page.evaluate("document.getElementById('readme-img')?.naturalWidth") == 512)


# What each runnable block is checked for: its exit status and what it printed or wrote.
RUN: dict[str, Callable[[Block, Live], None]] = {
    "sh: .venv/bin/python manage.py create_api_key demo": check_key_block,  # run by the fixture first
    "python: import fal_client": check_fal_client_python,
    "sh: export REALTIME_BASE_URL=http://localhost:8000 REALTIME_KEY=KEY_ID:KEY_SECRET": check_command_line,
    'js: import { connect } from "/static/realtime.js";': check_js_logs_width,
    "python: from realtime_site.client import realtime": check_prints_width,
    "python: from realtime_site.client import stream": check_streams_a_preview_then_the_result,
    "python: import asyncio": check_prints_width,
    'js: import { fal } from "@fal-ai/client";': check_js_logs_result,
    'js: // In a page with an import map for "@msgpack/msgpack", as templates/draw.html has.': check_js_shows_image,
    "text: .venv/bin/python -m realtime_site.runner [--host H] [--port P] [--apps LIST] [--max-frame-bytes N]": (
        check_runner_synopsis
    ),
}

NOT_RUNNABLE: dict[str, str] = {
    "sh: make run": "make run and make test themselves: a server until Ctrl+C, and the whole suite this is part of",
    "text: Open http://localhost:8000/ and log in as 'demo' with password '…' (shown this once)": (
        "sample output of make run"
    ),
    "text: client ──ws──> gateway (daphne + Channels) ──ws──> runner (python -m realtime_site.runner)": (
        "the architecture diagram"
    ),
    "sh: make cluster": "needs PostgreSQL and Redis, and runs until Ctrl+C; tests/faults covers the cluster",
}


def test_every_block_is_run_or_listed() -> None:
    blocks = readme_blocks()
    fences = sum(1 for line in README.read_text().splitlines() if line.lstrip().startswith("```"))
    assert fences == 2 * len(blocks), "a README fence was not understood: check the ``` lines"
    keys = [block.key for block in blocks]
    assert len(set(keys)) == len(keys), f"two README blocks share a first line: {keys}"
    for block in blocks:
        if block.key not in RUN and block.key not in NOT_RUNNABLE:
            pytest.fail(
                f"{block.where()} is new or changed: add its key to RUN in {Path(__file__).name} with a check of "
                "what it produces, or to NOT_RUNNABLE with the reason it cannot run"
            )
    if stale := sorted((set(RUN) | set(NOT_RUNNABLE)) - set(keys)):
        pytest.fail(f"no README block has these keys any more: remove or update them: {stale}")


@pytest.mark.parametrize("key", list(RUN), ids=[key.replace("[", "(").replace("]", ")") for key in RUN])
def test_the_readme_block_runs_as_written(live: Live, key: str) -> None:
    RUN[key](find_block(key), live)
