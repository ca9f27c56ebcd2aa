"""Hostile frames on an admitted connection: not msgpack, truncated, bombs, deep nesting, invalid UTF-8,
oversize, non-map frames, a wrong type or value in every field. A bad input gets an ``x-fal-error``
naming the problem and the connection lives on (a good frame after it gets its result); invalid
UTF-8 closes with 1007 and a frame over twice the cap with 1009. The four assertions are described
in ``harness``."""

from __future__ import annotations

import json
import random
from typing import Any

import msgpack
import pytest

from tests.adversarial.attacks import sends
from tests.adversarial.harness import FRAME_CAP, Case, Expect, Harness
from tests.adversarial.inputs import (
    JPEG,
    frame,
    json_frame,
    msgpack_array_bomb,
    msgpack_map_bomb,
)


def invalid(reason: str) -> Expect:
    return Expect(error="VALIDATION_ERROR", reason=reason, lives=True, admitted=1)


def packed(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def frame_of_size(size: int) -> bytes:
    """A good frame padded (an unknown ``pad`` field) to exactly ``size`` bytes."""
    pad = size - len(frame(pad=b"")) - 3  # a bin32 header is 3 bytes longer than an empty bin8's
    data = frame(pad=bytes(pad))
    assert len(data) == size, (len(data), size)
    return data


def fragments(data: bytes, count: int) -> list[bytes]:
    step = -(-len(data) // count)
    return [data[i : i + step] for i in range(0, len(data), step)]


TOO_LARGE = Expect(error="PAYLOAD_TOO_LARGE", reason=r"\d+ bytes", lives=True, admitted=1)
OVER_TWICE = Expect(close=1009, admitted=1)
BAD_UTF8 = Expect(close=1007, admitted=1)
NOT_A_MAP = invalid("frame")
RNG = random.Random(8)

WHOLE_FRAMES = [
    Case("not-msgpack-reserved-byte", sends(b"\xc1"), invalid("frame")),
    Case("random-bytes", sends(RNG.randbytes(1000)), invalid("frame")),
    Case("truncated-msgpack", sends(frame()[:40]), invalid("frame")),
    Case(
        "json-sent-as-binary-is-answered-in-kind",
        sends(json_frame().encode()),
        Expect(result=True, lives=True, admitted=1),
    ),
    Case(
        "json-in-binary-that-is-not-utf8",
        sends(json_frame(prompt="@").encode().replace(b"@", b"\xff\xfe")),
        invalid("frame"),
    ),
    Case("json-in-binary-that-is-not-json", sends(b"{" + RNG.randbytes(200)), invalid("frame")),
    Case("msgpack-array-bomb-of-30-bytes", sends(msgpack_array_bomb()), invalid("frame")),
    Case("msgpack-map-bomb-of-30-bytes", sends(msgpack_map_bomb()), invalid("frame")),
    Case("msgpack-array-bomb-filling-the-cap", sends(msgpack_array_bomb(size=FRAME_CAP - 16)), invalid("frame")),
    Case(
        "msgpack-250-thousand-empty-arrays",
        sends(b"\xdd" + (250_000).to_bytes(4, "big") + b"\x90" * 250_000),
        invalid("frame"),
    ),
    Case("msgpack-nested-100-thousand-deep", sends(b"\x91" * 100_000 + b"\xc0"), invalid("frame")),
    Case("msgpack-maps-nested-50-thousand-deep", sends(b"\x81\xa1a" * 50_000 + b"\xc0"), invalid("frame")),
    Case(
        "msgpack-bin-declaring-2-gb",
        sends(b"\x82\xa6prompt\xa1x\xabimage_bytes\xc6\x7f\xff\xff\xff" + b"x" * 20),
        invalid("frame"),
    ),
    Case("msgpack-str-declaring-4-gb", sends(b"\x81\xa6prompt\xdb\xff\xff\xff\xff" + b"x" * 20), invalid("frame")),
    Case("msgpack-extension-type", sends(packed(msgpack.ExtType(5, b"x"))), invalid("frame")),
    Case("msgpack-malformed-timestamp", sends(b"\x81\xa6prompt\xd6\xff\x00\x01"), invalid("frame")),
    Case("msgpack-integer-keys", sends(packed({1: 2, 3: JPEG})), invalid(r"key|prompt")),
    Case("msgpack-array", sends(packed([1, 2])), NOT_A_MAP),
    Case("msgpack-integer", sends(packed(42)), NOT_A_MAP),
    Case("msgpack-nil", sends(packed(None)), NOT_A_MAP),
    Case("msgpack-true", sends(packed(True)), NOT_A_MAP),
    Case("msgpack-float", sends(packed(1.5)), NOT_A_MAP),
    Case("msgpack-bin", sends(packed(b"x")), NOT_A_MAP),
    Case("json-array", sends("[]"), NOT_A_MAP),
    Case("json-string", sends('"x"'), NOT_A_MAP),
    Case("json-null", sends("null"), NOT_A_MAP),
    Case("empty-text", sends(""), invalid("frame")),
    Case("json-100-thousand-brackets", sends("[" * 100_000), invalid("frame")),
    Case("json-objects-nested-50-thousand-deep", sends('{"a":' * 50_000), invalid("frame")),
    Case("json-arrays-nested-1000-deep-and-closed", sends("[" * 1000 + "]" * 1000), invalid("frame")),
    Case("json-number-of-5000-digits", sends('{"prompt": "x", "seed": 1' + "0" * 5000 + "}"), invalid(r"frame|seed")),
    Case("json-nan-literal", sends(json_frame().replace('"width"', '"strength": NaN, "width"')), invalid("strength")),
    Case(
        "json-infinity-literal",
        sends(json_frame().replace('"width"', '"guidance_scale": -Infinity, "width"')),
        invalid("guidance_scale"),
    ),
    Case("json-lone-surrogate-in-prompt", sends(json_frame(prompt="\ud800")), invalid("prompt")),
    Case("json-image-bytes-as-text", sends(json_frame(image_url=..., image_bytes="abc")), invalid("image_bytes")),
    Case("invalid-utf8-text", sends(b"\xff\xfe", text=True), BAD_UTF8),
    Case("invalid-utf8-text-of-100-kb", sends(b'{"prompt": "' + b"\xc3\x28" * 50_000 + b'"}', text=True), BAD_UTF8),
    Case("binary-over-the-cap", sends(frame(pad=bytes(300 * 1024))), TOO_LARGE),
    Case("text-over-the-cap", sends(json.dumps({"prompt": "x" * (300 * 1024)})), TOO_LARGE),
    Case("binary-one-byte-over-the-cap", sends(frame_of_size(FRAME_CAP + 1)), TOO_LARGE),
    Case(
        "binary-of-exactly-the-cap-is-answered",
        sends(frame_of_size(FRAME_CAP)),
        Expect(result=True, lives=True, admitted=1),
    ),
    Case("binary-over-twice-the-cap", sends(frame(pad=bytes(600 * 1024))), OVER_TWICE),
    Case("text-over-twice-the-cap", sends(json.dumps({"prompt": "x" * (600 * 1024)})), OVER_TWICE),
    Case("binary-over-the-cap-in-3000-fragments", sends([bytes(100)] * 3000), TOO_LARGE),
    Case(
        "good-frame-in-1000-fragments-is-answered",
        sends(fragments(frame(), 1000)),
        Expect(result=True, lives=True, admitted=1),
    ),
    Case(
        "unknown-fields-are-ignored",
        sends(frame(evil="x", __proto__={"admin": True}, constructor=[1])),
        Expect(result=True, lives=True, admitted=1),
    ),
]

# (field, label, value, what the reason must name); every field of the input with a wrong type or value.
FIELD_VALUES: list[tuple[str, str, Any, str]] = [
    ("prompt", "integer", 5, "prompt"),
    ("prompt", "list", ["x"], "prompt"),
    ("prompt", "bytes", b"x", "prompt"),
    ("prompt", "map", {}, "prompt"),
    ("prompt", "nil", None, "prompt"),
    ("prompt", "empty", "", "prompt"),
    ("prompt", "of-100-thousand-chars", "p" * 100_000, "prompt"),
    ("image_bytes", "string", "abc", "image_bytes"),
    ("image_bytes", "integer", 7, "image_bytes"),
    ("image_bytes", "list", [b"x"], "image_bytes"),
    ("image_bytes", "empty", b"", "image_bytes"),
    ("image_bytes", "absent", ..., "image"),
    ("image_url", "integer", 7, "image"),
    ("image_url", "http-url", "http://169.254.169.254/latest/meta-data", "image"),
    ("image_url", "file-url", "file:///etc/passwd", "image"),
    ("image_url", "bad-base64", "data:image/png;base64,%%%not-base64", "image"),
    ("image_url", "empty-data-url", "data:image/png;base64,", "image"),
    ("width", "string", "64", "width"),
    ("width", "float", 64.0, "width"),
    ("width", "bool", True, "width"),
    ("width", "nil", None, "width"),
    ("width", "negative", -64, "width"),
    ("width", "zero", 0, "width"),
    ("width", "not-a-multiple-of-8", 65, "width"),
    ("width", "over-1024", 1032, "width"),
    ("width", "2-to-the-63", 2**63, "width"),
    ("height", "string", "64", "height"),
    ("height", "negative", -8, "height"),
    ("height", "list", [64], "height"),
    ("image_size", "integer", 5, "image_size"),
    ("image_size", "list", [64, 64], "image_size"),
    ("image_size", "unknown-name", "huge", "image_size"),
    ("image_size", "map-without-height", {"width": 64}, "image_size"),
    ("image_size", "map-with-string-width", {"width": "64", "height": 64}, "image_size"),
    ("image_size", "map-with-negative-height", {"width": 64, "height": -64}, "image_size"),
    ("strength", "string", "0.5", "strength"),
    ("strength", "bool", True, "strength"),
    ("strength", "nan", float("nan"), "strength"),
    ("strength", "infinity", float("inf"), "strength"),
    ("strength", "negative", -0.1, "strength"),
    ("strength", "over-one", 1.5, "strength"),
    ("num_inference_steps", "float", 2.0, "num_inference_steps"),
    ("num_inference_steps", "zero", 0, "num_inference_steps"),
    ("num_inference_steps", "nine", 9, "num_inference_steps"),
    ("num_inference_steps", "uint64-max", 2**64 - 1, "num_inference_steps"),
    ("guidance_scale", "string", "7", "guidance_scale"),
    ("guidance_scale", "nan", float("nan"), "guidance_scale"),
    ("guidance_scale", "over-20", 21, "guidance_scale"),
    ("seed", "float", 1.0, "seed"),
    ("seed", "negative", -1, "seed"),
    ("seed", "string", "1", "seed"),
    ("seed", "uint64-max", 2**64 - 1, "seed"),
    ("negative_prompt", "integer", 1, "negative_prompt"),
    ("negative_prompt", "of-100-thousand-chars", "n" * 100_000, "negative_prompt"),
    ("sync_mode", "string", "true", "sync_mode"),
    ("sync_mode", "integer", 1, "sync_mode"),
    ("output_format", "integer", 1, "output_format"),
    ("output_format", "gif", "gif", "output_format"),
    ("output_format", "path", "../../etc/passwd", "output_format"),
    ("request_id", "float", 1.5, "request_id"),
    ("request_id", "list", [1], "request_id"),
    ("request_id", "map", {"a": 1}, "request_id"),
    ("request_id", "bool", True, "request_id"),
    ("request_id", "bytes", b"id", "request_id"),
    ("request_id", "of-201-chars", "r" * 201, "request_id"),
]
FIELD_CASES = [
    Case(
        f"{name.replace('_', '-')}-{label}",
        # image_url is only read without image_bytes
        sends(frame(**{name: value}, **({"image_bytes": ...} if name == "image_url" else {}))),
        invalid(reason),
    )
    for name, label, value, reason in FIELD_VALUES
]
CASES = WHOLE_FRAMES + FIELD_CASES


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_hostile_frame_gets_a_named_error(harness: Harness, case: Case) -> None:
    await harness.check(case)
