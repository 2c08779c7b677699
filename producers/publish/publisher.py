"""Publishing GopChunks to floodlight.gops: framed Avro, partition rule of DESIGN §4, acks=all.

`publish_gops` is the simple blocking form (tests, benches, replays). The agent uses
`GopPublisher`, which puts a bounded buffer between capture and Kafka (see its doc).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from floodlight.kafka import MAX_MESSAGE_BYTES, dead_letter, make_producer
from floodlight.partitioner import gop_partition
from floodlight.settings import Settings
from schemas import codec
from schemas.errors import FloodlightError

log = logging.getLogger("producers.publish.publisher")


class PublishError(FloodlightError, RuntimeError):
    """A GOP was not acknowledged by the broker."""


def topic_partitions(producer: Producer, topic: str, timeout: float = 10.0) -> int:
    md = producer.list_topics(topic, timeout=timeout)
    t = md.topics.get(topic)
    if t is None or t.error is not None or not t.partitions:
        raise PublishError(f"topic {topic} is missing ({t.error if t is not None else 'no metadata'});"
                           " run `floodlight topics create`")
    return len(t.partitions)


def frame_gop(gop: dict[str, Any], published_ms: int | None = None) -> bytes:
    """Framed GopChunk bytes, stamped with the hand-over time to Kafka."""
    rec = dict(gop)
    rec["published_wallclock_ms"] = int(time.time() * 1000) if published_ms is None else published_ms
    return codec.encode("GopChunk", rec)


def publish_gops(settings: Settings, gops: Iterable[dict[str, Any]], producer: Producer | None = None,
                 timeout: float = 60.0) -> list[tuple[int, int]]:
    """Publish GopChunk dicts and wait until every one is acknowledged; return (partition, offset) each.

    Raises PublishError if any GOP is not acknowledged within `timeout`.
    """
    own = producer is None
    p = producer or make_producer(settings)
    topic = settings.topic("gops")
    parts = topic_partitions(p, topic)
    results: list[tuple[int, int] | None] = []
    errors: list[str] = []

    def on_delivery(slot: int) -> Callable[[KafkaError | None, Message], None]:
        def cb(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                results[slot] = (msg.partition(), msg.offset())
        return cb

    for gop in gops:
        results.append(None)
        value = frame_gop(gop)
        part = gop_partition(gop["stream_id"], gop["gop_index"], parts)
        while True:
            try:
                p.produce(topic, key=gop["stream_id"].encode(), value=value, partition=part,
                          on_delivery=on_delivery(len(results) - 1))
                break
            except BufferError:
                p.poll(0.1)
    end = time.monotonic() + timeout
    while any(r is None for r in results) and not errors and time.monotonic() < end:
        p.flush(min(1.0, max(0.0, end - time.monotonic())))
    if own:
        p.flush(1)
    if errors or any(r is None for r in results):
        missing = sum(1 for r in results if r is None)
        raise PublishError(f"{missing} of {len(results)} GOPs not acknowledged: {errors[:3]}")
    return [r for r in results if r is not None]


class GopPublisher:
    """Bounded buffer between capture and Kafka, drained by its own thread.

    Capture never blocks: `submit` appends and returns. When the broker is slow or down the buffer
    grows up to `buffer_seconds` of media; beyond that the oldest GOPs are dropped (counted and
    logged). Once the broker answers again the buffer drains in order. Up to `max_in_flight` GOPs
    are handed to librdkafka at a time, so a broker outage never pushes more than that into its
    queue (librdkafka retries those itself, idempotently, until message.timeout.ms).
    """

    def __init__(self, settings: Settings, buffer_seconds: float | None = None, max_in_flight: int = 4,
                 on_published: Callable[[dict[str, Any], float], None] | None = None,
                 on_dropped: Callable[[dict[str, Any]], None] | None = None,
                 on_dead_letter: Callable[[dict[str, Any], str], None] | None = None,
                 producer: Producer | None = None) -> None:
        self.settings = settings
        self.buffer_seconds = settings.ingest_buffer_seconds if buffer_seconds is None else buffer_seconds
        self.max_in_flight = max_in_flight
        # message.timeout.ms 0 = retry forever: a GOP handed over is never given up while the agent runs
        self.producer = producer or make_producer(settings, **{"message.timeout.ms": 0})
        self.topic = settings.topic("gops")
        self.on_published = on_published or (lambda gop, latency: None)
        self.on_dropped = on_dropped or (lambda gop: None)
        self.on_dead_letter = on_dead_letter or (lambda gop, reason: None)
        self.dead_lettered = 0
        self._queue: deque[dict[str, Any]] = deque()
        self._cv = threading.Condition()
        self._in_flight = 0
        self._stop = False
        self._partitions: int | None = None
        self.published = 0
        self.dropped = 0
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="gop-publisher", daemon=True)

    # --- capture side ---------------------------------------------------------------------------
    def start(self) -> GopPublisher:
        self._thread.start()
        return self

    def submit(self, gop: dict[str, Any]) -> None:
        with self._cv:
            self._queue.append(gop)
            while len(self._queue) > 1 and self._buffered_seconds_locked() > self.buffer_seconds:
                old = self._queue.popleft()
                self.dropped += 1
                log.warning("buffer full: dropped oldest GOP", extra={
                    "stream_id": old["stream_id"], "gop_index": old["gop_index"],
                    "buffer_seconds": self.buffer_seconds})
                self.on_dropped(old)
            self._cv.notify_all()

    def queued(self) -> int:
        with self._cv:
            return len(self._queue)

    def buffered_seconds(self) -> float:
        with self._cv:
            return self._buffered_seconds_locked()

    def _buffered_seconds_locked(self) -> float:
        return sum(g["duration"] * g["time_base_num"] / g["time_base_den"] for g in self._queue)

    def drain(self, timeout: float) -> bool:
        """Wait until everything submitted is acknowledged (or dropped)."""
        end = time.monotonic() + timeout
        with self._cv:
            while (self._queue or self._in_flight) and time.monotonic() < end:
                self._cv.wait(0.1)
            return not self._queue and not self._in_flight

    def close(self, timeout: float = 10.0) -> bool:
        ok = self.drain(timeout)
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(timeout=5)
        self.producer.flush(1)
        return ok

    # --- publishing thread ------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stop and (not self._queue or self._in_flight >= self.max_in_flight):
                    self._cv.wait(0.05)
                    if self._in_flight:
                        break
                if self._stop:
                    return
                gop = self._queue.popleft() if self._queue and self._in_flight < self.max_in_flight else None
                if gop is not None:
                    self._in_flight += 1
            if gop is not None:
                self._produce(gop)
            self.producer.poll(0.05)

    def _produce(self, gop: dict[str, Any]) -> None:
        if self._partitions is None:
            while self._partitions is None:
                try:
                    self._partitions = topic_partitions(self.producer, self.topic, timeout=5)
                except Exception as exc:  # noqa: BLE001 - broker down at start: keep trying
                    log.warning("no metadata for gops topic yet", extra={"error": str(exc)})
                    with self._cv:
                        if self._stop:
                            return
        handed = time.monotonic()
        value = frame_gop(gop)
        part = gop_partition(gop["stream_id"], gop["gop_index"], self._partitions)
        if len(value) > MAX_MESSAGE_BYTES - 4096:
            self._dead_letter(gop, None, f"GOP of {len(value)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte message "
                                         "limit; lower the contribution bitrate or the GOP length", "oversized")
            return

        def cb(err: KafkaError | None, msg: Message) -> None:
            if err is not None and not err.retriable():
                self._dead_letter(gop, value, f"publish failed: {err}", "publish")
                return
            with self._cv:
                self._in_flight -= 1
                if err is not None:
                    # retriable errors normally stay inside librdkafka (message.timeout.ms=0): requeue, keep order
                    self.errors += 1
                    self._queue.appendleft(gop)
                    log.error("publish failed, will retry", extra={
                        "stream_id": gop["stream_id"], "gop_index": gop["gop_index"], "error": str(err)})
                else:
                    self.published += 1
                self._cv.notify_all()
            if err is None:
                self.on_published(gop, time.monotonic() - handed)

        while True:
            try:
                self.producer.produce(self.topic, key=gop["stream_id"].encode(), value=value, partition=part,
                                      on_delivery=cb)
                return
            except BufferError:
                self.producer.poll(0.1)
            except KafkaException as exc:  # refused locally (size, config): never retried
                self._dead_letter(gop, value, f"publish refused: {exc}", "publish")
                return

    def dead_letter_dropped(self, stream_id: str, gop_index: int | None, reason: str) -> None:
        """A GOP the chunker dropped before it was whole (over the size or duration cap): a dead letter
        with the reason and no bytes, beside the GOPs Kafka refused (`floodlight dlq list` shows both)."""
        try:
            dead_letter(self.producer, self.settings, None, reason=reason, error_class="oversized", stage="ingest",
                        stream_id=stream_id, gop_index=gop_index, key=stream_id.encode())
        except Exception as exc:  # noqa: BLE001 - the dlq is best effort; the stream goes on
            log.error("dead letter failed", extra={"stream_id": stream_id, "error": str(exc)})
        with self._cv:
            self.dead_lettered += 1

    def _dead_letter(self, gop: dict[str, Any], value: bytes | None, reason: str, error_class: str) -> None:
        """A GOP Kafka will never take: record it on the dlq (bytes too, when they fit) and go on."""
        log.error("GOP dead-lettered: %s", reason, extra={"stream_id": gop["stream_id"],
                                                         "gop_index": gop["gop_index"]})
        try:
            fits = value is not None and len(value) < MAX_MESSAGE_BYTES - 4096
            dead_letter(self.producer, self.settings, None, reason=reason, error_class=error_class, stage="ingest",
                        stream_id=gop["stream_id"], gop_index=gop["gop_index"], key=gop["stream_id"].encode(),
                        value=value if fits else None)
        except Exception as exc:  # noqa: BLE001 - the dlq is best effort; the stream goes on
            log.error("dead letter failed", extra={"stream_id": gop["stream_id"], "error": str(exc)})
        with self._cv:
            self._in_flight -= 1
            self.dead_lettered += 1
            self._cv.notify_all()
        self.on_dead_letter(gop, reason)
