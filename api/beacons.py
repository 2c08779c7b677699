"""POST /api/v1/qoe/beacons: validate a batch of player QoE beacons and hand them to Kafka.

Each beacon is checked against the QoeBeacon schema on its own: bad ones are reported back by
index, good ones are produced to floodlight.qoe (key session_id) and the answer waits for the
broker's acknowledgement of the whole batch (acks=all), so an accepted beacon is durable: an api
killed right after answering loses none (DESIGN §10). A batch the broker does not acknowledge within
FLOODLIGHT_API_BEACON_ACK_TIMEOUT_S is answered 503 with Retry-After; the player keeps it and retries
(at-least-once: a retry after a late ack can duplicate). A token bucket per session bounds what one
client can push.

Hostile bodies (issue 13): the size limit is enforced while the body is read, not after; a body
nested too deeply for the JSON parser, or text that is not valid Unicode (a lone surrogate), is a
4xx like any other bad input; the whole batch is validated and encoded before the first beacon is
produced, so a beacon that fails late can never leave earlier ones of its batch produced (which a
retry of the batch would then duplicate).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api import metrics
from floodlight.ids import is_stream_id
from floodlight.kafka import make_producer
from floodlight.settings import Settings
from schemas import codec

log = logging.getLogger("api.beacons")
MAX_BATCH = 100
MAX_BODY_BYTES = 256 * 1024
BURST = 100.0
router = APIRouter(tags=["qoe"])

# (type, nullable, default or _REQUIRED), from schemas/QoeBeacon.avsc
_REQUIRED = object()
_LIMITS = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


def _beacon_fields() -> list[tuple[str, str, bool, Any]]:
    schema = json.loads((codec.SCHEMA_DIR / "QoeBeacon.avsc").read_text())
    out = []
    for f in schema["fields"]:
        t = f["type"]
        nullable = isinstance(t, list)
        base = [x for x in t if x != "null"][0] if nullable else t
        out.append((f["name"], base, nullable, f.get("default", _REQUIRED)))
    return out


FIELDS = _beacon_fields()
NON_NEGATIVE = {"buffer_events", "stall_ms", "bytes_downloaded", "startup_ms", "bitrate_kbps",
                "dropped_frames", "watch_ms", "event_time"}


def validate_beacon(raw: Any) -> dict[str, Any]:
    """A complete QoeBeacon dict, or ValueError naming the first problem."""
    if not isinstance(raw, dict):
        raise ValueError("beacon must be a JSON object")
    out: dict[str, Any] = {}
    for name, typ, nullable, default in FIELDS:
        if name not in raw or (raw[name] is None and not nullable and default is not _REQUIRED):
            if default is _REQUIRED:
                raise ValueError(f"missing required field {name!r}")
            out[name] = default
            continue
        v = raw[name]
        if v is None:
            if not nullable:
                raise ValueError(f"{name!r} must not be null")
            out[name] = None
            continue
        if typ in ("int", "long"):
            if isinstance(v, bool) or not isinstance(v, int):
                if isinstance(v, float) and v.is_integer():
                    v = int(v)
                else:
                    raise ValueError(f"{name!r} must be an integer")
            lo, hi = _LIMITS[typ]
            if not lo <= v <= hi:
                raise ValueError(f"{name!r} out of range for {typ}")
            if name in NON_NEGATIVE and v < 0:
                raise ValueError(f"{name!r} must be >= 0")
        elif typ == "string":
            if not isinstance(v, str):
                raise ValueError(f"{name!r} must be a string")
            if len(v) > 256:
                raise ValueError(f"{name!r} longer than 256 characters")
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as exc:  # a lone surrogate ("\ud800") JSON lets through
                raise ValueError(f"{name!r} is not valid Unicode text") from exc
        out[name] = v
    if not is_stream_id(out["stream_id"]):
        raise ValueError("'stream_id' is not a valid stream id")
    if not out["session_id"]:
        raise ValueError("'session_id' must not be empty")
    return out


class SessionRateLimiter:
    """Token bucket per session id: `rate` beacons/s, bursts up to BURST."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, session_id: str) -> bool:
        now = self.clock()
        tokens, last = self._buckets.get(session_id, (BURST, now))
        tokens = min(BURST, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[session_id] = (tokens, now)
            return False
        self._buckets[session_id] = (tokens - 1.0, now)
        if len(self._buckets) > 200_000:  # forget idle sessions (a full bucket is the default anyway)
            horizon = now - BURST / max(self.rate, 0.001)
            self._buckets = {k: v for k, v in self._buckets.items() if v[1] > horizon}
        return True


class _BatchAck:
    """Counts one batch's delivery reports (all on the producer's poll thread) and settles one future."""

    __slots__ = ("errors", "future", "loop", "pending")

    def __init__(self, loop: asyncio.AbstractEventLoop, n: int) -> None:
        self.loop, self.pending = loop, n
        self.future: asyncio.Future[list[str | None]] = loop.create_future()
        self.errors: list[str | None] = [None] * n

    def report(self, index: int, err: Any) -> None:
        if err is not None:
            self.errors[index] = f"not stored: {err}"
        self.pending -= 1
        if self.pending == 0:
            self.loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        if not self.future.done():
            self.future.set_result(self.errors)


class BeaconSink:
    """A producer to floodlight.qoe; a thread serves its delivery callbacks, and `deliver` lets the
    request handler wait for a whole batch's acknowledgement with one wake-up per batch."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topic("qoe")
        self.ack_timeout_s = settings.api_beacon_ack_timeout_s
        self.producer = make_producer(settings, **{"linger.ms": 5, "queue.buffering.max.messages": 500_000,
                                                   "message.timeout.ms": int(self.ack_timeout_s * 1000),
                                                   "log_level": 3})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="beacon-producer", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.1)

    @staticmethod
    def _delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            metrics.BEACONS.labels("lost").inc()
            log.warning("beacon delivery failed", extra={"error": str(err)})

    @staticmethod
    def frame(beacon: dict[str, Any]) -> tuple[bytes, bytes]:
        """(key, value) of a validated beacon; ValueError if it cannot be encoded."""
        try:
            return beacon["session_id"].encode("utf-8"), codec.encode("QoeBeacon", beacon)
        except (ValueError, TypeError, OverflowError, UnicodeEncodeError) as exc:
            raise ValueError(f"beacon cannot be encoded: {exc}") from exc

    def send(self, beacon: dict[str, Any]) -> None:
        """Queue one beacon; BufferError when the local queue is full."""
        self.send_framed(*self.frame(beacon))

    def send_framed(self, key: bytes, value: bytes) -> None:
        """Queue one beacon already framed by `frame`; BufferError when the local queue is full."""
        self.producer.produce(self.topic, key=key, value=value, on_delivery=self._delivered)

    async def deliver(self, batch: list[tuple[bytes, bytes]]) -> list[str | None]:
        """Produce a batch and wait until the broker has acknowledged every beacon of it: per beacon None
        (stored) or the reason it was not. Raises TimeoutError if the acks do not come in time."""
        if not batch:
            return []
        ack = _BatchAck(asyncio.get_running_loop(), len(batch))
        for i, (key, value) in enumerate(batch):
            def done(err: Any, _msg: Any, i: int = i) -> None:
                if err is not None:
                    self._delivered(err, _msg)
                ack.report(i, err)
            try:
                self.producer.produce(self.topic, key=key, value=value, on_delivery=done)
            except BufferError:
                ack.report(i, "overloaded, retry later")
        return await asyncio.wait_for(asyncio.shield(ack.future), self.ack_timeout_s + 1.0)

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.producer.flush(timeout)


async def read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it is known to be longer than `limit` bytes (a declared
    Content-Length over the limit is refused before reading; a streamed body is cut off at the limit)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                return None
        except ValueError:
            return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/api/v1/qoe/beacons",
    summary="Submit a batch of QoE beacons",
    responses={
        200: {"description": "All beacons accepted", "content": {"application/json": {
            "example": {"accepted": 2, "rejected": []}}}},
        207: {"description": "Some beacons rejected (by index), the rest accepted", "content": {
            "application/json": {"example": {"accepted": 1, "rejected": [
                {"index": 1, "error": "missing required field 'session_id'"}]}}}},
        400: {"description": "Body is not JSON"},
        413: {"description": "Body too large"},
        422: {"description": "No beacon in the batch is valid, or the batch holds more than 100"},
        429: {"description": "Every beacon was over its session's rate limit"},
    },
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"type": "object", "required": ["beacons"], "properties": {
            "beacons": {"type": "array", "maxItems": MAX_BATCH, "items": {"type": "object"}}}},
        "example": {"beacons": [{
            "event_time": 1795000000000, "stream_id": "demo", "session_id": "s-1f2e", "device_type": "web",
            "quality": "720p", "buffer_events": 0, "stall_ms": 0, "bytes_downloaded": 1250000,
            "latency_ms": 2400, "bitrate_kbps": 4000, "event_type": "heartbeat", "watch_ms": 10000}]},
    }}}},
)
async def post_beacons(request: Request) -> JSONResponse:
    """Accepts `{"beacons": [...]}` or a bare JSON array (navigator.sendBeacon sends text/plain)."""
    ctx = request.app.state.ctx
    body = await read_body(request, MAX_BODY_BYTES)
    if body is None:  # and close the connection: the server would otherwise drain the rest of the body
        return JSONResponse({"detail": f"body larger than {MAX_BODY_BYTES} bytes"}, 413,
                            headers={"Connection": "close"})
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deeply
        return JSONResponse({"detail": "body is not JSON (or is nested too deeply)"}, 400)
    items = payload.get("beacons") if isinstance(payload, dict) else payload
    if not isinstance(items, list):
        return JSONResponse({"detail": "expected {\"beacons\": [...]} or a JSON array"}, 422)
    if len(items) > MAX_BATCH:
        return JSONResponse({"detail": f"at most {MAX_BATCH} beacons per batch, got {len(items)}"}, 422)
    rejected: list[dict[str, Any]] = []
    limited = 0
    framed: list[tuple[int, bytes, bytes]] = []
    for i, raw in enumerate(items):  # 1. validate and encode the whole batch; nothing is produced yet
        try:
            key, value = BeaconSink.frame(validate_beacon(raw))
        except ValueError as exc:
            rejected.append({"index": i, "error": str(exc)})
            metrics.BEACONS.labels("invalid").inc()
            continue
        framed.append((i, key, value))
    admitted = []
    for i, key, value in framed:  # 2. the rate limit, for valid beacons only
        if not ctx.beacon_limiter.allow(key.decode("utf-8")):
            rejected.append({"index": i, "error": "rate limited"})
            limited += 1
            metrics.BEACONS.labels("rate_limited").inc()
            continue
        admitted.append((i, key, value))
    accepted = 0
    try:  # 3. produce and wait for the broker's acks: an accepted beacon is a durable beacon
        errors = await ctx.beacons.deliver([(key, value) for _i, key, value in admitted])
    except TimeoutError:
        metrics.BEACONS.labels("unacknowledged").inc(len(admitted))
        log.warning("beacon batch not acknowledged in time", extra={"count": len(admitted)})
        return JSONResponse({"detail": "the batch was not stored in time; retry it", "accepted": 0,
                             "rejected": rejected}, 503, headers={"Retry-After": "2"})
    unstored = 0
    for (i, _key, _value), error in zip(admitted, errors, strict=True):
        if error is None:
            accepted += 1
            continue
        unstored += 1
        rejected.append({"index": i, "error": error})
        if error.startswith("overloaded"):  # a lost one was counted by its delivery report
            metrics.BEACONS.labels("overloaded").inc()
    rejected.sort(key=lambda r: r["index"])
    metrics.BEACONS.labels("accepted").inc(accepted)
    if rejected:
        log.info("beacons rejected", extra={"count": len(rejected), "first": rejected[0]["error"]})
    status = 200
    if unstored and not accepted:
        return JSONResponse({"accepted": 0, "rejected": rejected}, 503, headers={"Retry-After": "2"})
    if rejected and accepted:
        status = 207
    elif rejected and limited == len(rejected):
        status = 429
    elif rejected:
        status = 422
    return JSONResponse({"accepted": accepted, "rejected": rejected}, status)
