"""The image apps' inputs, validated field by field, and their results."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from realtime_site.protocol.errors import ValidationError
from realtime_site.protocol.frames import Encoding

PROMPT_MAX_CHARS = 2000
SIZE_RANGE = (64, 1024)
SEED_MAX = 2**32 - 1
TRANSITION_FRAMES_MAX = 60  # prompt and seed travel: at most this many frames from one to the next

# fal's named image sizes.
NAMED_SIZES: dict[str, tuple[int, int]] = {
    "square": (512, 512),
    "square_hd": (1024, 1024),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
OUTPUT_FORMATS = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
_DATA_URL = re.compile(r"^data:image/(png|jpeg|jpg|webp);base64,", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """One validated input for the image apps."""

    prompt: str
    image: bytes
    width: int
    height: int
    strength: float = 0.5
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None
    negative_prompt: str = ""
    sync_mode: bool = False
    output_format: str = "jpeg"
    request_id: str | int | None = None
    # ControlNet (the diffusion apps that have one): the lines to follow, when not the input picture.
    control_image: bytes | None = None
    controlnet_conditioning_scale: float | None = None
    control_guidance_end: float | None = None
    # Travel between a session's frames: over how many frames a new prompt or seed is reached.
    prompt_transition_frames: int = 0
    seed_transition_frames: int = 0
    # Set by the runner's session (travel.Travel), never read from the wire: the weighted prompts
    # ((prompt, negative), weight) and seeds (seed, coefficient) this frame is made of; empty: just
    # ``prompt`` and the seed it is run with.
    prompt_blend: tuple[tuple[tuple[str, str], float], ...] = ()
    seed_blend: tuple[tuple[int, float], ...] = ()


def request_id_of(frame: dict[str, Any]) -> str | int | None:
    """The frame's ``request_id`` when it is one we can echo, else None."""
    rid = frame.get("request_id")
    if isinstance(rid, bool) or not isinstance(rid, (str, int)):
        return None
    if isinstance(rid, str) and (len(rid) > 200 or (not rid.isascii() and not _encodable(rid))):
        return None
    return rid


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_request(frame: dict[str, Any], *, encoding: Encoding) -> ImageRequest:
    """Validate an input frame. Unknown fields are ignored; errors name the field."""
    rid = request_id_of(frame)
    try:
        return _parse(frame, encoding, rid)
    except ValidationError as exc:
        exc.request_id = rid
        raise


def _parse(frame: dict[str, Any], encoding: Encoding, rid: str | int | None) -> ImageRequest:
    if "request_id" in frame and frame["request_id"] is not None and rid is None:
        raise ValidationError("request_id", "must be a string of at most 200 characters or an integer")
    prompt = frame.get("prompt")
    if prompt is None:
        raise ValidationError("prompt", "is required")
    if not isinstance(prompt, str):
        raise ValidationError("prompt", f"must be a string, got {type(prompt).__name__}")
    if not 1 <= len(prompt) <= PROMPT_MAX_CHARS:
        raise ValidationError("prompt", f"must be 1 to {PROMPT_MAX_CHARS} characters, got {len(prompt)}")
    _unicode(prompt, "prompt")
    negative = frame.get("negative_prompt", "")
    if negative is None:
        negative = ""
    if not isinstance(negative, str) or len(negative) > PROMPT_MAX_CHARS:
        raise ValidationError("negative_prompt", f"must be a string of at most {PROMPT_MAX_CHARS} characters")
    _unicode(negative, "negative_prompt")
    width, height = _parse_size(frame)
    output_format = frame.get("output_format", "jpeg")
    if output_format not in OUTPUT_FORMATS:
        raise ValidationError("output_format", f"must be one of {', '.join(OUTPUT_FORMATS)}, got {output_format!r}")
    sync_mode = frame.get("sync_mode", False)
    if not isinstance(sync_mode, bool):
        raise ValidationError("sync_mode", "must be true or false")
    return ImageRequest(
        prompt=prompt,
        image=_parse_image(frame, encoding),
        width=width,
        height=height,
        strength=_number(frame, "strength", 0.0, 1.0, default=0.5),
        num_inference_steps=_integer(frame, "num_inference_steps", 1, 8),
        guidance_scale=_number(frame, "guidance_scale", 0.0, 20.0, default=None),
        seed=_integer(frame, "seed", 0, SEED_MAX),
        negative_prompt=negative,
        sync_mode=sync_mode,
        output_format=output_format,
        request_id=rid,
        control_image=_parse_control_image(frame, encoding),
        controlnet_conditioning_scale=_number(frame, "controlnet_conditioning_scale", 0.0, 2.0, default=None),
        control_guidance_end=_guidance_end(frame),
        prompt_transition_frames=_integer(frame, "prompt_transition_frames", 0, TRANSITION_FRAMES_MAX) or 0,
        seed_transition_frames=_integer(frame, "seed_transition_frames", 0, TRANSITION_FRAMES_MAX) or 0,
    )


def _unicode(text: str, field: str) -> None:
    """JSON's ``\\ud800`` escapes give strings that no encoder takes back (a lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(field, f"holds an unpaired surrogate at character {exc.start}") from None


def _parse_image(frame: dict[str, Any], encoding: Encoding) -> bytes:
    """The input picture: ``image_bytes`` or ``image`` as binary, else ``image_url`` or ``image`` as a
    data URL (fal-swift's camera sample sends its picture as ``image`` bytes)."""
    for name in ("image_bytes", "image"):
        raw = frame.get(name)
        if isinstance(raw, (bytes, bytearray, memoryview)):
            if not raw:
                raise ValidationError(name, "is empty")
            return bytes(raw)
        if raw is not None and not (name == "image" and isinstance(raw, str)):
            hint = "; JSON frames carry images in image_url" if encoding.is_json else ""
            raise ValidationError(name, f"must be binary, got {type(raw).__name__}{hint}")
    for name in ("image_url", "image"):
        url = frame.get(name)
        if url is not None:
            return data_url_bytes(url, name)
    raise ValidationError("image", "one of image_bytes, image_url and image is required")


def _guidance_end(frame: dict[str, Any]) -> float | None:
    end = _number(frame, "control_guidance_end", 0.0, 1.0, default=None)
    if end == 0:  # diffusers refuses an end at the start; scale 0 is how the ControlNet is turned off
        raise ValidationError(
            "control_guidance_end", "must be above 0 (to turn the ControlNet off, send controlnet_conditioning_scale 0)"
        )
    return end


def _parse_control_image(frame: dict[str, Any], encoding: Encoding) -> bytes | None:
    """ControlNet's own picture: ``control_image_bytes`` as binary, or ``control_image_url``, a data URL."""
    raw = frame.get("control_image_bytes")
    if raw is not None:
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            hint = "; JSON frames carry images in control_image_url" if encoding.is_json else ""
            raise ValidationError("control_image_bytes", f"must be binary, got {type(raw).__name__}{hint}")
        if not raw:
            raise ValidationError("control_image_bytes", "is empty")
        return bytes(raw)
    url = frame.get("control_image_url")
    return None if url is None else data_url_bytes(url, "control_image_url")


def data_url_bytes(url: object, name: str) -> bytes:
    """The picture in a ``data:image/...;base64,`` URL, or ``ValidationError`` naming ``name``."""
    if not isinstance(url, str):
        raise ValidationError(name, f"must be a string, got {type(url).__name__}")
    match = _DATA_URL.match(url)
    if not match:
        raise ValidationError(name, "must be a data:image/(png|jpeg|webp);base64, URL")
    try:
        data = base64.b64decode(url[match.end() :], validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError(name, "is not valid base64") from None
    if not data:
        raise ValidationError(name, "holds no image data")
    return data


def _parse_size(frame: dict[str, Any]) -> tuple[int, int]:
    size = frame.get("image_size")
    if size is not None:
        if isinstance(size, str):
            if size not in NAMED_SIZES:
                names = ", ".join(NAMED_SIZES)
                raise ValidationError("image_size", f"unknown size {size!r}; use one of {names} or {{width, height}}")
            return NAMED_SIZES[size]
        if isinstance(size, dict):
            return _dimension(size, "width", "image_size.width"), _dimension(size, "height", "image_size.height")
        raise ValidationError("image_size", "must be a size name or a map with width and height")
    if "width" in frame or "height" in frame:
        return _dimension(frame, "width", "width"), _dimension(frame, "height", "height")
    return 512, 512


def _dimension(source: dict[str, Any], key: str, field: str) -> int:
    low, high = SIZE_RANGE
    value = source.get(key)
    if value is None:
        raise ValidationError(field, "is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, f"must be an integer, got {type(value).__name__}")
    if not low <= value <= high or value % 8:
        raise ValidationError(field, f"must be a multiple of 8 from {low} to {high}, got {value}")
    return value


def _number(frame: dict[str, Any], key: str, low: float, high: float, *, default: float | None) -> Any:
    value = frame.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(key, f"must be a number, got {type(value).__name__}")
    if not low <= value <= high:  # also false for NaN
        raise ValidationError(key, f"must be from {low:g} to {high:g}, got {value!r}")
    return float(value)


def _integer(frame: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = frame.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(key, f"must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValidationError(key, f"must be from {low} to {high}, got {value}")
    return value


def result_payload(
    request: ImageRequest,
    *,
    image: bytes,
    width: int,
    height: int,
    content_type: str,
    seed: int,
    inference_seconds: float,
    encoding: Encoding,
    step: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """The result map. JSON has no bytes, so text frames always get a data URL. A preview (``step`` is
    ``(step, steps)``) is a result marked ``"partial": true``; the final result has no ``partial``."""
    entry: dict[str, Any] = {"width": width, "height": height, "content_type": content_type}
    if request.sync_mode or encoding.is_json:
        entry["url"] = f"data:{content_type};base64,{base64.b64encode(image).decode('ascii')}"
    else:
        entry["content"] = image
    payload: dict[str, Any] = {"seed": seed, "timings": {"inference": round(inference_seconds, 6)}}
    if step is not None:
        payload.update(partial=True, step=step[0], steps=step[1])
    if request.request_id is not None:
        payload["request_id"] = request.request_id
    payload["images"] = [entry]  # last: a relay reads the small fields without the image's bytes
    return payload
