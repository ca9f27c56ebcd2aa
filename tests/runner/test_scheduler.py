"""Latest-wins buffers and fair scheduling, driven without sockets or threads."""

from __future__ import annotations

import asyncio

import pytest

from realtime_site.runner.scheduler import FairScheduler, LatestWinsBuffer


def test_buffer_drops_oldest_when_full() -> None:
    buffer: LatestWinsBuffer[int] = LatestWinsBuffer(2)
    assert buffer.push(1) is None and buffer.push(2) is None
    assert buffer.push(3) == 1
    assert (buffer.pop(), buffer.pop(), buffer.pop()) == (2, 3, None)
    assert buffer.dropped == 1


def test_buffer_rejects_zero_capacity() -> None:
    with pytest.raises(ValueError):
        LatestWinsBuffer(0)


class Recorder:
    """Execute/deliver pair for a lane; ``gate`` lets a test hold inference."""

    def __init__(self, name: str, log: list[str], gate: asyncio.Event | None = None):
        self.name, self.log, self.gate, self.delivered = name, log, gate, []

    async def execute(self, item: int) -> int:
        self.log.append(f"{self.name}{item}")
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(0)
        return item * 10

    async def deliver(self, item: int, outcome: int) -> None:
        self.delivered.append(outcome)


async def settle(*lanes) -> None:
    for lane in lanes:
        await asyncio.wait_for(lane.wait_idle(), 5)


async def test_latest_input_wins_and_results_in_order() -> None:
    scheduler = FairScheduler(1)
    gate = asyncio.Event()
    rec = Recorder("a", [], gate)
    lane = scheduler.open_lane(1, rec.execute, rec.deliver)
    for item in range(1, 6):
        lane.submit(item)
    await asyncio.sleep(0.01)
    gate.set()
    await settle(lane)
    assert rec.delivered == [10, 50]  # the first was in flight; of the rest only the latest survived
    assert lane.buffer.dropped == 3


async def test_max_buffering_keeps_the_newest_in_order() -> None:
    scheduler = FairScheduler(1)
    gate = asyncio.Event()
    rec = Recorder("a", [], gate)
    lane = scheduler.open_lane(3, rec.execute, rec.deliver)
    for item in range(1, 9):
        lane.submit(item)
    gate.set()
    await settle(lane)
    assert rec.delivered == [10, 60, 70, 80]


async def test_flooding_lane_does_not_starve_a_quiet_one() -> None:
    scheduler = FairScheduler(1)
    log: list[str] = []
    flood, quiet = Recorder("f", log), Recorder("q", log)
    flood_lane = scheduler.open_lane(60, flood.execute, flood.deliver)
    quiet_lane = scheduler.open_lane(1, quiet.execute, quiet.deliver)
    for item in range(50):
        flood_lane.submit(item)
    quiet_lane.submit(1)
    await settle(flood_lane, quiet_lane)
    # The quiet input runs right after the flooder's first one, not after its backlog.
    assert log.index("q1") == 1


async def test_one_input_in_flight_per_lane_even_with_free_slots() -> None:
    scheduler = FairScheduler(4)
    gate = asyncio.Event()
    rec = Recorder("a", [], gate)
    lane = scheduler.open_lane(5, rec.execute, rec.deliver)
    for item in range(3):
        lane.submit(item)
    await asyncio.sleep(0.01)
    assert scheduler.stats()["in_flight"] == 1
    gate.set()
    await settle(lane)
    assert rec.delivered == [0, 10, 20]


async def test_slot_is_freed_before_a_slow_delivery() -> None:
    scheduler = FairScheduler(1)
    log: list[str] = []
    stuck = asyncio.Event()

    async def slow_deliver(item: int, outcome: int) -> None:
        await stuck.wait()

    other = Recorder("b", log)
    lane_a = scheduler.open_lane(1, Recorder("a", log).execute, slow_deliver)
    lane_b = scheduler.open_lane(1, other.execute, other.deliver)
    lane_a.submit(1)
    await asyncio.sleep(0.01)
    lane_b.submit(2)
    await settle(lane_b)
    assert other.delivered == [20]
    stuck.set()
    await settle(lane_a)


async def test_closed_lane_is_skipped_and_stop_waits_for_in_flight() -> None:
    scheduler = FairScheduler(1)
    gate = asyncio.Event()
    log: list[str] = []
    a, b = Recorder("a", log, gate), Recorder("b", log)
    lane_a = scheduler.open_lane(1, a.execute, a.deliver)
    lane_b = scheduler.open_lane(1, b.execute, b.deliver)
    lane_a.submit(1)
    lane_b.submit(1)
    lane_b.close()
    stopping = asyncio.create_task(scheduler.stop())
    await asyncio.sleep(0.01)
    assert not stopping.done()
    gate.set()
    await asyncio.wait_for(stopping, 5)
    assert log == ["a1"] and a.delivered == [10] and b.delivered == []
