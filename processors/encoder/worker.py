"""The encoder consumer group member: floodlight.gops -> transcode -> floodlight.segments.

At-least-once in, effectively-once out (DESIGN 3.5): a GOP's offset is committed only after every
one of its RenditionSegments (or its DeadLetter) is acknowledged, and only once every earlier GOP of
the partition is done too. Duplicates of (stream_id, gop_index) — backup ingest, redelivery after a
rebalance — share a partition (floodlight.partitioner), so one member sees them all and drops them
within a bounded window. Transcoding runs in worker threads; the Kafka client lives on the main
thread (poll, produce, commit), so nothing CPU-bound ever blocks a consumer callback for long.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from floodlight.kafka import dead_letter, make_consumer, make_producer
from floodlight.registry import DEFAULT_LADDER, RegistryView, ladder_of
from floodlight.settings import Settings
from processors.encoder import metrics as m
from processors.encoder.dedup import OffsetTracker, SeenWindow
from processors.encoder.ladder import part_seconds_for, preset_for
from processors.encoder.transcode import RungTiming, TranscodeError, transcode_gop
from schemas import codec

log = logging.getLogger("floodlight.encoder")
MAX_PUBLISH_ATTEMPTS = 5


def group_id_for(settings: Settings, group: str | None, renditions: set[str] | None) -> str:
    """A member encoding only some rungs must not share partitions with full-ladder members."""
    if group:
        return group
    if renditions is None:
        return settings.encoder_group
    return f"{settings.encoder_group}-{'-'.join(sorted(renditions))}"


def parse_renditions(value: str | None) -> set[str] | None:
    if not value or value.strip().lower() == "all":
        return None
    names = {v.strip() for v in value.split(",") if v.strip()}
    if not names:
        raise ValueError("--renditions needs 'all' or a comma-separated list of rung names")
    return names


@dataclass(eq=False)
class Job:
    """One GOP message taken from a partition, from poll to commit."""

    partition: int
    offset: int
    msg: Message
    identity: tuple[str, int] | None = None
    gop: dict[str, Any] | None = None
    future: Future | None = None
    timing: RungTiming = field(default_factory=RungTiming)
    started: float = field(default_factory=time.perf_counter)
    pending_acks: int = 0
    failed: bool = False
    duplicates: list[Job] = field(default_factory=list)


class EncoderWorker:
    """One member of the encoder group. `run()` blocks until `stop()` (or the stop event) is set."""

    def __init__(self, settings: Settings, *, group: str | None = None, renditions: set[str] | None = None,
                 x264_threads: int | None = None, concurrent_gops: int | None = None,
                 registry: RegistryView | None = None) -> None:
        self.settings = settings
        self.renditions = renditions
        self.group_id = group_id_for(settings, group, renditions)
        self.x264_threads = settings.encoder_x264_threads if x264_threads is None else x264_threads
        self.concurrent_gops = max(1, concurrent_gops or settings.encoder_concurrent_gops)
        self.topic = settings.topic("gops")
        self.stop_event = threading.Event()
        self._own_registry = registry is None
        self.registry = registry or RegistryView(settings)
        self.seen = SeenWindow(settings.encoder_dedup_window)
        self.tracker = OffsetTracker()
        self.jobs: dict[tuple[int, int], Job] = {}  # (partition, offset) -> job
        self.in_flight: dict[tuple[str, int], Job] = {}  # identity -> job being transcoded/published
        self.completed: queue.Queue[Job] = queue.Queue()
        self.unknown_streams: set[str] = set()
        self.active_jobs: list[Job] = []  # submitted to the pool, result not yet handled
        self.pool = ThreadPoolExecutor(self.concurrent_gops, thread_name_prefix="gop")
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self._assigned: set[int] = set()
        self._last_lag = 0.0
        self._last_progress = time.monotonic()
        self._progress_encoded = 0
        self.stats = {"encoded": 0, "duplicate": 0, "dead_lettered": 0}

    # --- lifecycle ------------------------------------------------------------------------------

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> None:
        if self._own_registry:
            self.registry.start()
        if not self.registry.wait_caught_up(30):
            log.warning("registry not caught up after 30 s; unknown streams use the default ladder")
        self.producer = make_producer(self.settings)
        self.consumer = make_consumer(self.settings, self.group_id)
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)
        log.info("encoder started", extra={"group": self.group_id, "topic": self.topic,
                                           "renditions": sorted(self.renditions or ["all"]),
                                           "concurrent_gops": self.concurrent_gops})
        try:
            while not self.stop_event.is_set():
                self._step()
            self._drain(deadline_s=60)
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
            try:
                self.consumer.close()
            finally:
                self.producer.flush(10)
                if self._own_registry:
                    self.registry.stop()
            log.info("encoder stopped", extra=self.stats)

    def _step(self) -> None:
        # Capacity counts GOPs being transcoded, not GOPs waiting for acks: the next GOP starts while
        # the previous one's segments are still on their way to the broker.
        self._handle_completed(timeout=0 if self._can_take() else 0.02)
        self.producer.poll(0)
        self._commit_ready()
        if self._can_take():
            msg = self.consumer.poll(0.05)
            if msg is not None:
                self._take(msg)
        self._report_lag()

    def _can_take(self) -> bool:
        """Room for another GOP: fewer than concurrent_gops transcoding, and each of them fully decoded
        (GOPs overlap only in their encode tails, so a live GOP is never slowed by a whole other GOP)."""
        return len(self.active_jobs) < self.concurrent_gops and all(
            j.timing.decoded.is_set() for j in self.active_jobs)

    def _drain(self, deadline_s: float) -> None:
        """Finish what was taken (shutdown or revoke): publish, wait for acks, commit."""
        end = time.monotonic() + deadline_s
        while self.tracker.in_flight() and time.monotonic() < end:
            self._handle_completed(timeout=0.05)
            self.producer.poll(0.05)
            self._commit_ready(asynchronous=False)
        self.producer.flush(max(0.0, end - time.monotonic()))
        self._commit_ready(asynchronous=False)

    # --- rebalance --------------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned |= {p.partition for p in partitions}
        log.info("partitions assigned", extra={"partitions": sorted(p.partition for p in partitions)})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {p.partition for p in partitions}
        # Hand over cleanly: finish the GOPs already taken from these partitions and commit them,
        # so the next owner does not redo them (it would be harmless, only wasteful).
        end = time.monotonic() + 30
        while self.tracker.in_flight(revoked) and time.monotonic() < end:
            self._handle_completed(timeout=0.05)
            self.producer.poll(0.05)
        self.producer.flush(10)
        self._commit_ready(asynchronous=False)
        self._forget(revoked)
        log.info("partitions revoked", extra={"partitions": sorted(revoked)})

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = {p.partition for p in partitions}
        self._forget(lost)  # someone else owns them now; their uncommitted GOPs will be redone there
        log.warning("partitions lost", extra={"partitions": sorted(lost)})

    def _forget(self, partitions: set[int]) -> None:
        self.tracker.drop(partitions)
        self._assigned -= partitions
        for p in partitions:
            try:
                m.LAG.remove(str(p))
            except KeyError:
                pass

    # --- taking a GOP ---------------------------------------------------------------------------

    def _take(self, msg: Message) -> None:
        if msg.error():
            if msg.error().code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error", extra={"error": str(msg.error())})
            return
        job = Job(msg.partition(), msg.offset(), msg)
        self.tracker.add(job.partition, job.offset)
        self.jobs[(job.partition, job.offset)] = job
        try:
            gop = codec.decode(msg.value() or b"", expect="GopChunk")
        except codec.CodecError as exc:
            self._dead_letter(job, f"not a GopChunk: {exc}", "schema")
            return
        job.gop = gop
        job.identity = (gop["stream_id"], gop["gop_index"])
        if job.identity in self.seen:
            self._duplicate(job)
            return
        original = self.in_flight.get(job.identity)
        if original is not None:  # the other ingest's copy is being encoded right now
            original.duplicates.append(job)
            return
        self._submit(job)

    def _submit(self, job: Job) -> None:
        assert job.gop is not None and job.identity is not None
        self.in_flight[job.identity] = job
        m.IN_FLIGHT.set(len(self.in_flight))
        record = self.registry.get(job.gop["stream_id"])
        if record is None and job.gop["stream_id"] not in self.unknown_streams:
            self.unknown_streams.add(job.gop["stream_id"])
            log.warning("stream not in the registry: default ladder, STANDARD preset",
                        extra={"stream_id": job.gop["stream_id"], "gop_index": job.gop["gop_index"]})
        ladder = ladder_of(record) if record else DEFAULT_LADDER
        preset, part_seconds = preset_for(record), part_seconds_for(record)
        job.started = time.perf_counter()
        self.active_jobs.append(job)
        job.future = self.pool.submit(transcode_gop, job.gop, ladder, preset=preset, part_seconds=part_seconds,
                                      renditions=self.renditions, x264_threads=self.x264_threads,
                                      timing=job.timing)
        job.future.add_done_callback(lambda _f, j=job: self.completed.put(j))

    def _duplicate(self, job: Job) -> None:
        m.DUPLICATES.inc()
        m.GOPS.labels("duplicate").inc()
        self.stats["duplicate"] += 1
        log.info("duplicate GOP dropped", extra={"stream_id": job.identity[0], "gop_index": job.identity[1],
                                                "ingest_id": job.gop.get("ingest_id") if job.gop else None})
        self.tracker.done(job.partition, job.offset)
        self.jobs.pop((job.partition, job.offset), None)

    # --- finishing a GOP ------------------------------------------------------------------------

    def _handle_completed(self, timeout: float) -> None:
        try:
            job = self.completed.get(timeout=timeout) if timeout else self.completed.get_nowait()
        except queue.Empty:
            return
        while True:
            self._publish(job)
            try:
                job = self.completed.get_nowait()
            except queue.Empty:
                return

    def _publish(self, job: Job) -> None:
        assert job.future is not None and job.gop is not None
        self.active_jobs.remove(job)
        stream_id, gop_index = job.identity
        try:
            records = job.future.result()
        except TranscodeError as exc:
            self._failed(job, exc.reason, exc.error_class)
            return
        except Exception as exc:  # noqa: BLE001 - any other failure is this GOP's, not the process's
            log.exception("transcode crashed", extra={"stream_id": stream_id, "gop_index": gop_index})
            self._failed(job, f"encoder error: {type(exc).__name__}: {exc}", "encode")
            return
        elapsed = time.perf_counter() - job.started
        m.GOP_SECONDS.observe(elapsed)
        m.DECODE_SECONDS.observe(job.timing.decode_seconds)
        for name, seconds in job.timing.seconds.items():
            m.RUNG_SECONDS.labels(name).observe(seconds)
        if not records:
            self._finish(job)
            return
        job.pending_acks = len(records)
        for rec in records:
            self._produce(job, rec, codec.encode("RenditionSegment", rec), attempt=1)
        log.debug("GOP transcoded", extra={"stream_id": stream_id, "gop_index": gop_index,
                                           "seconds": round(elapsed, 3), "renditions": len(records)})

    def _produce(self, job: Job, rec: dict[str, Any], value: bytes, attempt: int) -> None:
        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is None:
                m.SEGMENTS.labels(rec["rendition"]["name"]).inc()
                m.SEGMENT_BYTES.labels(rec["rendition"]["name"]).inc(len(rec["data"]))
                job.pending_acks -= 1
                if job.pending_acks == 0 and not job.failed:
                    self._finish(job)
            elif attempt < MAX_PUBLISH_ATTEMPTS and err.retriable():
                m.PUBLISH_RETRIES.inc()
                self._produce(job, rec, value, attempt + 1)
            elif not job.failed:
                self._failed(job, f"publishing {rec['rendition']['name']} failed: {err}",
                             "oversized" if err.code() == KafkaError.MSG_SIZE_TOO_LARGE else "encode")

        while True:
            try:
                self.producer.produce(self.settings.topic("segments"), key=rec["stream_id"].encode(),
                                      value=value, on_delivery=delivered)
                return
            except BufferError:  # local queue full: serve callbacks and retry
                self.producer.poll(0.1)
            except KafkaException as exc:  # refused locally, e.g. larger than message.max.bytes
                if not job.failed:
                    err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                    oversized = err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE
                    self._failed(job, f"publishing {rec['rendition']['name']} ({len(value)} bytes) failed: {exc}",
                                 "oversized" if oversized else "encode")
                return

    def _finish(self, job: Job) -> None:
        stream_id, gop_index = job.identity
        self.seen.add(job.identity)
        self.in_flight.pop(job.identity, None)
        m.IN_FLIGHT.set(len(self.in_flight))
        m.GOPS.labels("encoded").inc()
        self.stats["encoded"] += 1
        if job.gop.get("capture_wallclock_ms"):
            m.GOP_LATENCY.observe(max(0.0, time.time() - job.gop["capture_wallclock_ms"] / 1000))
        self.tracker.done(job.partition, job.offset)
        self.jobs.pop((job.partition, job.offset), None)
        for dup in job.duplicates:
            self._duplicate(dup)
        log.info("GOP encoded", extra={"stream_id": stream_id, "gop_index": gop_index,
                                       "seconds": round(time.perf_counter() - job.started, 3)})

    def _failed(self, job: Job, reason: str, error_class: str) -> None:
        job.failed = True
        if job.identity is not None:
            self.in_flight.pop(job.identity, None)
            m.IN_FLIGHT.set(len(self.in_flight))
        self._dead_letter(job, reason, error_class)
        # A duplicate from the other ingest may be intact: give it its own chance.
        dups, job.duplicates = job.duplicates, []
        for i, dup in enumerate(dups):
            if i == 0:
                self._submit(dup)
            else:
                dups[0].duplicates.append(dup)

    def _dead_letter(self, job: Job, reason: str, error_class: str) -> None:
        stream_id, gop_index = job.identity if job.identity else (None, None)
        dead_letter(self.producer, self.settings, job.msg, reason=reason, error_class=error_class, stage="encoder",
                    stream_id=stream_id, gop_index=gop_index)
        remaining = self.producer.flush(30)
        if remaining:
            log.error("dead letter not acknowledged; GOP stays uncommitted",
                      extra={"stream_id": stream_id, "gop_index": gop_index})
            return
        m.DLQ.labels(error_class).inc()
        m.GOPS.labels("dead_lettered").inc()
        self.stats["dead_lettered"] += 1
        self.tracker.done(job.partition, job.offset)
        self.jobs.pop((job.partition, job.offset), None)

    # --- commits and lag --------------------------------------------------------------------------

    def _commit_ready(self, asynchronous: bool = True) -> None:
        ready = self.tracker.committable()
        if not ready:
            return
        offsets = [TopicPartition(self.topic, p, o) for p, o in ready.items() if p in self._assigned]
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=offsets, asynchronous=asynchronous)
        except Exception as exc:  # noqa: BLE001 - e.g. during a rebalance; the GOPs will be redone
            log.warning("commit failed", extra={"error": str(exc)})

    def _report_lag(self) -> None:
        now = time.monotonic()
        if now - self._last_progress >= 30:
            encoded = self.stats["encoded"]
            rate = (encoded - self._progress_encoded) / (now - self._last_progress)
            self._last_progress, self._progress_encoded = now, encoded
            log.info("progress", extra={**self.stats, "gops_per_s": round(rate, 2),
                                        "partitions": sorted(self._assigned), "in_flight": len(self.in_flight)})
        if now - self._last_lag < 5 or not self._assigned:
            return
        self._last_lag = now
        try:
            tps = self.consumer.position([TopicPartition(self.topic, p) for p in sorted(self._assigned)])
            for tp in tps:
                # cached: the high watermark comes with every fetch response, so no broker round trip
                # stalls the loop that feeds the transcoders (a synchronous query here cost ~1 s per probe).
                low, high = self.consumer.get_watermark_offsets(tp, cached=True)
                if high < 0:
                    continue
                pos = tp.offset if tp.offset >= 0 else max(low, 0)
                m.LAG.labels(str(tp.partition)).set(max(0, high - pos))
        except Exception as exc:  # noqa: BLE001 - lag is best effort
            log.debug("lag probe failed", extra={"error": str(exc)})
