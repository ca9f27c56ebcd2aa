"""Upgrade to first result: a new connection's time from its opening handshake to its first answer.

Used by ``bench/gateway.py`` (section 5). One trial opens a WebSocket, sends one sketch frame, waits for
its answer and closes; the time is from before the TCP connect to the answer's arrival. The paths of
one round run in a rotating order (runner alone, then the gateway with a realtime token, an API key
and a logged-in session), so machine noise falls on all of them alike.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

import msgpack
from common import MAX_SIZE, SKETCH_SIDE, manage, pack, request, sketch_jpeg, stats
from websockets.asyncio.client import connect

__all__ = ["Route", "gateway_routes", "measure_first_results", "mint_token", "session_cookie"]

ALIAS = "echo"
PAUSE_SECONDS = 0.02  # between trials: the servers finish the previous connection's close first


@dataclass(frozen=True)
class Route:
    name: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()


def mint_token(base_url: str, authorization: str) -> str:
    """A realtime token for ``echo`` from ``POST /tokens/`` (as fal's clients get one), 10 minutes."""
    body = json.dumps({"allowed_apps": [ALIAS], "token_expiration": 600}).encode()
    headers = {"Authorization": authorization, "Content-Type": "application/json"}
    req = urllib.request.Request(f"{base_url}/tokens/", data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=30) as response:
        return str(json.loads(response.read()))


def session_cookie(env: dict[str, str], username: str) -> str:
    """The ``sessionid`` of a fresh login of ``username`` (in the gateway's own session store)."""
    code = (
        "from django.contrib.auth import get_user_model; from django.test import Client; "
        f"c = Client(); c.force_login(get_user_model().objects.get(username={username!r})); "
        "print(c.cookies['sessionid'].value)"
    )
    return manage(env, "shell", "-c", code).strip().splitlines()[-1]


def gateway_routes(
    prefix: str, base_ws: str, base_http: str, app_path: str, authorization: str, token: str, sessionid: str
) -> list[Route]:
    """The token, key and session paths through one gateway; names start with ``prefix``."""
    url = f"{base_ws}{app_path}"
    return [
        Route(f"{prefix} token", f"{url}?fal_jwt_token={token}"),
        Route(f"{prefix} key", url, (("Authorization", authorization),)),
        Route(f"{prefix} session", url, (("Cookie", f"sessionid={sessionid}"), ("Origin", base_http))),
    ]


async def _trial(route: Route, frame: bytes, image: bytes) -> float:
    """Milliseconds from before the connect to the first answer; raises when the answer is not the echo."""
    started = time.perf_counter()
    async with connect(
        route.url, additional_headers=list(route.headers), compression=None, max_size=MAX_SIZE, ping_interval=None
    ) as ws:
        await ws.send(frame)
        reply = await asyncio.wait_for(ws.recv(), 30)
        elapsed = (time.perf_counter() - started) * 1000
    if isinstance(reply, str):
        raise RuntimeError(f"{route.name}: {reply[:300]}")
    answer = msgpack.unpackb(reply)
    if answer.get("request_id") != 1 or answer["images"][0]["content"] != image:
        raise RuntimeError(f"{route.name}: the answer is not the echo of the frame sent")
    return elapsed


async def _rounds(routes: list[Route], rounds: int, warmup: int) -> dict[str, list[float]]:
    image = sketch_jpeg()
    frame = pack(request(image, SKETCH_SIDE, "sketch", request_id=1))
    times: dict[str, list[float]] = {r.name: [] for r in routes}
    for index in range(warmup + rounds):
        shift = index % len(routes)
        for route in routes[shift:] + routes[:shift]:
            ms = await _trial(route, frame, image)
            if index >= warmup:
                times[route.name].append(ms)
            await asyncio.sleep(PAUSE_SECONDS)
    return times


def measure_first_results(routes: list[Route], baseline: str, rounds: int, warmup: int) -> dict[str, Any]:
    """Each route's times (ms) and its p50 above ``baseline``'s, the route to the runner alone."""
    times = asyncio.run(_rounds(routes, rounds, warmup))
    summary = {name: stats(values) for name, values in times.items()}
    base = summary[baseline]["p50"]
    return {
        "rounds": rounds,
        "warmup": warmup,
        "baseline": baseline,
        "ms": summary,
        "added_p50_ms": {name: s["p50"] - base for name, s in summary.items() if name != baseline},
    }
