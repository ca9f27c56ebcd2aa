"""A runner session's rules in-process, with no socket (runner/session_state.py)."""

from __future__ import annotations

import json

import msgpack

from realtime_site.protocol import Encoding, ErrorCode, ProtocolError
from realtime_site.runner.engines.base import EngineOutput, Preview
from realtime_site.runner.execution import Job, encode_result
from realtime_site.runner.session_state import SessionOptions, SessionState

PNG = b"\x89PNG\r\n\x1a\n fake"


def frame(**fields: object) -> bytes:
    return msgpack.packb({"prompt": "x", "image_bytes": PNG, **fields}, use_bin_type=True)


def test_a_good_frame_becomes_a_numbered_job_in_its_encoding() -> None:
    state = SessionState(SessionOptions(previews=True))
    first, second = state.receive(frame(request_id="a")), state.receive(json.dumps({"prompt": "x"}).encode())
    assert isinstance(first, Job) and first.request.request_id == "a" and first.number == 1 and first.previews
    assert isinstance(second, str)  # no image: an error, yet it counts as the session's second message
    third = state.receive(json.dumps({"prompt": "x", "image_url": "data:image/png;base64,iVBO"}).encode())
    assert isinstance(third, Job) and third.encoding is Encoding.JSON_BINARY and third.number == 3
    assert (state.frames_in, state.errors) == (3, 1)


def test_bad_messages_are_answered_at_once_by_name() -> None:
    state = SessionState(SessionOptions(max_frame_bytes=100))
    too_big = json.loads(state.receive(b"\x80" * 101))
    assert (too_big["error"], too_big["reason"]) == ("PAYLOAD_TOO_LARGE", "frame is 101 bytes; the limit is 100 bytes")
    bad = json.loads(state.receive(b"\xc1"))
    assert bad["error"] == "VALIDATION_ERROR" and bad["reason"].startswith("frame:")
    field = json.loads(state.receive(frame(strength=7, request_id=9)))
    assert (field["error"], field["request_id"]) == ("VALIDATION_ERROR", 9) and field["reason"].startswith("strength")
    draining = json.loads(state.receive(frame(), draining=True))
    assert draining["error"] == "RUNNER_UNAVAILABLE"
    assert state.errors == 4


def job(**options: object) -> tuple[SessionState, Job]:
    state = SessionState(SessionOptions(**options))
    made = state.receive(frame(request_id="r"))
    assert isinstance(made, Job)
    return state, made


def test_an_answer_is_its_result_then_timings_if_asked() -> None:
    state, made = job(timings=True)
    outcome = encode_result(made, EngineOutput(b"jpeg", "image/jpeg", 64, 64), 3, 0.25)
    result, timings = state.answer(made, outcome)
    assert msgpack.unpackb(result)["request_id"] == "r"
    assert json.loads(timings) == {"type": "x-fal-message", "action": "timings", "timing": 0.25}
    assert state.results_out == 1
    plain_state, plain = job()
    assert len(plain_state.answer(plain, encode_result(plain, EngineOutput(b"j", "image/jpeg", 64, 64), 3, 0.1))) == 1


def test_a_failed_input_is_answered_by_its_error() -> None:
    state, made = job()
    (error,) = state.answer(made, ProtocolError("inference failed", code=ErrorCode.INTERNAL_ERROR, request_id="r"))
    assert json.loads(error) == {
        "type": "x-fal-error",
        "error": "INTERNAL_ERROR",
        "reason": "inference failed",
        "request_id": "r",
    }
    assert (state.results_out, state.errors) == (0, 1)


def test_drops_are_reported_with_the_input_they_removed_only_when_asked() -> None:
    state, made = job(report_drops=True)
    assert json.loads(state.dropped(made) or "") == {
        "type": "x-fal-message",
        "action": "dropped",
        "input": 1,
        "request_id": "r",
    }
    quiet_state, quiet = job()
    assert quiet_state.dropped(quiet) is None


def test_a_preview_is_a_result_marked_partial_and_the_idle_timeout_says_why() -> None:
    state, made = job(idle_timeout=2.5)
    preview = msgpack.unpackb(state.preview(made, Preview(EngineOutput(b"p", "image/jpeg", 16, 16), 1, 2), 7, 0.1))
    assert (preview["partial"], preview["step"], preview["steps"], preview["seed"]) == (True, 1, 2, 7)
    error, reason = state.idle_timeout()
    assert json.loads(error)["error"] == "TIMEOUT" and reason == "no input for 2.5 seconds"
