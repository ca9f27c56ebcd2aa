"""Relaying over the consumer: limits on the frame path, the frame cap, and exact usage counts."""

from __future__ import annotations

import pytest

from realtime_site.accounts.models import UserLimits
from realtime_site.usage.models import ConnectionRecord
from tests.gateway.conftest import communicator, frame, receive

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("pool")]


def key_headers(api_key: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Key {api_key}".encode()), (b"user-agent", b"relay-test/1")]


async def open_comm(path: str, api_key: str):
    comm = communicator(path, key_headers(api_key))
    assert (await comm.connect(timeout=20))[0]
    return comm


async def test_rate_limit_refuses_the_frame_and_keeps_the_connection(user, api_key: str) -> None:
    await UserLimits.objects.acreate(user=user, frames_per_minute=2)
    comm = await open_comm("/local/echo/realtime", api_key)
    for rid in (1, 2):
        await comm.send_to(bytes_data=frame(request_id=rid))
        assert (await receive(comm))["request_id"] == rid
    await comm.send_to(bytes_data=frame(request_id=3))
    error = await receive(comm)
    assert error["error"] == "RATE_LIMITED" and "2 frames per minute" in error["reason"]
    await comm.disconnect()
    record = await ConnectionRecord.objects.aget()
    assert (record.frames_in, record.results_out, record.errors) == (3, 2, {"RATE_LIMITED": 1})


async def test_daily_quota(user, api_key: str) -> None:
    await UserLimits.objects.acreate(user=user, daily_frame_quota=3)
    comm = await open_comm("/local/echo/realtime", api_key)
    for rid in (1, 2):
        await comm.send_to(bytes_data=frame(request_id=rid))
        assert (await receive(comm))["request_id"] == rid
    await comm.disconnect()
    comm = await open_comm("/local/echo/realtime", api_key)  # the quota spans connections
    await comm.send_to(bytes_data=frame(request_id=3))
    assert (await receive(comm))["request_id"] == 3
    await comm.send_to(bytes_data=frame(request_id=4))
    error = await receive(comm)
    assert error["error"] == "QUOTA_EXCEEDED" and "3 frames" in error["reason"]
    await comm.disconnect()


async def test_frame_cap_is_applied_before_relaying(user, api_key: str, settings) -> None:
    settings.REALTIME_MAX_FRAME_BYTES = 2000
    comm = await open_comm("/local/echo/realtime", api_key)
    await comm.send_to(bytes_data=frame(padding=bytes(5000)))
    error = await receive(comm)
    assert error["error"] == "PAYLOAD_TOO_LARGE" and "limit is 2000 bytes" in error["reason"]
    await comm.disconnect()


async def test_runner_errors_are_relayed_and_counted(user, api_key: str) -> None:
    comm = await open_comm("/local/echo/realtime", api_key)
    await comm.send_to(bytes_data=frame(strength=5, request_id="bad"))
    error = await receive(comm)
    assert error["error"] == "VALIDATION_ERROR" and error["request_id"] == "bad"
    await comm.send_to(text_data='{"prompt": "x"}')
    assert (await receive(comm))["error"] == "VALIDATION_ERROR"
    await comm.send_to(bytes_data=frame(request_id="good"))
    assert (await receive(comm))["request_id"] == "good"
    await comm.disconnect()
    record = await ConnectionRecord.objects.aget()
    assert record.errors == {"VALIDATION_ERROR": 2} and record.results_out == 1 and record.frames_in == 3


async def test_usage_counts_are_exact_after_a_known_workload(user, api_key: str) -> None:
    comm = await open_comm("/test/slow/realtime?max_buffering=2", api_key)
    sent = [frame(request_id=i) for i in range(12)]
    for data in sent:
        await comm.send_to(bytes_data=data)
    answered, received_bytes = [], 0
    while not answered or answered[-1] != 11:
        message = await comm.receive_output(30)
        received_bytes += len(message.get("bytes") or b"")
        answered.append((await _decode(message))["request_id"])
    await comm.disconnect()
    record = await ConnectionRecord.objects.aget()
    assert record.frames_in == 12 and record.results_out == len(answered)
    assert record.frames_dropped == 12 - len(answered)  # every input is answered or displaced
    assert record.bytes_in == sum(len(d) for d in sent) and record.bytes_out == received_bytes
    assert record.inference_seconds >= 0.15 * len(answered) * 0.9
    assert (record.auth_method, record.app, record.user_agent) == ("api_key", "test/slow", "relay-test/1")
    assert record.ended_at is not None and record.close_code == 1000 and record.runner.startswith("ws://")


async def _decode(message: dict) -> dict:
    import msgpack

    return msgpack.unpackb(message["bytes"], raw=False)
