"""The encoder consumer group member: floodlight.gops -> transcode -> floodlight.segments.

At-least-once in, effectively-once out (DESIGN 3.5): a GOP's offset is committed only after every
one of its RenditionSegments (or its DeadLetter) is acknowledged, and only once every earlier GOP of
the partition is done too. Duplicates of (stream_id, gop_index) — backup ingest, redelivery after a
rebalance — share a partition (floodlight.partitioner), so one member sees them all and drops them
within a bounded window. Transcoding runs in worker threads; the Kafka client lives on the main
thread (poll, produce, commit), so nothing CPU-bound ever blocks a consumer callback for long.

A GOP published in sub-GOP chunks (LOW mode, issue 15) is transcoded as its chunks arrive
(`streaming.GopStream`, its state scoped to the GOP): each chunk's parts are produced as soon as they
are encoded. Chunks are deduplicated per (gop_index, chunk_index) and taken in chunk order; the
offsets of all of a GOP's chunks are done only once its last part is acknowledged, so a member that
dies mid-GOP leaves the whole GOP to the next owner, which re-does it from chunk 0 and publishes the
same part bytes. A GOP whose chunks stop coming (its ingest stopped mid-GOP) is closed with the parts
it has after `STREAM_IDLE_S`.

Fencing (issue 16): by default a member's output and its input offsets commit in one Kafka transaction
(`floodlight.kafka.TransactionalProducer`, KIP-447), committed after every step that produced
something. The broker checks the consumer group's generation with every commit, so a member that
stalled past its session timeout while another took its partitions cannot commit: its late segments
are aborted and never reach the packager (a read_committed reader). An aborted transaction is redone:
the member forgets what it had taken and re-reads from the committed offsets (`_rewind`).
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from floodlight.kafka import (
    ProducerFenced,
    TransactionAborted,
    TransactionalProducer,
    dead_letter,
    make_consumer,
    make_producer,
)
from floodlight.registry import DEFAULT_LADDER, RegistryView, ladder_of
from floodlight.settings import Settings
from processors.encoder import metrics as m
from processors.encoder.dedup import ChunkSequence, OffsetTracker, SeenWindow
from processors.encoder.ladder import part_seconds_for, preset_for
from processors.encoder.streaming import GopStream, is_chunk
from processors.encoder.transcode import RungTiming, TranscodeError, transcode_gop
from schemas import codec

log = logging.getLogger("floodlight.encoder")
MAX_PUBLISH_ATTEMPTS = 5
STREAM_IDLE_S = 2.5  # a GOP in chunks with none for this long is closed with the parts it has
MAX_WAITING_CHUNKS = 256  # chunks taken but not yet transcoded: stop polling past this
TRANSACTION_TIMEOUT_MS = 5_000  # a dead member's open transaction holds back readers of its partitions this long
TRANSACTION_CALL_S = 3.0  # longest a commit may hold the loop (a coordinator lost): then abort and redo
PURGED = {KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT}  # a record of an aborted transaction
MEMBER_HEADER = "floodlight-encoder"  # which member produced a segment record (audit, fencing tests)


def group_id_for(settings: Settings, group: str | None, renditions: set[str] | None) -> str:
    """A member encoding only some rungs must not share partitions with full-ladder members."""
    if group:
        return group
    if renditions is None:
        return settings.encoder_group
    return f"{settings.encoder_group}-{'-'.join(sorted(renditions))}"


def member_name(settings: Settings) -> str:
    return settings.encoder_instance or f"{socket.gethostname()}-{os.getpid()}"


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
    epoch: int = 0  # the worker's epoch when taken: a rewind since then makes its result stale


@dataclass(eq=False)
class StreamJob:
    """One GOP arriving in chunks: its GopStream, the chunks waiting for their turn, and every message
    of it (chunks and their duplicates), all done together once its last part is acknowledged."""

    identity: tuple[str, int]
    partition: int
    ladder: list[dict[str, Any]] | None = None
    preset: str = ""
    stream: GopStream | None = None
    chunks: ChunkSequence[Job] = field(default_factory=ChunkSequence)
    messages: list[Job] = field(default_factory=list)
    pending_acks: int = 0
    finished: bool = False
    started: float = field(default_factory=time.perf_counter)
    last_seen: float = field(default_factory=time.monotonic)


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
        self.in_flight: dict[tuple[str, int], Job] = {}  # identity -> job being transcoded/published
        self.completed: queue.Queue[Any] = queue.Queue()  # a Job, or (StreamJob, Job, Future) for a chunk
        self.unknown_streams: set[str] = set()
        self.active_jobs: list[Job] = []  # submitted to the pool, result not yet handled
        self.pool = ThreadPoolExecutor(self.concurrent_gops, thread_name_prefix="gop")
        self.streams: dict[tuple[str, int], StreamJob] = {}  # GOPs arriving in chunks, by identity
        self.stream_pool = ThreadPoolExecutor(self.concurrent_gops, thread_name_prefix="chunk")
        self.consumer: Consumer | None = None
        self.producer: Producer | TransactionalProducer | None = None
        self.member = member_name(settings)
        self.headers = [(MEMBER_HEADER, self.member.encode())]
        self.transactional = settings.encoder_transactions
        self.epoch = 0  # bumped by every rewind
        self._finished_in_txn: list[tuple[str, int]] = []  # identities marked seen in the open transaction
        # partition -> the offset it resumes from: the last one this member committed, or the first it took
        self._committed: dict[int, int] = {}
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
        self._replace_producer()
        self.consumer = make_consumer(self.settings, self.group_id)
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)
        log.info("encoder started", extra={"group": self.group_id, "topic": self.topic,
                                           "renditions": sorted(self.renditions or ["all"]),
                                           "concurrent_gops": self.concurrent_gops, "member": self.member,
                                           "transactional": self.transactional})
        try:
            while not self.stop_event.is_set():
                self._guarded(self._step)
            self._guarded(lambda: self._drain(deadline_s=60))
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.stream_pool.shutdown(wait=True, cancel_futures=True)
            for sj in list(self.streams.values()):
                self._drop_stream(sj)  # left uncommitted: the next owner re-does these GOPs from chunk 0
            try:
                self.consumer.close()  # its revoke commits what is finished
            except KafkaException as exc:
                log.warning("consumer close failed", extra={"error": str(exc)})
            try:
                if isinstance(self.producer, TransactionalProducer):
                    self.producer.abort()  # unfinished GOPs stay uncommitted: their next owner redoes them
                self.producer.flush(10)
            except KafkaException as exc:  # the producer failed for good: nothing of it was committed
                log.warning("producer not flushed at stop", extra={"error": str(exc)})
            if self._own_registry:
                self.registry.stop()
            log.info("encoder stopped", extra=self.stats)

    def _make_producer(self) -> Producer | TransactionalProducer:
        if not self.transactional:
            return make_producer(self.settings)
        return TransactionalProducer(self.settings, f"{self.group_id}-{self.member}", timeout_s=TRANSACTION_CALL_S,
                                     **{"transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
                                        "message.timeout.ms": TRANSACTION_TIMEOUT_MS})

    def _guarded(self, work: Callable[[], None]) -> None:
        """Run `work`; a transactional producer that fails (fatal: fenced by its own successor, or an error
        state no abort clears) is replaced and the member redoes what it had taken, instead of dying."""
        try:
            work()
        except KafkaException as exc:
            if not isinstance(self.producer, TransactionalProducer):
                raise
            m.TRANSACTIONS.labels("fenced").inc()
            log.error("transactional producer failed: starting a new one", extra={"error": str(exc)})
            self._replace_producer()
            self._rewind("producer failed")

    def _step(self) -> None:
        # Capacity counts GOPs being transcoded, not GOPs waiting for acks: the next GOP starts while
        # the previous one's segments are still on their way to the broker.
        self._handle_completed(timeout=0 if self._can_take() else 0.02)
        self.producer.poll(0)
        self._commit_ready()
        if self._can_take():
            msg = self.consumer.poll(0.05 if not self.streams else 0.01)
            if msg is not None:
                self._take(msg)
        self._close_idle_streams()
        self._report_lag()

    def _can_take(self) -> bool:
        """Room for another GOP: fewer than concurrent_gops transcoding, and each of them fully decoded
        (GOPs overlap only in their encode tails, so a live GOP is never slowed by a whole other GOP),
        and not too many chunks waiting for their turn."""
        if sum(len(sj.chunks.waiting) for sj in self.streams.values()) >= MAX_WAITING_CHUNKS:
            return False
        return len(self.active_jobs) < self.concurrent_gops and all(
            j.timing.decoded.is_set() for j in self.active_jobs)

    def _working(self, partitions: set[int] | None = None) -> bool:
        """Something taken is being transcoded or published: whole GOPs in flight, chunks running or
        waiting for acks. A GOP waiting for its next chunk is not: it stays uncommitted instead."""
        whole = [j for j in self.in_flight.values() if partitions is None or j.partition in partitions]
        streams = [sj for sj in self.streams.values() if partitions is None or sj.partition in partitions]
        return bool(whole) or any(sj.chunks.ready or sj.pending_acks for sj in streams)

    def _drain(self, deadline_s: float) -> None:
        """Finish what was taken (shutdown or revoke): publish, wait for acks, commit."""
        end = time.monotonic() + deadline_s
        while self._working() and time.monotonic() < end:
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
        while self._working(revoked) and time.monotonic() < end:
            self._handle_completed(timeout=0.05)
            self.producer.poll(0.05)
        self.producer.flush(10)
        self._commit_ready(asynchronous=False)
        self._forget(revoked)
        log.info("partitions revoked", extra={"partitions": sorted(revoked)})

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = {p.partition for p in partitions}
        log.warning("partitions lost", extra={"partitions": sorted(lost)})
        self._forget(lost)  # someone else owns them now; their uncommitted GOPs will be redone there
        if isinstance(self.producer, TransactionalProducer) and self.producer.in_transaction:
            # The open transaction may hold output of GOPs of the lost partitions: never commit it.
            self._abort()
            self._rewind("partitions lost")

    def _forget(self, partitions: set[int]) -> None:
        for sj in [sj for sj in self.streams.values() if sj.partition in partitions]:
            self._drop_stream(sj)  # the next owner re-does the GOP from chunk 0 (same part bytes)
        for identity, job in list(self.in_flight.items()):
            if job.partition in partitions:  # its result is dropped, never published: the next owner redoes it
                job.epoch = -1
                del self.in_flight[identity]
        self.tracker.drop(partitions)
        self._assigned -= partitions
        for p in partitions:
            self._committed.pop(p, None)
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
        job = Job(msg.partition(), msg.offset(), msg, epoch=self.epoch)
        self._committed.setdefault(job.partition, job.offset)
        self.tracker.add(job.partition, job.offset)
        try:
            gop = codec.decode(msg.value() or b"", expect="GopChunk")
        except codec.CodecError as exc:
            self._dead_letter(job, f"not a GopChunk: {exc}", "schema")
            return
        job.gop = gop
        job.identity = (gop["stream_id"], gop["gop_index"])
        if is_chunk(gop):
            self._take_chunk(job)
            return
        if job.identity in self.seen or job.identity in self.streams:
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

    # --- taking a GOP in chunks -----------------------------------------------------------------

    def _take_chunk(self, job: Job) -> None:
        assert job.gop is not None and job.identity is not None
        gid, index = job.identity, job.gop["chunk_index"]
        if gid in self.seen or gid in self.in_flight:
            self._duplicate(job)
            return
        sj = self.streams.get(gid)
        if sj is None:
            sj = self.streams[gid] = StreamJob(gid, job.partition)
            m.IN_FLIGHT.set(len(self.in_flight) + len(self.streams))
        sj.last_seen = time.monotonic()
        if sj.finished or not sj.chunks.offer(index, job):  # the other ingest's copy of the chunk
            self._duplicate(job)
            return
        sj.messages.append(job)
        self._pump(sj)

    def _pump(self, sj: StreamJob) -> None:
        """Start the GOP's next chunk when it is here and the one before is done."""
        if sj.finished:
            return
        job = sj.chunks.take()
        if job is None:
            return
        assert job.gop is not None
        if sj.ladder is None:
            record = self.registry.get(job.gop["stream_id"])
            sj.ladder = ladder_of(record) if record else DEFAULT_LADDER
            sj.preset = preset_for(record)
        future = self.stream_pool.submit(self._run_chunk, sj, job)
        future.add_done_callback(lambda f, s=sj, j=job: self.completed.put((s, j, f)))

    def _run_chunk(self, sj: StreamJob, job: Job) -> list[dict[str, Any]]:
        """Pool thread: one chunk through the GOP's decoder and rung encoders."""
        assert job.gop is not None and sj.ladder is not None
        if sj.stream is None:
            sj.stream = GopStream(job.gop, sj.ladder, preset=sj.preset, renditions=self.renditions,
                                  x264_threads=self.x264_threads)
        return sj.stream.feed(job.gop)

    def _chunk_done(self, sj: StreamJob, job: Job, future: Future) -> None:
        sj.chunks.done()
        sid, gop_index = sj.identity
        if self.streams.get(sj.identity) is not sj:
            if sj.stream is not None:
                sj.stream.close_threads()
            return  # dropped meanwhile (revoked): the next owner does the GOP
        try:
            records = future.result()
        except Exception as exc:  # noqa: BLE001 - this chunk's failure, not the process's
            reason, cls = (exc.reason, exc.error_class) if isinstance(exc, TranscodeError) else (
                f"encoder error: {type(exc).__name__}: {exc}", "encode")
            log.warning("chunk failed: the GOP is closed with the parts it has",
                        extra={"stream_id": sid, "gop_index": gop_index, "chunk_index": job.gop["chunk_index"],
                               "reason": reason})
            self._dead_letter(job, reason, cls)
            records = sj.stream.close(job.gop) if sj.stream is not None else []
            sj.finished = True
            sj.messages.remove(job)  # done by its dead letter
        else:
            if job.gop.get("is_last_chunk", True):
                sj.finished = True
        sj.last_seen = time.monotonic()
        self._produce_parts(sj, records)
        if not sj.finished:
            self._pump(sj)

    def _produce_parts(self, sj: StreamJob, records: list[dict[str, Any]]) -> None:
        for rec in records:
            sj.pending_acks += 1
            self._produce_part(sj, rec, codec.encode("RenditionSegment", rec), attempt=1)
        self._maybe_finish_stream(sj)

    def _produce_part(self, sj: StreamJob, rec: dict[str, Any], value: bytes, attempt: int) -> None:
        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None and err.code() in PURGED:
                return  # its transaction was aborted: the rewind redoes the GOP
            if err is not None and attempt < MAX_PUBLISH_ATTEMPTS and err.retriable():
                m.PUBLISH_RETRIES.inc()
                self._produce_part(sj, rec, value, attempt + 1)
                return
            sj.pending_acks -= 1
            if err is None:
                m.SEGMENTS.labels(rec["rendition"]["name"]).inc()
                m.SEGMENT_BYTES.labels(rec["rendition"]["name"]).inc(len(rec["data"]))
            else:  # never acknowledged: leave the GOP uncommitted, a restart re-does it (same bytes)
                log.error("part not published", extra={"stream_id": sj.identity[0], "gop_index": sj.identity[1],
                                                       "rendition": rec["rendition"]["name"], "error": str(err)})
                self._drop_stream(sj)
                return
            self._maybe_finish_stream(sj)

        while True:
            try:
                self.producer.produce(self.settings.topic("segments"), key=rec["stream_id"].encode(), value=value,
                                      headers=self.headers, on_delivery=delivered)
                return
            except BufferError:
                self.producer.poll(0.1)

    def _maybe_finish_stream(self, sj: StreamJob) -> None:
        if not sj.finished or sj.pending_acks or self.streams.get(sj.identity) is not sj:
            return
        del self.streams[sj.identity]
        self._mark_seen(sj.identity)
        for job in sj.messages:
            self.tracker.done(job.partition, job.offset)
        for job in sj.chunks.waiting.values():  # chunks after a failure: nothing left to do with them
            self.tracker.done(job.partition, job.offset)
        m.IN_FLIGHT.set(len(self.in_flight) + len(self.streams))
        m.GOPS.labels("encoded").inc()
        self.stats["encoded"] += 1
        elapsed = time.perf_counter() - sj.started
        if sj.stream is not None:
            m.DECODE_SECONDS.observe(sj.stream.decode_seconds)
            for name, seconds in sj.stream.rung_seconds.items():
                m.RUNG_SECONDS.labels(name).observe(seconds)
        first = sj.messages[0].gop if sj.messages else None
        if first and first.get("capture_wallclock_ms"):
            m.GOP_LATENCY.observe(max(0.0, time.time() - first["capture_wallclock_ms"] / 1000))
        log.info("GOP encoded", extra={"stream_id": sj.identity[0], "gop_index": sj.identity[1],
                                       "chunks": sj.chunks.next, "seconds": round(elapsed, 3)})

    def _drop_stream(self, sj: StreamJob) -> None:
        """Forget a GOP without finishing it (revoked, shutting down, a part not acknowledged): its
        offsets stay uncommitted, so the next owner re-does it from chunk 0."""
        if self.streams.get(sj.identity) is sj:
            del self.streams[sj.identity]
        sj.finished = True
        if sj.stream is not None and not sj.chunks.running:
            sj.stream.close_threads()
        m.IN_FLIGHT.set(len(self.in_flight) + len(self.streams))

    def _close_idle_streams(self) -> None:
        """A GOP whose chunks stopped coming: close it with the parts it has (or forget it, if its first
        chunk never came)."""
        now = time.monotonic()
        for sj in list(self.streams.values()):
            if sj.chunks.running or sj.finished or now - sj.last_seen < STREAM_IDLE_S:
                continue
            sid, gop_index = sj.identity
            log.warning("GOP incomplete: no chunk for %.1f s, closed with the parts it has", now - sj.last_seen,
                        extra={"stream_id": sid, "gop_index": gop_index, "chunks": sj.chunks.next,
                               "waiting": sorted(sj.chunks.waiting)})
            sj.finished = True
            if sj.stream is None:  # its chunk 0 never came: nothing was published
                self._produce_parts(sj, [])
                continue
            self._produce_parts(sj, sj.stream.close())

    def _duplicate(self, job: Job) -> None:
        m.DUPLICATES.inc()
        m.GOPS.labels("duplicate").inc()
        self.stats["duplicate"] += 1
        log.info("duplicate GOP dropped", extra={"stream_id": job.identity[0], "gop_index": job.identity[1],
                                                "ingest_id": job.gop.get("ingest_id") if job.gop else None})
        self.tracker.done(job.partition, job.offset)

    # --- finishing a GOP ------------------------------------------------------------------------

    def _handle_completed(self, timeout: float) -> None:
        try:
            job = self.completed.get(timeout=timeout) if timeout else self.completed.get_nowait()
        except queue.Empty:
            return
        while True:
            if isinstance(job, tuple):
                self._chunk_done(*job)
            else:
                self._publish(job)
            try:
                job = self.completed.get_nowait()
            except queue.Empty:
                return

    def _publish(self, job: Job) -> None:
        assert job.future is not None and job.gop is not None
        self.active_jobs.remove(job)
        if job.epoch != self.epoch:
            return  # taken before a rewind: it is being read again from the committed offset
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
            if job.epoch != self.epoch or (err is not None and err.code() in PURGED):
                return  # its transaction was aborted: the rewind redoes the GOP
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
                                      value=value, headers=self.headers, on_delivery=delivered)
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
        self._mark_seen(job.identity)
        self.in_flight.pop(job.identity, None)
        m.IN_FLIGHT.set(len(self.in_flight))
        m.GOPS.labels("encoded").inc()
        self.stats["encoded"] += 1
        if job.gop.get("capture_wallclock_ms"):
            m.GOP_LATENCY.observe(max(0.0, time.time() - job.gop["capture_wallclock_ms"] / 1000))
        self.tracker.done(job.partition, job.offset)
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

    # --- commits and lag --------------------------------------------------------------------------

    def _mark_seen(self, identity: tuple[str, int]) -> None:
        self.seen.add(identity)
        if self.transactional:
            self._finished_in_txn.append(identity)

    def _commit_ready(self, asynchronous: bool = True) -> None:
        ready = {p: o for p, o in self.tracker.committable().items() if p in self._assigned}
        if isinstance(self.producer, TransactionalProducer):
            self._commit_transaction(ready)
            return
        if not ready:
            return
        offsets = [TopicPartition(self.topic, p, o) for p, o in ready.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=asynchronous)
        except Exception as exc:  # noqa: BLE001 - e.g. during a rebalance; the GOPs will be redone
            log.warning("commit failed", extra={"error": str(exc)})

    def _commit_transaction(self, ready: dict[int, int]) -> None:
        """Commit the open transaction (what was produced since the last one) with the finished offsets.

        Every commit carries offsets, even when no GOP finished since the last one (the partitions'
        current commit points, which never skip a taken GOP): the offsets are what makes the broker check
        this member's group generation, so output of a member that was fenced is aborted, never committed.
        """
        assert isinstance(self.producer, TransactionalProducer)
        if not ready and not self.producer.in_transaction:
            return
        points = {p: self._committed[p] for p in self._assigned if p in self._committed}
        points.update(ready)
        if not points:  # output of GOPs of partitions no longer ours: their next owner redoes them
            self._abort()
            self._rewind("nothing of the output is ours to commit")
            return
        started = time.perf_counter()
        try:
            self.producer.commit(self.consumer, [TopicPartition(self.topic, p, o) for p, o in points.items()])
        except TransactionAborted as exc:
            m.TRANSACTIONS.labels("aborted").inc()
            log.warning("transaction aborted: its output is discarded and redone", extra={"error": str(exc)})
            self._rewind("transaction aborted")
            return
        except ProducerFenced as exc:
            m.TRANSACTIONS.labels("fenced").inc()
            log.error("transactional producer fenced: starting a new one", extra={"error": str(exc)})
            self._replace_producer()
            self._rewind("producer fenced")
            return
        m.TRANSACTIONS.labels("committed").inc()
        m.TRANSACTION_SECONDS.observe(time.perf_counter() - started)
        self._committed.update(ready)
        self._finished_in_txn.clear()

    def _rewind(self, reason: str) -> None:
        """After an aborted transaction: forget everything taken and read again from the committed offsets
        (what the next owner of a partition would do). Results of work already running are dropped."""
        self.epoch += 1
        for identity in self._finished_in_txn:
            self.seen.discard(identity)
        self._finished_in_txn.clear()
        for sj in list(self.streams.values()):
            self._drop_stream(sj)
        self.in_flight.clear()
        self.tracker.drop(list(self._assigned))
        m.IN_FLIGHT.set(0)
        points = {p: o for p, o in self._committed.items() if p in self._assigned}
        for p, offset in sorted(points.items()):
            try:
                self.consumer.seek(TopicPartition(self.topic, p, offset))
            except KafkaException as exc:  # no longer ours: its next owner reads it
                log.warning("rewind: seek failed", extra={"partition": p, "error": str(exc)})
        log.warning("rewound to the committed offsets", extra={"reason": reason, "partitions": points})

    def _abort(self) -> None:
        assert isinstance(self.producer, TransactionalProducer)
        try:
            self.producer.abort()
        except KafkaException as exc:  # e.g. fatal: a fresh producer aborts what this one left open
            log.error("abort failed: starting a new transactional producer", extra={"error": str(exc)})
            self._replace_producer()

    def _replace_producer(self) -> None:
        """A new transactional producer with the same id (its init fences and aborts the old one's
        transaction). Kept trying while the cluster is unreachable: without one nothing can be committed."""
        while True:
            try:
                self.producer = self._make_producer()
                return
            except KafkaException as exc:
                log.warning("transactional producer not ready yet", extra={"error": str(exc)})
                if self.stop_event.is_set():
                    raise

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
