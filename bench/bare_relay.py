"""A bare ``websockets`` relay, the baseline for the gateway's CPU per frame (``bench/gateway.py``).

``python bench/bare_relay.py --upstream ws://127.0.0.1:PORT`` prints ``bare relay listening on
ws://127.0.0.1:P`` once ready. Each connection opens one to the upstream on the same path and query,
and every message goes on unchanged, both ways, compression off, until either side closes. No
admission, no counting: what any relay must do (frames in, masking out, frames back).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

MAX_SIZE = 16 * 1024 * 1024


async def _pipe(source: ServerConnection | ClientConnection, sink: ServerConnection | ClientConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for message in source:
            await sink.send(message)


async def _relay(client: ServerConnection, upstream: str) -> None:
    async with connect(upstream + client.request.path, compression=None, max_size=MAX_SIZE, ping_interval=None) as up:
        pipes = [asyncio.create_task(_pipe(client, up)), asyncio.create_task(_pipe(up, client))]
        _, pending = await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()


async def _serve(host: str, port: int, upstream: str) -> None:
    async def handler(client: ServerConnection) -> None:
        await _relay(client, upstream)

    async with serve(handler, host, port, compression=None, max_size=MAX_SIZE, ping_interval=None) as server:
        bound = server.sockets[0].getsockname()[1]
        print(f"bare relay listening on ws://{host}:{bound}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--upstream", required=True, help="ws://host:port of the runner")
    args = parser.parse_args()
    asyncio.run(_serve(args.host, args.port, args.upstream.rstrip("/")))


if __name__ == "__main__":
    main()
