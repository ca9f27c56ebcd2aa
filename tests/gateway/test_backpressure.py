"""ResultOutbox without a socket: a fake consumer stands in for Twisted's transport (its producer API)."""

from __future__ import annotations

import asyncio

from realtime_site.gateway.backpressure import META_CAPACITY, SCOPE_KEY, ResultOutbox


class Transport:
    """What ResultOutbox needs of a Twisted transport: registerProducer / unregisterProducer."""

    def __init__(self, taken: bool = False) -> None:
        self.producer = object() if taken else None

    def registerProducer(self, producer, streaming: bool) -> None:
        if self.producer is not None:
            raise RuntimeError("taken")
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None


class Protocol:
    def __init__(self, transport: Transport) -> None:
        self.transport = transport


def outbox(transport: Transport, *, capacity: int = 1, stall: float = 60.0):
    sent: list[bytes | str] = []
    events = {"drops": 0, "stalls": 0}

    async def send(message: bytes | str) -> None:
        sent.append(message)

    async def on_stall() -> None:
        events["stalls"] += 1

    def on_drop() -> None:
        events["drops"] += 1

    box = ResultOutbox(
        {SCOPE_KEY: Protocol(transport)}, send, capacity=capacity, stall_limit=stall, on_drop=on_drop, on_stall=on_stall
    )
    return box, sent, events


async def test_outbox_sends_at_once_while_the_client_reads() -> None:
    transport = Transport()
    box, sent, events = outbox(transport)
    await box.result(b"r1")
    await box.message("m1")
    assert sent == [b"r1", "m1"] and events["drops"] == 0 and transport.producer is not None
    box.close()
    assert transport.producer is None


async def test_outbox_keeps_the_newest_results_while_paused_and_sends_them_on_resume() -> None:
    transport = Transport()
    box, sent, events = outbox(transport, capacity=2)
    transport.producer.pauseProducing()
    for n in range(5):
        await box.result(f"r{n}".encode())
    await box.message("error")
    assert sent == [] and box.held == 3 and events["drops"] == 3
    transport.producer.resumeProducing()
    await asyncio.sleep(0)
    assert sent == [b"r3", b"r4", "error"] and box.held == 0


async def test_outbox_bounds_meta_messages_while_paused() -> None:
    transport = Transport()
    box, sent, _ = outbox(transport)
    transport.producer.pauseProducing()
    for n in range(META_CAPACITY + 10):
        await box.message(f"m{n}")
    assert box.held == META_CAPACITY
    transport.producer.resumeProducing()
    await asyncio.sleep(0)
    assert sent[0] == "m10" and len(sent) == META_CAPACITY


async def test_outbox_reports_a_client_stalled_past_the_limit() -> None:
    transport = Transport()
    _, _, events = outbox(transport, stall=0.05)
    transport.producer.pauseProducing()
    await asyncio.sleep(0.3)
    assert events["stalls"] == 1
    transport.producer.resumeProducing()
    transport.producer.pauseProducing()
    transport.producer.resumeProducing()  # a short pause is no stall
    await asyncio.sleep(0.3)
    assert events["stalls"] == 1


async def test_outbox_registers_behind_an_existing_producer_that_accepts_one() -> None:
    """daphne's upgraded connections: Twisted's HTTPChannel is the transport's producer already."""
    channel = Transport()
    transport = Transport()
    transport.producer = channel
    box, _, _ = outbox(transport)
    assert channel.producer is not None
    box.close()


async def test_outbox_without_a_transport_sends_everything() -> None:
    box, sent, _ = outbox(Transport(taken=True))
    for n in range(3):
        await box.result(f"r{n}".encode())
    assert sent == [b"r0", b"r1", b"r2"]
