"""``python -m realtime_site.client APP --prompt ... --image in.png --out out.jpg``

Sends a picture and a prompt to a realtime app and writes the generated image. ``--watch FILE``
keeps the connection open and sends the file again each time it changes, writing each result;
``--stream`` makes one HTTP call instead and writes each preview as it comes, then the result.
Progress and timings go to stderr. Exit codes:

    0 done   1 unexpected failure, or no result in time   2 bad arguments (a missing input file, an
    output name that is not .jpg/.png/.webp, no server or key)   3 server unreachable   4 refused (bad
    key, token or permission)   5 app or runner unavailable   6 the server refused the input (a file
    that is not an image, a size out of range: the server checks what the picture holds)
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

from realtime_site.client.connection import RealtimeConnection, RealtimeError, realtime
from realtime_site.client.http import stream
from realtime_site.client.images import result_image_bytes

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_REJECTED = range(7)
EXIT_BY_ERROR = {
    "CONNECTION_FAILED": EXIT_UNREACHABLE,
    "CONNECTION_CLOSED": EXIT_UNREACHABLE,
    "UNAUTHORIZED": EXIT_REFUSED,
    "FORBIDDEN": EXIT_REFUSED,
    "APP_UNAVAILABLE": EXIT_UNAVAILABLE,
    "RUNNER_UNAVAILABLE": EXIT_UNAVAILABLE,
}
FORMATS = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png", ".webp": "webp"}
WATCH_POLL = 0.2  # seconds between checks of the watched file


def _size(text: str) -> dict[str, int] | str:
    match = re.fullmatch(r"(\d+)(?:x(\d+))?", text)
    if match:
        width = int(match[1])
        return {"width": width, "height": int(match[2] or width)}
    return text  # a named size: square, square_hd, landscape_4_3, ...


def _prog(script: str, module: str) -> str:
    """The name the command was run by: the console script, or ``python -m``."""
    return script if Path(sys.argv[0]).name == script else module


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_prog("realtime-client", "python -m realtime_site.client"),
        description="Send a picture and a prompt to a realtime app; write the generated image.",
        epilog=(
            "Exit codes: 0 done, 1 unexpected failure or no result in time, 2 bad arguments, 3 unreachable, "
            "4 refused, 5 unavailable, 6 input refused by the server (e.g. not an image, a size out of range)."
        ),
    )
    parser.add_argument("app", help="app id, e.g. local/stylize or fal-ai/fast-lcm-diffusion")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--image", type=Path, required=True, help="input picture (PNG, JPEG or WebP)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the result (.jpg, .png, .webp)")
    parser.add_argument("--watch", action="store_true", help="send --image again each time it changes")
    parser.add_argument(
        "--stream", action="store_true", help="over HTTP: write each preview to --out as it comes, then the result"
    )
    parser.add_argument("--seed", type=int)
    parser.add_argument("--strength", type=float)
    parser.add_argument("--steps", type=int, dest="num_inference_steps")
    parser.add_argument("--size", type=_size, default="512", help="WIDTHxHEIGHT, one number, or a fal size name")
    parser.add_argument("--negative-prompt")
    parser.add_argument("--base-url", default=None, help="the server (default: $REALTIME_BASE_URL)")
    parser.add_argument("--key", default=None, help="API key KEY_ID:KEY_SECRET (default: $REALTIME_KEY, $FAL_KEY)")
    parser.add_argument("--no-jwt", action="store_true", help="send the key itself instead of a short-lived token")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a result")
    return parser


def _frame(args: argparse.Namespace, image: bytes, request_id: int) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "prompt": args.prompt,
        "image_bytes": image,
        "image_size": args.size,
        "output_format": FORMATS[args.out.suffix.lower()],
        "request_id": request_id,
    }
    for name in ("seed", "strength", "num_inference_steps", "negative_prompt"):
        if getattr(args, name) is not None:
            frame[name] = getattr(args, name)
    return frame


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # readers never see half a file


def _round_trip(connection: RealtimeConnection, args: argparse.Namespace, request_id: int) -> None:
    image = args.image.read_bytes()
    started = time.perf_counter()
    connection.send(_frame(args, image, request_id))
    while True:
        result = connection.recv(timeout=args.timeout)
        if result is None:
            raise RealtimeError("CONNECTION_CLOSED", "the server closed the connection")
        if result.get("request_id") == request_id:
            break
    elapsed = time.perf_counter() - started
    data = result_image_bytes(result)
    _write(args.out, data)
    entry = result["images"][0]
    inference = result.get("timings", {}).get("inference", 0.0)
    _say(
        f"{args.image.name} ({len(image) / 1000:.1f} KB) -> {args.out} ({entry['width']}x{entry['height']} "
        f"{entry.get('content_type', '')}, {len(data) / 1000:.1f} KB): {elapsed * 1000:.0f} ms round trip, "
        f"{inference * 1000:.0f} ms inference, seed {result.get('seed')}"
    )


def _stream(args: argparse.Namespace) -> None:
    """One call over ``/stream``: each preview written to --out as it comes, then the result."""
    image = args.image.read_bytes()
    started = time.perf_counter()
    auth = {"base_url": args.base_url, "key": args.key, "use_jwt": not args.no_jwt}
    for event in stream(args.app, _frame(args, image, 1), timeout=args.timeout, **auth):
        data = result_image_bytes(event)
        _write(args.out, data)
        entry, elapsed = event["images"][0], (time.perf_counter() - started) * 1000
        size = f"{entry['width']}x{entry['height']}"
        if event.get("partial"):
            _say(f"step {event.get('step')}/{event.get('steps')}: {size} preview at {elapsed:.0f} ms")
        else:
            _say(f"-> {args.out} ({size}, {len(data) / 1000:.1f} KB) at {elapsed:.0f} ms, seed {event.get('seed')}")


def _watch(connection: RealtimeConnection, args: argparse.Namespace) -> None:
    stop = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    seen = args.image.stat().st_mtime_ns
    request_id = 1
    _round_trip(connection, args, request_id)
    _say(f"watching {args.image}; Ctrl+C stops")
    while not stop:
        time.sleep(WATCH_POLL)
        try:
            changed = args.image.stat().st_mtime_ns
        except FileNotFoundError:
            continue  # an editor replacing the file
        if changed != seen:
            seen = changed
            request_id += 1
            _round_trip(connection, args, request_id)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.image.is_file():
        parser.error(f"--image {args.image}: no such file")
    if args.out.suffix.lower() not in FORMATS:
        parser.error(f"--out {args.out}: use a .jpg, .png or .webp name")
    if args.stream and args.watch:
        parser.error("--stream and --watch: choose one (--watch keeps a realtime connection)")
    try:
        if args.stream:
            _stream(args)
            return EXIT_OK
        with realtime(args.app, base_url=args.base_url, key=args.key, use_jwt=not args.no_jwt) as connection:
            if args.watch:
                _watch(connection, args)
            else:
                _round_trip(connection, args, 1)
    except ValueError as exc:  # no server or key configured, a bad app id
        _say(f"error: {exc}")
        return EXIT_USAGE
    except RealtimeError as exc:
        _say(f"error: {exc.error}: {exc.reason}")
        return EXIT_BY_ERROR.get(exc.error, EXIT_REJECTED)
    except TimeoutError:
        _say(f"error: no result within {args.timeout:g} s")
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
