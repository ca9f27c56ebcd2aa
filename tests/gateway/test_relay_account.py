"""The relay's accounting on its own (gateway/relay.py): what a runner message is, and what it counts."""

from __future__ import annotations

import json

import pytest

from realtime_site.gateway.relay import Kind, RelayAccount, read_answer
from realtime_site.protocol import (
    Encoding,
    ErrorCode,
    ImageRequest,
    dropped_message,
    encode_frame,
    error_message,
    result_payload,
    timings_message,
)
from realtime_site.usage.recorder import Usage

REQUEST = ImageRequest(prompt="x", image=b"", width=64, height=64)
IMAGE = dict(image=b"\xff" * 100_000, width=64, height=64, content_type="image/jpeg", seed=1)


def result(seconds: float = 0.125, step: tuple[int, int] | None = None, encoding: Encoding = Encoding.MSGPACK):
    payload = result_payload(REQUEST, inference_seconds=seconds, encoding=encoding, step=step, **IMAGE)
    return encode_frame(payload, encoding)


def test_results_are_read_without_decoding_the_image() -> None:
    assert read_answer(result()) == read_answer(result(encoding=Encoding.JSON_BINARY))
    assert (read_answer(result()).kind, read_answer(result()).inference_seconds) == (Kind.RESULT, 0.125)
    assert read_answer(result(encoding=Encoding.JSON)).inference_seconds == 0.125
    assert read_answer(result(0.05, step=(1, 4))).kind is Kind.PREVIEW
    assert read_answer(result(0.05, step=(1, 4), encoding=Encoding.JSON)).kind is Kind.PREVIEW


def test_a_result_is_read_from_its_head_whatever_the_order_of_its_fields() -> None:
    """The runner puts ``images`` last, so the fields are read from the first bytes; a result laid out
    otherwise (images first, or small fields longer than the head) is read whole, to the same answer."""
    import msgpack

    image = [{"content": b"\xff" * 100_000}]
    assert list(msgpack.unpackb(result()))[-1] == "images"
    layouts = [
        {"timings": {"inference": 0.25}, "partial": True, "images": image},
        {"images": image, "timings": {"inference": 0.25}, "partial": True},
        {"request_id": "r" * 2000, "timings": {"inference": 0.25}, "partial": True, "images": image},
    ]
    for fields in layouts:
        answer = read_answer(msgpack.packb(fields))
        assert (answer.kind, answer.inference_seconds) == (Kind.PREVIEW, 0.25), list(fields)


@pytest.mark.parametrize(
    "message", [b"\xc1 garbage", b"{ garbage", "[1]", b'{"timings": {"inference": true}, "partial": 1}']
)
def test_anything_else_is_a_result_without_seconds(message: bytes | str) -> None:
    assert (read_answer(message).kind, read_answer(message).inference_seconds) == (Kind.RESULT, 0.0)


def test_meta_messages_are_known_by_their_type_not_by_their_key_order() -> None:
    assert read_answer(error_message(ErrorCode.TIMEOUT, "idle")).kind is Kind.ERROR
    assert read_answer(json.dumps({"reason": "r", "error": "X", "type": "x-fal-error"})).error_code == "X"
    assert read_answer(timings_message(0.1)).kind is Kind.MESSAGE
    assert read_answer(dropped_message("a", 3)).kind is Kind.DROPPED
    assert read_answer(json.dumps({"type": "x-fal-message", "action": "ping"})).action == "ping"


def account() -> RelayAccount:
    return RelayAccount(Usage(user_id=1, app="local/echo", auth_method="api_key"))


def test_results_answer_the_oldest_input_and_previews_answer_nothing() -> None:
    relay = account()
    for _ in range(3):
        relay.frame_in(100)
        relay.relayed()
    assert relay.answer(result(0.05, step=(1, 2))).kind is Kind.PREVIEW
    assert list(relay.pending) == [1, 2, 3]
    relay.answer(result())
    assert list(relay.pending) == [2, 3]
    usage = relay.usage
    assert (usage.frames_in, usage.bytes_in, usage.results_out, usage.inference_seconds) == (3, 300, 1, 0.125)
    assert sum(usage.latency_buckets) == 1 and usage.bytes_out == len(result(0.05, step=(1, 2))) + len(result())


def test_the_runner_names_the_input_its_buffer_dropped() -> None:
    relay = account()
    for _ in range(4):
        relay.relayed()
    assert relay.answer(dropped_message(None, 3)).kind is Kind.DROPPED
    assert list(relay.pending) == [1, 2, 4] and relay.usage.frames_dropped == 1
    assert relay.usage.bytes_out == 0  # the report is the gateway's, never relayed
    relay.answer(dropped_message())  # an older runner that does not say: the second oldest
    assert list(relay.pending) == [1, 4]


def test_errors_and_a_lost_runner_session() -> None:
    relay = account()
    relay.relayed()
    relay.relayed()
    assert relay.answer(error_message(ErrorCode.VALIDATION_ERROR, "prompt: is required")).kind is Kind.ERROR
    assert list(relay.pending) == [1] and relay.usage.errors == {"VALIDATION_ERROR": 1}
    relay.error(ErrorCode.RATE_LIMITED.value)
    assert relay.usage.errors == {"VALIDATION_ERROR": 1, "RATE_LIMITED": 1}
    relay.runner_session_ended()
    relay.relayed()
    assert list(relay.pending) == [1]  # a new runner session numbers its inputs from 1
