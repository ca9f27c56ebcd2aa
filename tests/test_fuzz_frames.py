"""Fuzzing the frame decoding and validation: whatever arrives, the answer is a named error or a
valid request, never another exception (bounded: a few hundred examples per property)."""

from __future__ import annotations

import json

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realtime_site.protocol import Encoding, ImageRequest, ProtocolError, decode_frame, parse_request

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1), st.floats(),
    st.text(max_size=50), st.binary(max_size=200),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
FIELDS = ["prompt", "image_bytes", "image_url", "strength", "num_inference_steps", "guidance_scale", "seed",
          "negative_prompt", "image_size", "width", "height", "sync_mode", "output_format", "request_id"]  # fmt: skip
frames = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=12), values, max_size=10)


def answer(data: bytes | str) -> ImageRequest | ProtocolError:
    try:
        frame, encoding = decode_frame(data)
        return parse_request(frame, encoding=encoding)
    except ProtocolError as exc:  # the only exception allowed
        assert exc.reason and exc.message().startswith('{"type": "x-fal-error"')
        return exc


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes(data: bytes) -> None:
    answer(data)


@FUZZ
@given(st.text(max_size=300))
def test_any_text(data: str) -> None:
    answer(data)


@FUZZ
@given(frames)
def test_any_msgpack_map(frame: dict) -> None:
    result = answer(msgpack.packb(frame, use_bin_type=True))
    if isinstance(result, ImageRequest):
        assert 1 <= len(result.prompt) <= 2000 and result.image
        assert 64 <= result.width <= 1024 and result.width % 8 == 0 and 0 <= result.strength <= 1


@FUZZ
@given(frames)
def test_any_json_object(frame: dict) -> None:
    text_frame = {k: v for k, v in frame.items() if not isinstance(v, bytes)}
    answer(json.dumps(text_frame, default=repr))


def test_encoding_is_kept() -> None:
    frame = {"prompt": "x", "image_bytes": b"\x89PNG"}
    assert isinstance(answer(msgpack.packb(frame)), ImageRequest)
    assert decode_frame(msgpack.packb(frame))[1] is Encoding.MSGPACK
