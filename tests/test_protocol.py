"""Frames and input validation, without a socket."""

from __future__ import annotations

import base64
import json

import msgpack
import pytest

from realtime_site.protocol import (
    MAX_CLOSE_REASON_BYTES,
    MAX_FRAME_KEYS,
    Encoding,
    ErrorCode,
    ImageRequest,
    ValidationError,
    close_reason,
    decode_frame,
    encode_frame,
    error_message,
    parse_app_path,
    parse_max_buffering,
    parse_request,
    result_payload,
)

PNG = b"\x89PNG fake"


def frame(**fields: object) -> dict:
    return {"prompt": "a cat", "image_bytes": PNG, **fields}


def test_parse_request_defaults() -> None:
    request = parse_request(frame(), encoding=Encoding.MSGPACK)
    assert (request.width, request.height) == (512, 512)
    assert request.strength == 0.5
    assert request.seed is None and request.sync_mode is False and request.output_format == "jpeg"


def test_parse_request_named_and_explicit_sizes() -> None:
    assert parse_request(frame(image_size="landscape_4_3"), encoding=Encoding.MSGPACK).width == 1024
    request = parse_request(frame(image_size={"width": 256, "height": 128}), encoding=Encoding.MSGPACK)
    assert (request.width, request.height) == (256, 128)
    request = parse_request(frame(width=64, height=1024), encoding=Encoding.MSGPACK)
    assert (request.width, request.height) == (64, 1024)


def test_parse_request_ignores_unknown_fields_and_echoes_request_id() -> None:
    request = parse_request(frame(request_id="r-1", whatever=[1, 2]), encoding=Encoding.MSGPACK)
    assert request.request_id == "r-1"


def test_control_inputs_and_travel_are_off_unless_given() -> None:
    request = parse_request(frame(), encoding=Encoding.MSGPACK)
    assert request.control_image is None and request.controlnet_conditioning_scale is None
    assert request.control_guidance_end is None
    assert request.prompt_transition_frames == request.seed_transition_frames == 0
    assert request.prompt_blend == request.seed_blend == ()
    given = frame(
        control_image_bytes=b"lines",
        controlnet_conditioning_scale=2,
        control_guidance_end=0.5,
        prompt_transition_frames=4,
        seed_transition_frames=60,
        prompt_blend="not read from the wire",
    )
    request = parse_request(given, encoding=Encoding.MSGPACK)
    assert request.control_image == b"lines" and request.controlnet_conditioning_scale == 2.0
    assert (request.control_guidance_end, request.prompt_transition_frames, request.seed_transition_frames) == (
        0.5,
        4,
        60,
    )
    assert request.prompt_blend == ()
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert parse_request(frame(control_image_url=url), encoding=Encoding.JSON).control_image == PNG
    both = frame(control_image_url=url, control_image_bytes=b"raw")
    assert parse_request(both, encoding=Encoding.MSGPACK).control_image == b"raw"  # binary wins, as for image


def test_parse_request_image_url_data_url() -> None:
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    request = parse_request({"prompt": "x", "image_url": url}, encoding=Encoding.JSON)
    assert request.image == PNG


def test_image_is_one_more_name_of_the_picture_bytes_or_data_url() -> None:
    """fal-swift's camera sample sends its picture as ``image`` (bytes)."""
    assert parse_request({"prompt": "x", "image": PNG}, encoding=Encoding.MSGPACK).image == PNG
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert parse_request({"prompt": "x", "image": url}, encoding=Encoding.JSON).image == PNG
    both = {"prompt": "x", "image_bytes": PNG, "image": b"other"}
    assert parse_request(both, encoding=Encoding.MSGPACK).image == PNG  # image_bytes wins
    assert parse_request({"prompt": "x", "image_url": url, "image": b"raw"}, encoding=Encoding.MSGPACK).image == b"raw"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"prompt": None}, "prompt"),
        ({"image_bytes": None, "image": 5}, "image"),
        ({"image_bytes": None, "image": b""}, "image"),
        ({"image_bytes": None, "image": "not a data url"}, "image"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x" * 2001}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"image_bytes": None}, "image"),
        ({"image_bytes": b""}, "image_bytes"),
        ({"image_bytes": "not bytes"}, "image_bytes"),
        ({"image_bytes": None, "image_url": "https://example.com/a.png"}, "image_url"),
        ({"image_bytes": None, "image_url": "data:image/png;base64,!!!"}, "image_url"),
        ({"strength": 1.5}, "strength"),
        ({"strength": float("nan")}, "strength"),
        ({"strength": True}, "strength"),
        ({"strength": "0.5"}, "strength"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"num_inference_steps": 2.5}, "num_inference_steps"),
        ({"guidance_scale": 21}, "guidance_scale"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**32}, "seed"),
        ({"image_size": "huge"}, "image_size"),
        ({"image_size": {"width": 100, "height": 512}}, "image_size.width"),
        ({"image_size": {"width": 512}}, "image_size.height"),
        ({"width": 2048, "height": 512}, "width"),
        ({"image_size": 512}, "image_size"),
        ({"sync_mode": "yes"}, "sync_mode"),
        ({"output_format": "gif"}, "output_format"),
        ({"negative_prompt": 3}, "negative_prompt"),
        ({"request_id": {"a": 1}}, "request_id"),
        ({"control_image_bytes": b""}, "control_image_bytes"),
        ({"control_image_bytes": "text"}, "control_image_bytes"),
        ({"control_image_url": "https://example.com/lines.png"}, "control_image_url"),
        ({"control_image_url": "data:image/png;base64,"}, "control_image_url"),
        ({"control_image_url": 7}, "control_image_url"),
        ({"controlnet_conditioning_scale": 2.5}, "controlnet_conditioning_scale"),
        ({"controlnet_conditioning_scale": -0.1}, "controlnet_conditioning_scale"),
        ({"controlnet_conditioning_scale": float("inf")}, "controlnet_conditioning_scale"),
        ({"control_guidance_end": 1.01}, "control_guidance_end"),
        ({"control_guidance_end": 0}, "control_guidance_end"),
        ({"control_guidance_end": "1"}, "control_guidance_end"),
        ({"prompt_transition_frames": 61}, "prompt_transition_frames"),
        ({"prompt_transition_frames": -1}, "prompt_transition_frames"),
        ({"prompt_transition_frames": 2.0}, "prompt_transition_frames"),
        ({"seed_transition_frames": 1000}, "seed_transition_frames"),
        ({"seed_transition_frames": True}, "seed_transition_frames"),
    ],
)
def test_parse_request_names_the_bad_field(fields: dict, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_request(frame(**fields), encoding=Encoding.MSGPACK)
    assert caught.value.field == field
    assert caught.value.reason.startswith(field + ":")
    assert caught.value.code is ErrorCode.VALIDATION_ERROR


def test_validation_error_carries_request_id() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_request(frame(strength=9, request_id=42), encoding=Encoding.MSGPACK)
    assert json.loads(caught.value.message())["request_id"] == 42


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\xc1", "must be a msgpack map"),
        (b"", "must be a msgpack map"),
        (b"\x81\xa1a", "not valid msgpack"),
        (msgpack.packb([1, 2]), "must be a msgpack map"),
        (msgpack.packb({1: "int key"}), "not valid msgpack"),
        ("{not json", "text message is not valid JSON"),
        ("[1]", "must be a JSON object"),
        (b"{not json", "binary message is not valid JSON"),
        (b'{"prompt": "\xff"}', "begins with '{' but is not UTF-8 JSON"),
        (b"[1]", "must be a msgpack map"),  # only '{' marks JSON in a binary message
        (b"{" + b"[" * 300, "more than 256 arrays and maps"),
    ],
)
def test_decode_frame_rejects_garbage(data: bytes | str, problem: str) -> None:
    with pytest.raises(ValidationError) as caught:
        decode_frame(data)
    assert caught.value.field == "frame" and problem in caught.value.reason


def test_decode_frame_reports_encoding() -> None:
    assert decode_frame(msgpack.packb({"a": 1}))[1] is Encoding.MSGPACK
    assert decode_frame('{"a": 1}')[1] is Encoding.JSON
    assert decode_frame(b'{"a": 1}') == ({"a": 1}, Encoding.JSON_BINARY)
    assert decode_frame(bytearray(b'{"a": 1}'))[1] is Encoding.JSON_BINARY


def test_json_in_binary_frames_is_answered_as_json_in_a_binary_frame() -> None:
    frame_in, encoding = decode_frame(
        json.dumps(frame(image_bytes=None, image_url="data:image/png;base64,iVBO")).encode()
    )
    request = parse_request(frame_in, encoding=encoding)
    kwargs = dict(image=b"img", width=64, height=64, content_type="image/png", seed=3, inference_seconds=0.01)
    answer = encode_frame(result_payload(request, encoding=encoding, **kwargs), encoding)
    assert isinstance(answer, bytes)
    assert json.loads(answer)["images"][0]["url"] == "data:image/png;base64," + base64.b64encode(b"img").decode()


def test_json_in_binary_frames_has_no_bytes_for_images() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_request({"prompt": "x", "image_bytes": "abc"}, encoding=Encoding.JSON_BINARY)
    assert "JSON frames carry images in image_url" in caught.value.reason


def test_result_payload_content_url_and_json() -> None:
    request = ImageRequest(prompt="x", image=PNG, width=64, height=64, request_id=7)
    kwargs = dict(image=b"img", width=64, height=64, content_type="image/jpeg", seed=3, inference_seconds=0.01)
    binary = result_payload(request, encoding=Encoding.MSGPACK, **kwargs)
    assert binary["images"][0]["content"] == b"img" and binary["request_id"] == 7 and binary["seed"] == 3
    text = result_payload(request, encoding=Encoding.JSON, **kwargs)
    assert text["images"][0]["url"] == "data:image/jpeg;base64," + base64.b64encode(b"img").decode()
    json.loads(encode_frame(text, Encoding.JSON))  # serialisable
    sync = ImageRequest(prompt="x", image=PNG, width=64, height=64, sync_mode=True)
    assert "url" in result_payload(sync, encoding=Encoding.MSGPACK, **kwargs)["images"][0]


def test_error_message_shape() -> None:
    message = json.loads(error_message(ErrorCode.TIMEOUT, "idle", "r"))
    assert message == {"type": "x-fal-error", "error": "TIMEOUT", "reason": "idle", "request_id": "r"}


def test_parse_app_path() -> None:
    assert parse_app_path("/fal-ai/fast-lcm-diffusion/realtime") == ("fal-ai/fast-lcm-diffusion", "realtime")
    assert parse_app_path("/local/echo/a/b") == ("local/echo", "a/b")
    for bad in ("/", "/local/echo", "/../x/realtime", "/a b/c/realtime"):
        with pytest.raises(ValueError):
            parse_app_path(bad)


@pytest.mark.parametrize(
    "path",
    [
        "/local/echo/real time",
        "/local/echo/real#time",
        "/local/echo/real%23time",
        "/local/echo/realtime\x00",
        "/local/echo/../realtime",
        "/local/echo//realtime",
        "/local/echo/",
        "/local/\u00e9cho/realtime",
        "/local/" + "a" * 65 + "/realtime",
        "/" + "o" * 65 + "/echo/realtime",
        "/local/echo/a/b/c/d/e",
        "/local/echo/real\ttime",
        "/local/echo/realtime?max_buffering=60",
    ],
)
def test_parse_app_path_refuses_what_a_url_would_reread(path: str) -> None:
    with pytest.raises(ValueError, match="path"):
        parse_app_path(path)


@pytest.mark.parametrize("raw", ["²", "1" * 5000, "-1", "0", "61", "", " 1", "1.0", "0x1", "\u0661"])
def test_parse_max_buffering_names_bad_values(raw: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_max_buffering(raw)
    assert caught.value.field == "max_buffering"


def test_parse_max_buffering_accepts_the_range() -> None:
    assert [parse_max_buffering(v) for v in (None, "1", "60", "007")] == [1, 1, 60, 7]


@pytest.mark.parametrize(
    "data",
    [
        # a 30-byte header declaring millions of empty arrays, then those arrays (600 MB of lists decoded)
        b"\xdd" + (2**22).to_bytes(4, "big") + b"\x90" * 2**22,
        b"\x81\xa1a\xdd" + (2**22).to_bytes(4, "big") + b"\x80" * 2**22,
        b"\x81\xa1a" + b"\x91" * 100_000 + b"\xc0",  # deeply nested
        "[" * 100_000,
        '{"a":' * 100_000,
        '{"a": [' + "[]," * 1000 + "[]]}",
    ],
)
def test_decode_frame_stops_bombs_early(data: bytes | str) -> None:
    with pytest.raises(ValidationError) as caught:
        decode_frame(data)
    assert caught.value.field == "frame"


def test_decode_frame_bounds_map_entries() -> None:
    with pytest.raises(ValidationError, match="frame"):
        decode_frame(msgpack.packb({f"k{i}": i for i in range(MAX_FRAME_KEYS + 1)}))
    assert len(decode_frame(msgpack.packb({f"k{i}": i for i in range(MAX_FRAME_KEYS)}))[0]) == MAX_FRAME_KEYS


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_parse_request_refuses_lone_surrogates(field: str) -> None:
    text = json.dumps({"prompt": "ok", field: "a?b", "image_url": "data:image/png;base64,AA=="})
    frame, encoding = decode_frame(text.replace("a?b", "a\\ud800b"))
    with pytest.raises(ValidationError) as caught:
        parse_request(frame, encoding=encoding)
    assert caught.value.field == field and "surrogate" in caught.value.reason


def test_return_large_buffers_to_the_os_on_glibc() -> None:
    from realtime_site.memory import return_large_buffers_to_the_os

    assert return_large_buffers_to_the_os() is True  # this machine's Python runs on glibc


@pytest.mark.parametrize("text", ["short", "é" * 62, "é" * 200, "x" * 122 + "é", "\U0001f600" * 40])
def test_close_reason_fits_a_close_frame_in_whole_characters(text: str) -> None:
    reason = close_reason(text)
    assert len(reason.encode()) <= MAX_CLOSE_REASON_BYTES
    assert reason == text if len(text.encode()) <= MAX_CLOSE_REASON_BYTES else reason.endswith("...")
    assert text.startswith(reason.removesuffix("..."))
