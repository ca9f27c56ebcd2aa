"""Latest-input-wins buffers and fair sharing of an engine between connections (docs/protocol.md s. 3).

Each connection gets a ``Lane``: a drop-oldest buffer of ``max_buffering`` places and at most one
input in inference. A ``FairScheduler`` owns an engine's ``concurrency`` slots and hands them to
lanes in round-robin order, so a flooding connection gets one turn per round like everyone else.
A lane's result is delivered after its slot is freed (a slow reader never holds the engine) and
before the lane's next input starts (results stay in input order).

No sockets and no threads here: ``execute`` and ``deliver`` are coroutines supplied per lane.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

__all__ = ["FairScheduler", "Lane", "LatestWinsBuffer"]

T = TypeVar("T")


class LatestWinsBuffer(Generic[T]):
    """A FIFO of at most ``capacity`` items that drops the oldest when full."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._items: collections.deque[T] = collections.deque()
        self.capacity = capacity
        self.dropped = 0

    def push(self, item: T) -> T | None:
        """Add ``item``; return the item dropped to make room, if any."""
        dropped = None
        if len(self._items) >= self.capacity:
            dropped = self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        return dropped

    def pop(self) -> T | None:
        return self._items.popleft() if self._items else None

    def peek(self) -> T | None:
        return self._items[0] if self._items else None

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class Lane:
    """One connection's place at a scheduler."""

    def __init__(
        self,
        scheduler: FairScheduler,
        capacity: int,
        execute: Callable[[Any], Awaitable[Any]],
        deliver: Callable[[Any, Any], Awaitable[None]],
    ):
        self.buffer: LatestWinsBuffer[Any] = LatestWinsBuffer(capacity)
        self.execute = execute
        self.deliver = deliver
        self.in_flight = False
        self.queued = False
        self.closed = False
        self._scheduler = scheduler
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(self, item: Any) -> Any | None:
        """Buffer ``item`` for inference; return an older item it displaced, if any."""
        if self.closed:
            raise RuntimeError("lane is closed")
        dropped = self.buffer.push(item)
        self._idle.clear()
        self._scheduler._enqueue(self)
        return dropped

    @property
    def busy(self) -> bool:
        return self.in_flight or len(self.buffer) > 0

    async def wait_idle(self) -> None:
        await self._idle.wait()

    def close(self) -> None:
        """Forget buffered inputs. An input already in inference finishes; its delivery may fail."""
        self.closed = True
        self.buffer.clear()
        self._scheduler._lanes.discard(self)
        if not self.in_flight:
            self._idle.set()


class FairScheduler:
    """Round-robin between lanes with pending input; at most ``concurrency`` calls in flight.

    With ``max_batch`` > 1, one call takes the next inputs of up to ``max_batch`` lanes, in
    round-robin order, whose ``batch_key`` equals the first's, and runs them with ``run_batch``.
    """

    def __init__(
        self,
        concurrency: int,
        *,
        max_batch: int = 1,
        batch_key: Callable[[Any], Any] | None = None,
        run_batch: Callable[[list[Any]], Awaitable[list[Any]]] | None = None,
    ):
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if max_batch > 1 and (batch_key is None or run_batch is None):
            raise ValueError("batching needs batch_key and run_batch")
        self.concurrency = concurrency
        self.max_batch = max_batch
        self.batch_key = batch_key
        self.run_batch = run_batch
        self._free = concurrency
        self._ready: collections.deque[Lane] = collections.deque()
        self._lanes: set[Lane] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False

    def open_lane(
        self,
        capacity: int,
        execute: Callable[[Any], Awaitable[Any]],
        deliver: Callable[[Any, Any], Awaitable[None]],
    ) -> Lane:
        lane = Lane(self, capacity, execute, deliver)
        self._lanes.add(lane)
        return lane

    def stats(self) -> dict[str, int]:
        return {
            "connections": len(self._lanes),
            "in_flight": self.concurrency - self._free,
            "waiting": len(self._ready),
            "concurrency": self.concurrency,
        }

    async def stop(self) -> None:
        """Start nothing new; wait for what is in inference to finish and be delivered."""
        self._stopped = True
        self._ready.clear()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _enqueue(self, lane: Lane) -> None:
        if not (lane.queued or lane.in_flight or lane.closed):
            lane.queued = True
            self._ready.append(lane)
        self._pump()

    def _pump(self) -> None:
        while self._free > 0 and self._ready and not self._stopped:
            lane = self._ready.popleft()
            lane.queued = False
            item = None if lane.closed or lane.in_flight else lane.buffer.pop()
            if item is None:
                continue
            self._free -= 1
            lane.in_flight = True
            batch = self._companions(lane, item) if self.max_batch > 1 else []
            work = self._run_batch([(lane, item), *batch]) if batch else self._run(lane, item)
            task = asyncio.get_running_loop().create_task(work)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _companions(self, first: Lane, item: Any) -> list[tuple[Lane, Any]]:
        """Up to ``max_batch - 1`` more lanes, in turn, whose next input can share the call."""
        assert self.batch_key is not None
        key = self.batch_key(item)
        taken: list[tuple[Lane, Any]] = []
        for lane in list(self._ready):
            if len(taken) >= self.max_batch - 1:
                break
            head = lane.buffer.peek()
            if lane.closed or lane.in_flight or head is None or self.batch_key(head) != key:
                continue
            self._ready.remove(lane)
            lane.queued = False
            lane.in_flight = True
            taken.append((lane, lane.buffer.pop()))
        return taken

    async def _run_batch(self, work: list[tuple[Lane, Any]]) -> None:
        assert self.run_batch is not None
        slot_held = True
        try:
            outcomes = await self.run_batch([item for _, item in work])
            self._free += 1
            slot_held = False
            self._pump()
            await asyncio.gather(
                *(lane.deliver(item, outcome) for (lane, item), outcome in zip(work, outcomes, strict=True))
            )
        finally:
            if slot_held:
                self._free += 1
            for lane, _ in work:
                lane.in_flight = False
                if len(lane.buffer) and not lane.closed:
                    self._enqueue(lane)
                elif not lane.busy:
                    lane._idle.set()
            self._pump()

    async def _run(self, lane: Lane, item: Any) -> None:
        slot_held = True
        try:
            outcome = await lane.execute(item)
            self._free += 1
            slot_held = False
            self._pump()  # another lane may start while this one delivers
            await lane.deliver(item, outcome)
        finally:
            if slot_held:
                self._free += 1
            lane.in_flight = False
            if len(lane.buffer) and not lane.closed:
                self._enqueue(lane)
            else:
                if not lane.busy:
                    lane._idle.set()
                self._pump()
