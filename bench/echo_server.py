"""A bare ``websockets`` echo server, the baseline for the runner's echo round trip.

``python bench/echo_server.py [--host H] [--port P]`` prints ``echo server listening on ws://H:P``
once ready, sends every message back unchanged, and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from websockets.asyncio.server import ServerConnection, serve


async def _echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def _serve(host: str, port: int) -> None:
    async with serve(_echo, host, port, compression=None, max_size=None) as server:
        bound = server.sockets[0].getsockname()[1]
        print(f"echo server listening on ws://{host}:{bound}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    args = parser.parse_args()
    asyncio.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
