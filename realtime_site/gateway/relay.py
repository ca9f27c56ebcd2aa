"""What the gateway counts of one relayed session: usage counters, latency and metrics.

No Channels, no sockets: the consumer hands every frame and every runner message to a
``RelayAccount``, which reads what it needs (a result's ``timings`` and ``partial``, without copying
its image; a meta message's kind) and says how to relay it. Unit-tested on its own.
"""

from __future__ import annotations

import collections
import enum
import json
import time
from dataclasses import dataclass
from typing import Any

import msgpack

from realtime_site.gateway.admission import Admission
from realtime_site.protocol import is_meta
from realtime_site.usage import metrics
from realtime_site.usage.recorder import GATEWAY_NAME, Usage

__all__ = ["Answer", "Kind", "RelayAccount", "read_answer", "usage_of"]

HEAD_BYTES = 512  # of a msgpack result: enough for every field the runner puts before ``images``


class Kind(enum.Enum):
    RESULT = "result"
    PREVIEW = "preview"  # a result marked "partial": it answers nothing yet
    ERROR = "error"  # x-fal-error
    MESSAGE = "message"  # x-fal-message of the app (timings among them)
    DROPPED = "dropped"  # the runner's report of an input its buffer displaced: for the gateway only


@dataclass(frozen=True, slots=True)
class Answer:
    kind: Kind
    inference_seconds: float = 0.0
    meta: dict[str, Any] | None = None  # an error's or a message's fields

    @property
    def error_code(self) -> str:
        return str((self.meta or {}).get("error", "UNKNOWN"))

    @property
    def action(self) -> Any:
        return (self.meta or {}).get("action")


def read_answer(message: bytes | str) -> Answer:
    """What a runner message is. Text and ``{``-binary are JSON (parsed once); other binary is a
    msgpack result, read key by key with its image skipped."""
    if isinstance(message, str) or message[:1] == b"{":
        try:
            payload = json.loads(message)
        except ValueError:
            return Answer(Kind.RESULT)
        if is_meta(payload):
            return _meta(payload)
        if not isinstance(payload, dict):
            return Answer(Kind.RESULT)
        timings = payload.get("timings")
        seconds = _seconds(timings.get("inference") if isinstance(timings, dict) else None)
        return Answer(Kind.PREVIEW if payload.get("partial") is True else Kind.RESULT, seconds)
    return _read_msgpack(message)


def _meta(payload: dict[str, Any]) -> Answer:
    if payload["type"] == "x-fal-error":
        return Answer(Kind.ERROR, meta=payload)
    return Answer(Kind.DROPPED if payload.get("action") == "dropped" else Kind.MESSAGE, meta=payload)


def _read_msgpack(message: bytes) -> Answer:
    """The runner puts ``images`` last: the fields before it are read from the message's first
    ``HEAD_BYTES`` (no copy of the image). A result laid out otherwise is read whole."""
    if len(message) > HEAD_BYTES:
        answer = _read_map(memoryview(message)[:HEAD_BYTES], whole=False)
        if answer is not None:
            return answer
    return _read_map(message, whole=True) or Answer(Kind.RESULT)


def _read_map(data: bytes | memoryview, *, whole: bool) -> Answer | None:
    """``timings`` and ``partial`` of a msgpack map; None when ``data`` (not ``whole``) ends before
    ``images`` or the map's end."""
    seconds, partial = 0.0, False
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    try:
        fields = unpacker.read_map_header()
        for index in range(fields):
            key = unpacker.unpack()
            if key == "images" and not whole:
                if index < fields - 1:
                    return None  # not the last field: read it all
                break  # the last field, and not needed
            if key == "timings":
                timings = unpacker.unpack()
                seconds = _seconds(timings.get("inference") if isinstance(timings, dict) else None)
            elif key == "partial":
                partial = unpacker.unpack() is True
            else:
                unpacker.skip()
    except msgpack.OutOfData:
        if not whole:
            return None
    except (ValueError, msgpack.UnpackException):
        pass
    return Answer(Kind.PREVIEW if partial else Kind.RESULT, seconds)


def _seconds(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def usage_of(admission: Admission, scope: dict[str, Any]) -> Usage:
    """The counters of an admitted connection, with who it is, from where, and through which gateway."""
    headers = dict(scope.get("headers", []))
    client = scope.get("client") or ("", 0)
    return Usage(
        user_id=admission.user.pk,
        app=admission.app_id,
        auth_method=admission.auth_method,
        api_key_id=admission.api_key_id,
        key_id=admission.key_id,
        token_id=admission.token_id,
        username=admission.user.get_username(),
        client_address=str(client[0]),
        user_agent=headers.get(b"user-agent", b"").decode("latin-1"),
        gateway=GATEWAY_NAME,
    )


class RelayAccount:
    """One connection's counters. Inputs are numbered as the runner numbers them (from 1 in each
    runner session), so the runner's ``dropped`` report names the input its buffer removed."""

    def __init__(self, usage: Usage) -> None:
        self.usage = usage
        app = usage.app
        self._frames, self._results = metrics.FRAMES.labels(app), metrics.RESULTS.labels(app)
        self._latency = metrics.LATENCY.labels(app)
        self._slow_drops = metrics.SLOW_CLIENT_DROPS.labels(app)
        self.pending: collections.OrderedDict[int, float] = collections.OrderedDict()  # input -> arrival
        self._sent = 0  # inputs sent in this runner session

    def frame_in(self, size: int) -> None:
        """A frame from the client, relayed or not."""
        self.usage.frames_in += 1
        self.usage.bytes_in += size
        self._frames.inc()

    def relayed(self) -> None:
        """The frame went to the runner: its answer is awaited."""
        self._sent += 1
        self.pending[self._sent] = time.perf_counter()

    def runner_session_ended(self) -> None:
        """The inputs in the runner's hands are lost with it; the next session numbers from 1."""
        self.pending.clear()
        self._sent = 0

    def answer(self, message: bytes | str) -> Answer:
        """Count one message from the runner; the consumer relays it as its kind says."""
        answer = read_answer(message)
        if answer.kind is Kind.DROPPED:
            self.usage.frames_dropped += 1
            self._forget(answer.meta)
            return answer
        self.usage.bytes_out += len(message)
        if answer.kind is Kind.RESULT:
            self.usage.results_out += 1
            self.usage.inference_seconds += answer.inference_seconds
            self._answered_oldest()
        elif answer.kind is Kind.ERROR:
            self.error(answer.error_code)
            if self.pending:  # a refused input is answered as soon as it arrives: the newest
                self.pending.popitem(last=True)
        return answer

    def error(self, code: str) -> None:
        """An error told to the client (the runner's or the gateway's own)."""
        self.usage.errors[code] += 1
        metrics.ERRORS.labels(self.usage.app, code).inc()

    def result_dropped_for_a_slow_reader(self) -> None:
        self.usage.frames_dropped += 1
        self._slow_drops.inc()

    def _answered_oldest(self) -> None:
        if not self.pending:
            return
        _, arrived = self.pending.popitem(last=False)
        seconds = time.perf_counter() - arrived
        self.usage.latency_buckets[metrics.bucket_index(seconds * 1000)] += 1
        self._latency.observe(seconds)
        self._results.inc()

    def _forget(self, meta: dict[str, Any] | None) -> None:
        """The dropped input, by the number the runner gives (else the second oldest, as its buffer
        drops the oldest waiting while one is in inference)."""
        number = (meta or {}).get("input")
        if isinstance(number, int) and number in self.pending:
            del self.pending[number]
        elif len(self.pending) >= 2:
            del self.pending[list(self.pending)[1]]
        elif self.pending:
            self.pending.popitem(last=False)
