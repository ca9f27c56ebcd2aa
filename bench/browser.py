"""Benchmark of the drawing page in a real browser: stroke-to-pixels latency, and no pile-up behind a slow engine.

Run from anywhere: ``python bench/browser.py [--quick] [--keep-only | --no-keep]``. It starts a runner
(``local/stylize`` and ``test/slow``, an echo engine that takes 400 ms a frame) and the gateway under daphne
(throwaway database and user) as subprocesses of this interpreter, logs in with Debian's chromium
(playwright), draws with ``page.mouse`` (a continuous scribble, a move every ~16 ms, the pen lifted and put
down again every 2 s), prints a table, and writes every figure to ``bench/out/browser.json``.

The latency is the page's own figure (``window.realtimePage.stats``): when the result image was decoded
minus the timeStamp of the latest pointer event included in the frame it answers. A small init script
counts WebSocket binary sends and pointer events, and logs each frame made (id, change time, send time),
each result's arrival and each result shown, which ties every result to its frame and splits its time:
change to sent (throttle tail and JPEG), sent to arrived (gateway, runner queue and engine), arrived to
shown (decoding). To get the engine's own time it adds ``timings=1`` to the WebSocket URL (the runner
then sends a small x-fal-message after each result, which the page ignores). CPU is per process group
("browser" includes playwright's driver) and for the whole machine, since all of it shares the cores.

1. Stroke-to-pixels with ``local/stylize`` at 256 and 512 px: frames sent, results shown, p50 / p95 /
   max latency, results per second. Target: p50 <= 120 ms at 256.
2. ``test/slow`` at 256: while drawing, every result's lag must stay within engine time + throttle
   interval + an allowance (the runner keeps only the latest input, so a frame shown waited at most one
   throttle interval). The final frame has no successor to displace it: it may wait for a whole engine
   run first, so its bound (last stroke to its result shown) is 2 x engine + throttle + allowance.
3. A screenshot at 1280x900 mid-drawing: ``bench/out/page.png``.
4. Keeping does not slow the frame path: the same scribble with ``local/stylize`` at 256, in blocks without
   and with a Keep every second (the page's own Keep button, clicked from a timer in the page, so the
   mouse keeps drawing), alternated in the same run so drift cancels (without / with, with / without,
   ...: 3 pairs of 10 s blocks, ``--quick`` 2 pairs of 4 s; ``--keep-pairs``, ``--keep-seconds``). The
   stroke-to-pixels p50 and p95 of each, the ratio of the p50s, the keeps made and answered 201 (every
   one must be), and the creations stored afterwards (a query of the database). Target: p50 with keeps
   within 10 % of without (a figure, not a test). ``--keep-only`` runs only this (after the warm-up),
   ``--no-keep`` all but this.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psutil
from common import (
    LISTENING,
    ROOT,
    Child,
    child,
    clean_env,
    daphne_args,
    expect_line,
    free_port,
    log_problems,
    machine,
    manage,
    print_machine,
    print_servers,
    recorded,
    row,
    section,
    stats,
    verdict,
    wait_http_ok,
)
from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

DEFAULT_OUT = ROOT / "bench" / "out" / "browser.json"
DEFAULT_SCREENSHOT = ROOT / "bench" / "out" / "page.png"
START_TIMEOUT = 180.0
MANAGE_TIMEOUT = 300.0  # for each manage.py command (migrate, collectstatic, shell)
USER, PASSWORD = "bench", "bench-pass-123"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]  # fmt: skip
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}
STYLIZE, SLOW = "local/stylize", "test/slow"
SLOW_DELAY_MS = 400.0
THROTTLE_MS = 128.0  # the page's throttle (frontend/draw/main.js)
P50_TARGET_MS = 120.0  # stylize at 256
STROKE_SECONDS = 2.0  # the pen is lifted and put down again this often
WARMUP_SECONDS = 2.0
FINAL_TIMEOUT_MS = 10_000  # after the last stroke, how long the result of the last frame may take
IDLE_TIMEOUT_MS = 20_000
KEEP_EVERY_MS = 1000.0  # a Keep this often while drawing
KEEP_RATIO_TARGET = 1.10  # p50 with keeps / p50 without
KEEPS_DONE_TIMEOUT_MS = 30_000

FULL = {"seconds": 15.0, "keep_seconds": 10.0, "keep_pairs": 3}
QUICK = {"seconds": 4.0, "keep_seconds": 4.0, "keep_pairs": 2}

# Before any page script: a WebSocket that asks for the runner's timings (an x-fal-message the page ignores),
# counts binary sends, and logs each result's arrival (its request_id, the last key of the msgpack map);
# pointer events are counted and the latest drawing event remembered.
INIT_SCRIPT = """(() => {
  const bench = { sends: 0, sendBytes: 0, moves: 0, lastChange: 0, frames: [], shown: [], arrived: [] };
  window.__bench = bench;
  const KEY = [0xaa, ...Array.from("request_id", (c) => c.charCodeAt(0))];
  const requestId = (bytes) => {
    search: for (let i = bytes.length - KEY.length - 1; i >= 0; i--) {
      for (let j = 0; j < KEY.length; j++) if (bytes[i + j] !== KEY[j]) continue search;
      const v = new DataView(bytes.buffer, bytes.byteOffset + i + KEY.length), t = v.getUint8(0);
      if (t < 0x80) return t;
      return t === 0xcc ? v.getUint8(1) : t === 0xcd ? v.getUint16(1) : t === 0xce ? v.getUint32(1) : null;
    }
    return null;
  };
  const onMessage = ({ data }) => {
    const at = performance.now();
    if (typeof data !== "string") {
      bench.arrived.push({ id: requestId(new Uint8Array(data)), at, bytes: data.byteLength });
    } else if (data.includes('"timings"') && bench.arrived.length) {
      bench.arrived.at(-1).inference = JSON.parse(data).timing * 1000;
    }
  };
  window.WebSocket = class extends WebSocket {
    constructor(url, protocols) {
      const u = new URL(url);
      u.searchParams.set("timings", "1");
      super(u, protocols);
      this.addEventListener("message", onMessage);
    }
    send(data) {
      if (typeof data !== "string") {
        bench.sends += 1;
        bench.sendBytes += data.byteLength ?? data.size ?? 0;
      }
      return super.send(data);
    }
  };
  for (const type of ["pointerdown", "pointermove"]) {
    addEventListener(type, (e) => {
      if (!e.buttons) return;  // hovering draws nothing
      bench.moves += 1;
      bench.lastChange = e.timeStamp;
    }, true);
  }
})()"""

# Once the page runs: keep every latency, log frames made (inFlight.set) and results shown (data-request-id).
HOOKS = """() => {
  const page = window.realtimePage, bench = window.__bench;
  page.stats.size = 1e9;
  page.inFlight.set = function (id, frame) {
    bench.frames.push({ id, changeAt: frame.changeAt, sentAt: frame.sentAt });
    return Map.prototype.set.call(this, id, frame);
  };
  const img = document.querySelector("[data-testid=result-image]");
  new MutationObserver((records) => {
    const at = performance.now();  // ids batched into one callback: each record's successor holds it as oldValue
    const ids = [...records.slice(1).map((r) => r.oldValue), img.dataset.requestId];
    for (const id of ids) bench.shown.push({ id: Number(id), at });
  }).observe(img, { attributes: true, attributeFilter: ["data-request-id"], attributeOldValue: true });
}"""

RESET = """() => {
  const bench = window.__bench;
  window.realtimePage.stats.latencies = [];
  Object.assign(bench, { sends: 0, sendBytes: 0, moves: 0, frames: [], shown: [], arrived: [] });
}"""

COLLECT = """() => {
  const b = window.__bench;
  return { ...b, latencies: [...window.realtimePage.stats.latencies], now: performance.now() };
}"""

# The newest frame includes the last drawing event, and its result is shown.
FINAL_SHOWN = """() => {
  const b = window.__bench, f = b.frames.at(-1);
  return !!f && f.changeAt >= b.lastChange && b.shown.some((s) => s.id >= f.id);
}"""

IDLE = "() => window.realtimePage.settled()"

# Keeps: every fetch to /gallery/keep is logged (start, status, time, the creation's id), whoever makes it.
KEEP_HOOKS = """() => {
  const bench = window.__bench;
  if (bench.keepHooked) return;
  Object.assign(bench, { keepHooked: true, keeps: [], keepClicks: 0, keepSkipped: 0, keepTimer: null });
  const plain = window.fetch;
  window.fetch = function (input, init) {
    const promise = plain.call(this, input, init);
    const url = input instanceof Request ? input.url : String(input);
    if (new URL(url, location.href).pathname !== "/gallery/keep") return promise;
    const entry = { at: performance.now(), status: null, ms: null, id: null, done: false };
    bench.keeps.push(entry);
    promise.then(async (response) => {
      entry.status = response.status;
      entry.ms = performance.now() - entry.at;
      const body = await response.clone().json().catch(() => ({}));
      Object.assign(entry, { id: body.id ?? null, detail: body.detail ?? null, done: true });
    }, (error) => Object.assign(entry, { status: 0, ms: performance.now() - entry.at, detail: String(error),
                                         done: true }));
    return promise;
  };
}"""

KEEP_RESET = """() => Object.assign(window.__bench, { keeps: [], keepClicks: 0, keepSkipped: 0 })"""

# A click on the page's Keep button every ``ms`` (a disabled button: a keep still in flight, or no result yet).
KEEP_START = """(ms) => {
  const bench = window.__bench, button = document.querySelector("[data-testid=keep-button]");
  bench.keepTimer = setInterval(() => {
    bench.keepClicks += 1;
    if (button.disabled) bench.keepSkipped += 1;
    else button.click();
  }, ms);
}"""

KEEP_STOP = "() => { clearInterval(window.__bench.keepTimer); window.__bench.keepTimer = null; }"
KEEPS_DONE = "() => window.__bench.keeps.every((k) => k.done)"
KEEP_COLLECT = """() => {
  const b = window.__bench;
  return { clicks: b.keepClicks, skipped: b.keepSkipped, keeps: b.keeps.map((k) => ({ ...k })) };
}"""


# -- subprocesses ------------------------------------------------------------------------------


def provision(env: dict[str, str]) -> None:
    """Migrate, collect the static files (whitenoise indexes them when daphne starts), create the user."""
    manage(env, "migrate", "--noinput", timeout=MANAGE_TIMEOUT)
    manage(env, "collectstatic", "--noinput", "-v", "0", timeout=MANAGE_TIMEOUT)
    create = (
        "from django.contrib.auth import get_user_model; "
        f"get_user_model().objects.create_user({USER!r}, password={PASSWORD!r})"
    )
    manage(env, "shell", "-c", create, timeout=MANAGE_TIMEOUT)


def runner_apps(stylize_threads: int | None) -> str:
    """The runner's ``--apps``: stylize (onnxruntime threads: its default, all cores, unless given) and slow."""
    stylize = f"{STYLIZE}=stylize?threads={stylize_threads}" if stylize_threads else STYLIZE
    return f"{stylize},{SLOW}=echo?delay_ms={SLOW_DELAY_MS:g}"


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each server (with its children), of the browser (every other child), of us,
    of the whole machine (every core, steal included) and stolen by the hypervisor."""
    owner: dict[int, str] = {}
    for name, pid in pids.items():
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            owner.update({p.pid: name for p in [proc, *proc.children(recursive=True)]})
    me, times = psutil.Process(), psutil.cpu_times()
    totals = {**dict.fromkeys(pids, 0.0), "browser": 0.0, "bench": sum(me.cpu_times()[:2])}
    busy = ("user", "nice", "system", "irq", "softirq", "steal")  # guest time is inside user already
    totals["machine"] = sum(getattr(times, field, 0.0) for field in busy)
    totals["steal"] = getattr(times, "steal", 0.0)
    for proc in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            totals[owner.get(proc.pid, "browser")] += sum(proc.cpu_times()[:2])
    return totals


# -- the page ----------------------------------------------------------------------------------


def log_in(browser: Browser, http: str, console: list[str]) -> Page:
    page = browser.new_page(viewport=VIEWPORT)
    page.on("console", lambda m: m.type == "error" and console.append(m.text))
    page.on("pageerror", lambda exc: console.append(f"pageerror: {exc}"))
    page.add_init_script(INIT_SCRIPT)
    page.goto(f"{http}/")
    page.fill("#id_username", USER)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.get_by_test_id("status")).to_have_text("ready", timeout=30_000)  # it connects at the first stroke
    page.evaluate(HOOKS)
    return page


def canvas_box(page: Page) -> dict[str, float]:
    box = page.get_by_test_id("draw-canvas").bounding_box()
    if box is None:
        raise RuntimeError("the drawing canvas is not visible")
    return dict(box)


def scribble_point(box: dict[str, float], t: float) -> tuple[float, float]:
    """Where the pen is at ``t`` seconds: a wandering loop over the canvas, about one canvas width a second."""
    fx = 0.5 + 0.28 * math.sin(2 * math.pi * 0.21 * t) + 0.12 * math.sin(2 * math.pi * 1.3 * t)
    fy = 0.5 + 0.28 * math.sin(2 * math.pi * 0.17 * t + 1.0) + 0.12 * math.cos(2 * math.pi * 1.1 * t)
    return box["x"] + fx * box["width"], box["y"] + fy * box["height"]


def scribble(page: Page, seconds: float, interval_s: float, *, release: bool = True) -> dict[str, Any]:
    """Draw for ``seconds``: a mouse move every ``interval_s``, the pen lifted every STROKE_SECONDS."""
    box = canvas_box(page)
    start = next_at = time.perf_counter()
    page.mouse.move(*scribble_point(box, 0.0))
    page.mouse.down()
    moves, strokes = 0, 1
    while (t := time.perf_counter() - start) < seconds:
        if t >= strokes * STROKE_SECONDS:
            page.mouse.up()
            page.mouse.down()
            strokes += 1
        page.mouse.move(*scribble_point(box, t))
        moves += 1
        next_at = max(next_at + interval_s, time.perf_counter())  # late: go on from now, no burst
        time.sleep(max(0.0, next_at - time.perf_counter()))
    drawn = time.perf_counter() - start
    if release:
        page.mouse.up()
    return {"seconds": drawn, "mouse_moves": moves, "moves_per_s": moves / drawn, "strokes": strokes}


def choose(page: Page, app: str, size: int) -> None:
    """Select the app (a new connection when it changes) and the size, and start from a blank canvas
    (a change of the drawing: the page connects at the first one)."""
    select = page.get_by_test_id("app-select")
    if select.input_value() != app:
        select.select_option(app)
    page.select_option("#size", str(size))
    page.click("#clear")
    expect(page.get_by_test_id("status")).to_have_text("connected", timeout=30_000)


def wait_idle(page: Page) -> None:
    """Until the trailing frame has left and every frame sent is answered."""
    page.wait_for_timeout(2 * THROTTLE_MS + 100)
    page.wait_for_function(IDLE, timeout=IDLE_TIMEOUT_MS, polling=50)


def wait_final(page: Page) -> bool:
    """Until the result of the frame with the last drawing event is shown; False when it never is."""
    try:
        page.wait_for_function(FINAL_SHOWN, timeout=FINAL_TIMEOUT_MS, polling="raf")
    except PlaywrightTimeout:
        return False
    return True


def run_phase(
    page: Page,
    app: str,
    size: int,
    seconds: float,
    args: argparse.Namespace,
    pids: dict[str, int],
    *,
    keep_every_ms: float | None = None,
) -> dict[str, Any]:
    """Draw for ``seconds`` from a blank canvas; the page's figures, tied frame to result. With
    ``keep_every_ms``, the page's Keep button is clicked that often while drawing."""
    choose(page, app, size)
    wait_idle(page)
    page.evaluate(RESET)
    cpu_before = cpu_snapshot(pids)
    if keep_every_ms:
        page.evaluate(KEEP_START, keep_every_ms)
    try:
        drawn = scribble(page, seconds, args.interval_ms / 1000)
    finally:
        if keep_every_ms:
            page.evaluate(KEEP_STOP)
    cpu = {k: (v - cpu_before[k]) / drawn["seconds"] * 100 for k, v in cpu_snapshot(pids).items()}
    final_shown = wait_final(page)
    data = page.evaluate(COLLECT)
    return {"app": app, "size": size, **drawn, **figures(data, drawn["seconds"], final_shown), "cpu_percent": cpu}


def figures(data: dict[str, Any], seconds: float, final_shown: bool) -> dict[str, Any]:
    """Counts, latencies, and each result's lag from its frame's change (the page's own definition)."""
    frames = {f["id"]: f for f in data["frames"]}
    shown = [s for s in data["shown"] if s["id"] in frames]
    lags = [s["at"] - frames[s["id"]]["changeAt"] for s in shown]
    last = data["frames"][-1] if data["frames"] else None
    final = next((s["at"] for s in shown if last and s["id"] == last["id"]), None)
    steady = lags[:-1] if final is not None else lags  # the final frame's result is shown last
    page_lat = data["latencies"]
    arrived = {a["id"]: a for a in data["arrived"]}
    split = [(frames[s["id"]], arrived.get(s["id"], {}), s["at"]) for s in shown]
    return {
        "pointer_events": data["moves"],
        "frames_made": len(frames),
        "frames_sent": data["sends"],
        "results_shown": len(shown),
        "dropped": len(frames) - len(shown),
        "frames_per_s": data["sends"] / seconds,
        "results_per_s": len(shown) / seconds,
        "bytes_per_frame": data["sendBytes"] / data["sends"] if data["sends"] else math.nan,
        "latency_ms": stats(page_lat),
        "results_arrived": len(data["arrived"]),
        # where the time goes: change -> frame sent (throttle tail + JPEG), -> result arrived, -> shown (decode)
        "change_to_sent_ms": stats([f["sentAt"] - f["changeAt"] for f, _, _ in split]),
        "sent_to_arrived_ms": stats([a["at"] - f["sentAt"] for f, a, _ in split if a]),
        "arrived_to_shown_ms": stats([at - a["at"] for _, a, at in split if a]),
        "engine_ms": stats([a["inference"] for _, a, _ in split if "inference" in a]),
        "lag_ms_while_drawing": stats(steady),
        "final_frame_has_last_change": bool(last and last["changeAt"] >= data["lastChange"]),
        "final_shown": final_shown,
        "final_ms": final - data["lastChange"] if final is not None else math.nan,
        "page_vs_log_max_diff_ms": max(
            (abs(a - b) for a, b in zip(sorted(page_lat), sorted(lags), strict=False)), default=0.0
        ),
        "page_vs_log_counts": [len(page_lat), len(lags)],
        "latencies_ms": page_lat,
        "lags_ms": lags,
        "lags_while_drawing_ms": steady,
    }


def take_screenshot(page: Page, path: Path, interval_s: float) -> None:
    """The page at 1280x900 while the pen is still down and results are coming in."""
    page.click("#clear")
    wait_idle(page)
    scribble(page, 1.5, interval_s, release=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    page.mouse.up()
    wait_idle(page)


def keep_block(page: Page, seconds: float, args: argparse.Namespace, pids: dict[str, int], keeps: bool) -> dict:
    """One block of the keep comparison: stylize at 256 for ``seconds``, with or without a Keep every
    second; once drawn, every keep made is waited for (its answer is in the figures)."""
    page.evaluate(KEEP_RESET)
    r = run_phase(page, STYLIZE, 256, seconds, args, pids, keep_every_ms=KEEP_EVERY_MS if keeps else None)
    with contextlib.suppress(PlaywrightTimeout):  # counted below as keeps without an answer
        page.wait_for_function(KEEPS_DONE, timeout=KEEPS_DONE_TIMEOUT_MS, polling=100)
    log = page.evaluate(KEEP_COLLECT)
    made = log["keeps"]
    r.update(
        with_keeps=keeps,
        keep_clicks=log["clicks"],
        keep_clicks_skipped=log["skipped"],
        keeps_made=len(made),
        keeps_201=sum(k["status"] == 201 for k in made),
        keeps_unanswered=sum(not k["done"] for k in made),
        keep_ms=stats(keep_times := [k["ms"] for k in made if k["ms"] is not None]),
        keep_times_ms=keep_times,
        keep_failures=[{"status": k["status"], "detail": k.get("detail")} for k in made if k["status"] != 201][:10],
        keep_ids=[k["id"] for k in made if k["status"] == 201],
    )
    return r


def stored_creations(env: dict[str, str]) -> dict[str, Any]:
    """What the bench user's gallery holds now, asked of the database (``manage.py shell``)."""
    query = (
        "import json; from realtime_site.gallery.models import Creation; "
        f"mine = Creation.objects.filter(owner__username={USER!r}); "
        "print(json.dumps({'count': mine.count(), 'ids': list(mine.values_list('public_id', flat=True)), "
        "'with_sketch': mine.exclude(sketch='').count()}))"
    )
    return json.loads(manage(env, "shell", "-c", query, timeout=MANAGE_TIMEOUT).strip().splitlines()[-1])


def bench_keeps(page: Page, args: argparse.Namespace, pids: dict[str, int], *, warm: bool) -> dict[str, Any]:
    """Blocks without and with a Keep every second, alternated; the pooled figures of each. ``warm``:
    draw for WARMUP_SECONDS first (after the other phases: a fresh connection to stylize)."""
    page.evaluate(KEEP_HOOKS)
    if warm:
        choose(page, STYLIZE, 256)
        scribble(page, WARMUP_SECONDS, args.interval_ms / 1000)
    blocks: list[dict[str, Any]] = []
    for pair in range(args.keep_pairs):
        for keeps in (False, True) if pair % 2 == 0 else (True, False):
            blocks.append(keep_block(page, args.keep_seconds, args, pids, keeps))
    pooled: dict[str, Any] = {}
    for name, keeps in (("without", False), ("with", True)):
        mine = [b for b in blocks if b["with_keeps"] == keeps]
        pooled[name] = {
            "blocks": len(mine),
            "seconds": sum(b["seconds"] for b in mine),
            "frames_sent": sum(b["frames_sent"] for b in mine),
            "results_shown": sum(b["results_shown"] for b in mine),
            "latency_ms": stats([v for b in mine for v in b["latencies_ms"]]),
            "block_p50_ms": [b["latency_ms"]["p50"] for b in mine],
            "cpu_percent": {k: sum(b["cpu_percent"][k] for b in mine) / len(mine) for k in mine[0]["cpu_percent"]},
        }
    with_ = [b for b in blocks if b["with_keeps"]]
    keeps_made = sum(b["keeps_made"] for b in with_)
    summary = {
        "order": ["with" if b["with_keeps"] else "without" for b in blocks],
        "seconds_per_block": args.keep_seconds,
        "keep_every_ms": KEEP_EVERY_MS,
        **pooled,
        "p50_ratio": pooled["with"]["latency_ms"]["p50"] / pooled["without"]["latency_ms"]["p50"],
        "ratio_target": KEEP_RATIO_TARGET,
        "keep_clicks": sum(b["keep_clicks"] for b in with_),
        "keep_clicks_skipped": sum(b["keep_clicks_skipped"] for b in with_),
        "keeps_made": keeps_made,
        "keeps_201": sum(b["keeps_201"] for b in with_),
        "keeps_unanswered": sum(b["keeps_unanswered"] for b in with_),
        "keeps_in_blocks_without": sum(b["keeps_made"] for b in blocks if not b["with_keeps"]),
        "keep_ms": stats([v for b in with_ for v in b["keep_times_ms"]]),
        "keep_failures": [f for b in with_ for f in b["keep_failures"]][:10],
        "keep_ids": [i for b in with_ for i in b["keep_ids"]],
        "blocks": blocks,
    }
    return summary


# -- report ------------------------------------------------------------------------------------


def print_phase(r: dict[str, Any]) -> None:
    row(
        "drawing",
        f"{r['seconds']:.1f} s, {r['mouse_moves']} moves",
        f"{r['moves_per_s']:.0f}/s, {r['strokes']} strokes",
    )
    row("pointer events seen by the page", str(r["pointer_events"]))
    row("frames sent / results shown", f"{r['frames_sent']} / {r['results_shown']}", f"dropped {r['dropped']}")
    row("frames / results per second", f"{r['frames_per_s']:.1f} / {r['results_per_s']:.1f}")
    row("frame size (JPEG + msgpack)", f"{r['bytes_per_frame'] / 1000:.1f} KB")
    lat = r["latency_ms"]
    row("stroke-to-pixels p50 / p95 / max", f"{lat['p50']:.0f} / {lat['p95']:.0f} / {lat['max']:.0f} ms")
    parts = " / ".join(f"{r[k]['p50']:.0f}" for k in ("change_to_sent_ms", "sent_to_arrived_ms", "arrived_to_shown_ms"))
    row("p50: change>sent / >arrived / >shown", f"{parts} ms", "throttle tail + JPEG; round trip; decode")
    row("engine time p50 / p95 (runner)", f"{r['engine_ms']['p50']:.0f} / {r['engine_ms']['p95']:.0f} ms")
    final = f"{r['final_ms']:.0f} ms" if r["final_shown"] else "never shown"
    row("last stroke -> its result shown", final, "" if r["final_frame_has_last_change"] else "MISSED: not in a frame")
    cpu = r["cpu_percent"]
    row(
        "CPU %: runner/daphne/browser/bench",
        " / ".join(f"{cpu[k]:.0f}" for k in ("runner", "daphne", "browser", "bench")),
    )
    others = cpu["machine"] - sum(cpu[k] for k in ("runner", "daphne", "browser", "bench"))
    note = f"of {(os.cpu_count() or 1) * 100}; stolen {cpu['steal']:.0f}"
    row("CPU %: machine / not this bench", f"{cpu['machine']:.0f} / {others:.0f}", note)
    if r["page_vs_log_max_diff_ms"] > 5 or len(set(r["page_vs_log_counts"])) > 1:
        row("page stats vs frame log", f"{r['page_vs_log_counts']}", f"differ by {r['page_vs_log_max_diff_ms']:.1f} ms")


def judge_stylize(r: dict[str, Any]) -> None:
    if r["size"] == 256:
        p50 = r["latency_ms"]["p50"]
        r["target_p50_ms"] = P50_TARGET_MS
        r["passed"] = bool(p50 <= P50_TARGET_MS)
        row("target p50 at 256", f"<= {P50_TARGET_MS:g} ms", verdict(r["passed"]))


def judge_slow(r: dict[str, Any], allowance: float) -> None:
    bound = SLOW_DELAY_MS + THROTTLE_MS + allowance
    final_bound = 2 * SLOW_DELAY_MS + THROTTLE_MS + allowance
    steady = r["lag_ms_while_drawing"]
    over = sum(lag > bound for lag in r["lags_while_drawing_ms"])
    r.update(bound_ms=bound, final_bound_ms=final_bound, over_bound=over, allowance_ms=allowance)
    steady_ok = steady["n"] > 0 and over == 0
    final_ok = r["final_shown"] and r["final_frame_has_last_change"] and r["final_ms"] <= final_bound
    r["passed"] = bool(steady_ok and final_ok)
    note = f"bound {bound:g} = {SLOW_DELAY_MS:g} + {THROTTLE_MS:g} + {allowance:g}"
    row("lag while drawing p95 / max", f"{steady['p95']:.0f} / {steady['max']:.0f} ms", f"{note}: {verdict(steady_ok)}")
    row("results over the bound", f"{over} of {steady['n']}")
    row("last stroke -> its result, bound", f"{final_bound:g} ms", f"2 x {SLOW_DELAY_MS:g} + ...: {verdict(final_ok)}")


def print_keeps(k: dict[str, Any]) -> None:
    order = " / ".join(k["order"])
    row("blocks", f"{len(k['order'])} x {k['seconds_per_block']:g} s", order)
    for name in ("without", "with"):
        c = k[name]
        lat = c["latency_ms"]
        blocks = ", ".join(f"{v:.0f}" for v in c["block_p50_ms"])
        row(
            f"{name} keeps: frames sent / results",
            f"{c['frames_sent']} / {c['results_shown']}",
            f"{c['seconds']:.0f} s",
        )
        row(
            f"{name} keeps: stroke-to-pixels p50/p95",
            f"{lat['p50']:.0f} / {lat['p95']:.0f} ms",
            f"blocks' p50 {blocks}",
        )
    cpu = {name: k[name]["cpu_percent"] for name in ("without", "with")}
    row(
        "CPU % without / with: daphne",
        f"{cpu['without']['daphne']:.0f} / {cpu['with']['daphne']:.0f}",
        f"browser {cpu['without']['browser']:.0f} / {cpu['with']['browser']:.0f}, "
        f"machine {cpu['without']['machine']:.0f} / {cpu['with']['machine']:.0f}",
    )
    ours = ("runner", "daphne", "browser", "bench")
    others = {name: c["machine"] - sum(c[k] for k in ours) for name, c in cpu.items()}
    row("CPU % without / with: not this bench", f"{others['without']:.0f} / {others['with']:.0f}",
        f"of {(os.cpu_count() or 1) * 100}")  # fmt: skip
    row("p50 ratio with / without", f"{k['p50_ratio']:.3f}")
    skipped = f"{k['keep_clicks']} clicks, {k['keep_clicks_skipped']} on a disabled button"
    row("keeps made / answered 201", f"{k['keeps_made']} / {k['keeps_201']}", f"{skipped}; {verdict(k['keeps_ok'])}")
    for failure in k["keep_failures"][:3]:
        print(f"    {failure}")
    row("keep round trip p50 / p95 / max", f"{k['keep_ms']['p50']:.0f} / {k['keep_ms']['p95']:.0f} / "
        f"{k['keep_ms']['max']:.0f} ms")  # fmt: skip
    stored = k["stored"]
    row("creations stored (database)", str(stored["count"]),
        f"{stored['with_sketch']} with a sketch; the ids answered: {verdict(k['stored_ok'])}")  # fmt: skip
    row(
        f"target p50 with <= {k['ratio_target']:.2f} x without",
        f"{k['with']['latency_ms']['p50']:.0f} vs {k['without']['latency_ms']['p50']:.0f} ms",
        verdict(k["passed"]),
    )


def judge_keeps(k: dict[str, Any]) -> None:
    k["keeps_ok"] = bool(
        k["keeps_made"] > 0
        and k["keeps_201"] == k["keeps_made"] == k["keep_clicks"]
        and not k["keeps_unanswered"]
        and not k["keeps_in_blocks_without"]
    )
    k["stored_ok"] = sorted(k["stored"]["ids"]) == sorted(k["keep_ids"])
    k["passed"] = bool(k["p50_ratio"] <= k["ratio_target"])


def print_console(console: list[str]) -> None:
    row("page console errors", str(len(console)))
    for line in console[:5]:
        print(f"    {line[:200]}")


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short phases for a smoke run")
    parser.add_argument("--seconds", type=float, help=f"seconds of drawing per phase ({FULL['seconds']:g})")
    parser.add_argument("--interval-ms", type=float, default=16.0, help="ms between mouse moves (16)")
    parser.add_argument("--allowance-ms", type=float, default=100.0, help="transport allowance of the bounds (100)")
    parser.add_argument(
        "--stylize-threads", type=int, help="onnxruntime threads of local/stylize (default: the runner's, all cores)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file of all figures")
    parser.add_argument("--screenshot", type=Path, default=DEFAULT_SCREENSHOT, help="PNG of the page mid-drawing")
    parser.add_argument("--no-screenshot", action="store_true")
    parser.add_argument("--keep-only", action="store_true", help="only the keep comparison (after the warm-up)")
    parser.add_argument("--no-keep", action="store_true", help="all but the keep comparison")
    parser.add_argument(
        "--keep-seconds", type=float, help=f"seconds of drawing per keep block ({FULL['keep_seconds']:g})"
    )
    parser.add_argument(
        "--keep-pairs",
        type=int,
        help=f"pairs of keep blocks: without / with, with / without, ... ({FULL['keep_pairs']})",
    )
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = (QUICK if args.quick else FULL)["seconds"]
    if not (args.seconds > 0 and args.interval_ms > 0 and args.allowance_ms >= 0):
        parser.error("--seconds and --interval-ms must be positive, --allowance-ms not negative")
    if args.stylize_threads is not None and args.stylize_threads < 1:
        parser.error("--stylize-threads must be positive")
    preset = QUICK if args.quick else FULL
    if args.keep_seconds is None:
        args.keep_seconds = preset["keep_seconds"]
    if args.keep_pairs is None:
        args.keep_pairs = preset["keep_pairs"]
    if not (args.keep_seconds > 0 and args.keep_pairs >= 1):
        parser.error("--keep-seconds and --keep-pairs must be positive")
    if args.keep_only and args.no_keep:
        parser.error("--keep-only and --no-keep exclude each other")
    return args


def bench_page(
    browser: Browser, http: str, args: argparse.Namespace, pids: dict[str, int], results: dict, env: dict[str, str]
) -> None:
    """Log in, warm up, then the phases; figures into ``results``."""
    console: list[str] = results.setdefault("console_errors", [])
    page = log_in(browser, http, console)
    choose(page, STYLIZE, 256)
    scribble(page, WARMUP_SECONDS, args.interval_ms / 1000)
    if not args.keep_only:
        bench_phases(page, args, pids, results)
    if not args.no_keep:
        section(f"Keeping does not slow the frame path: {STYLIZE} at 256, a Keep every {KEEP_EVERY_MS / 1000:g} s")
        results["keep"] = k = bench_keeps(page, args, pids, warm=not args.keep_only)
        k["stored"] = stored_creations(env)
        judge_keeps(k)
        print_keeps(k)
    page.close()


def bench_phases(page: Page, args: argparse.Namespace, pids: dict[str, int], results: dict) -> None:
    """Stroke-to-pixels at 256 and 512, the screenshot, no pile-up behind test/slow."""
    phases: dict[str, Any] = results.setdefault("phases", {})
    for size in (256, 512):
        section(f"Stroke-to-pixels: {STYLIZE} at {size}")
        phases[f"stylize_{size}"] = r = run_phase(page, STYLIZE, size, args.seconds, args, pids)
        print_phase(r)
        judge_stylize(r)
    if not args.no_screenshot:
        take_screenshot(page, args.screenshot, args.interval_ms / 1000)
        results["screenshot"] = str(args.screenshot)
        print(f"\nScreenshot mid-drawing: {args.screenshot}", flush=True)
    section(f"No pile-up: {SLOW} ({SLOW_DELAY_MS:g} ms a frame) at 256")
    phases["slow_256"] = r = run_phase(page, SLOW, 256, args.seconds, args, pids)
    print_phase(r)
    judge_slow(r, args.allowance_ms)


def run(args: argparse.Namespace, results: dict[str, Any]) -> None:
    servers: dict[str, Any] = results.setdefault("servers", {})
    runner: Child | None = None
    gateway: Child | None = None
    with tempfile.TemporaryDirectory(prefix="bench-browser-") as var_dir:
        try:
            apps = runner_apps(args.stylize_threads)
            runner_args = ["-m", "realtime_site.runner", "--host", "127.0.0.1", "--port", "0", "--apps", apps]
            with child("runner", runner_args, clean_env()) as runner:
                runner.port = int(expect_line(runner, LISTENING.pattern, START_TIMEOUT)[1])
                env = {
                    **clean_env(),
                    "RUNNER_URLS": f"ws://127.0.0.1:{runner.port}",
                    "REALTIME_VAR_DIR": var_dir,
                    "DJANGO_SETTINGS_MODULE": "realtime_site.settings",
                    "DJANGO_DEBUG": "0",
                }
                provision(env)
                port = free_port()  # daphne cannot report a port 0 it bound: pick one, then let it bind
                with child("daphne", daphne_args(port), env) as gateway:
                    gateway.port = port
                    http = f"http://127.0.0.1:{port}"
                    wait_http_ok(gateway, f"{http}/accounts/login/", START_TIMEOUT)
                    print(f"\nrunner on port {runner.port}, gateway (daphne) on port {port}", flush=True)
                    with sync_playwright() as p:
                        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                        try:
                            results["machine"]["chromium"] = browser.version
                            row("chromium", browser.version)
                            pids = {"runner": runner.proc.pid, "daphne": gateway.proc.pid}
                            bench_page(browser, http, args, pids, results, env)
                        finally:
                            browser.close()
        finally:
            for c in (runner, gateway):
                if c is not None:
                    servers[c.name] = {"exit_code": c.exit_code, "log": log_problems(c.log, log_bytes=False)}
            print_servers(servers, "Servers and page")
            print_console(results.get("console_errors", []))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    config.update(
        apps=runner_apps(args.stylize_threads),
        throttle_ms=THROTTLE_MS,
        stroke_seconds=STROKE_SECONDS,
        viewport=VIEWPORT,
    )
    versions = {"playwright": version("playwright"), "daphne": version("daphne")}
    results: dict[str, Any] = {"machine": machine(versions), "config": config}
    print_machine(results["machine"], ["playwright", "daphne"])
    with recorded(results, args.out, started):
        run(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
