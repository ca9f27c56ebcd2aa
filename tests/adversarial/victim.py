"""The victim: another user's session, open throughout the cases, on its own thread and event loop.

It sends a small JPEG frame about every 100 ms, waits for the answer, and keeps count: results that
answer its own request, and events (an error, a result meant for another request, no answer within
``ANSWER_TIMEOUT``, a close). After an event it reconnects, so one harmful case does not spoil the
ones after it.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import threading
import time
from dataclasses import dataclass

from websockets.exceptions import ConnectionClosed

from tests.adversarial.inputs import good_frame
from tests.runner.wsclient import open_ws, recv

__all__ = ["Victim", "VictimEvent"]

ANSWER_TIMEOUT = 10.0  # seconds; far beyond the echo app's few milliseconds


@dataclass(frozen=True)
class VictimEvent:
    at: float  # time.monotonic()
    what: str


class Victim:
    def __init__(self, url: str, headers: dict[str, str], *, interval: float = 0.1):
        self.url, self.headers, self.interval = url, headers, interval
        self.connections = 0
        self._result_times: list[float] = []  # monotonic, ascending
        self._events: list[VictimEvent] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._first = threading.Event()
        self._thread = threading.Thread(target=self._main, name="victim", daemon=True)

    # -- what the checks read ---------------------------------------------------------------------

    @property
    def results(self) -> int:
        return len(self._result_times)

    def results_since(self, since: float, until: float | None = None) -> int:
        with self._lock:
            times = self._result_times
            end = len(times) if until is None else bisect.bisect_right(times, until)
            return max(0, end - bisect.bisect_left(times, since))

    def events_since(self, since: float) -> list[VictimEvent]:
        with self._lock:
            return [e for e in self._events if e.at >= since]

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        self._thread.start()
        if not self._first.wait(timeout):
            raise RuntimeError(f"the victim got no result in {timeout:g} s: {self.events_since(0)}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(ANSWER_TIMEOUT + 5)

    def _main(self) -> None:
        with contextlib.suppress(Exception):  # never an unhandled thread exception
            asyncio.run(self._run())

    def _event(self, what: str) -> None:
        with self._lock:
            self._events.append(VictimEvent(time.monotonic(), what))

    async def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            try:
                async with await open_ws(self.url, additional_headers=self.headers) as ws:
                    self.connections += 1
                    while not self._stop.is_set():
                        n += 1
                        await ws.send(good_frame(request_id=f"victim-{n}", prompt="victim"))
                        self._answer(await recv(ws, ANSWER_TIMEOUT), f"victim-{n}")
                        await asyncio.sleep(self.interval)
            except ConnectionClosed as exc:
                if not self._stop.is_set():
                    code = exc.rcvd.code if exc.rcvd else 1006
                    self._event(f"closed by the server ({code} {exc.rcvd.reason if exc.rcvd else ''})")
            except TimeoutError:
                self._event(f"no answer within {ANSWER_TIMEOUT:g} s")
            except Exception as exc:
                self._event(f"connection failed: {exc!r}"[:300])
            if not self._stop.is_set():
                await asyncio.sleep(0.5)

    def _answer(self, message: dict, request_id: str) -> None:
        if message.get("type") == "x-fal-error":
            self._event(f"error {message.get('error')}: {message.get('reason')}")
        elif message.get("request_id") != request_id or not message.get("images"):
            self._event(f"a result that is not its own: request_id={message.get('request_id')!r}")
        else:
            with self._lock:
                self._result_times.append(time.monotonic())
            self._first.set()
