"""The packager consumer group member: floodlight.segments -> object store + manifests.

Keyed partitioning gives each stream one owner. Every record goes through the stream's
StreamPackager (reorder, media writes); playlists are flushed once per poll batch. Every commit
interval the member checkpoints each stream's state to the store and then commits offsets, never
past a record still held in a reorder buffer, so a restart (or a rebalance) resumes from the
checkpoint and re-reads only what the checkpoint does not cover (DESIGN §3.5–3.6).
Cues are read by every member from the start of floodlight.cues and applied to the streams it owns.
Writers are fenced (sinks/packager/fence.py): a member claims a partition's epoch in the store when
Kafka assigns it, every write checks the claim, and a member that lost its partitions while stopped
stops writing at its first attempt (issue 16).
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from floodlight.follow import Follower, Record
from floodlight.kafka import dead_letter, make_consumer, make_producer
from floodlight.keystore import open_key_provider
from floodlight.objectstore import ObjectStore, StoreError, open_store
from floodlight.registry import RegistryView
from floodlight.settings import Settings
from schemas import codec
from sinks.packager.core import BadSegment, StreamPackager
from sinks.packager.fence import Fenced, FencedStore, PartitionFence, WriteLog
from sinks.packager.state import StreamConfig

log = logging.getLogger("floodlight.packager")

SEGMENTS = Counter("floodlight_packager_segments_total", "Segments packaged", ["rendition"])
GAPS = Counter("floodlight_packager_gaps_total", "GOPs published as gaps after the deadline")
LATE = Counter("floodlight_packager_late_fills_total", "Gaps filled by late segments")
DLQ = Counter("floodlight_packager_dead_letters_total", "Records sent to the DLQ", ["reason"])
WRITES = Counter("floodlight_packager_playlist_writes_total", "Media playlists written")
FLUSH_S = Histogram("floodlight_packager_flush_seconds", "Time to write one batch's playlists",
                    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
STREAMS = Gauge("floodlight_packager_streams", "Streams this member owns")
HELD = Gauge("floodlight_packager_reorder_held", "Segments waiting in reorder buffers")
STORE_ERRORS = Counter("floodlight_packager_store_errors_total", "Object store failures (retried)")
FENCED = Counter("floodlight_packager_fenced_total", "Partitions dropped because another member claimed them")
CLAIMS = Counter("floodlight_packager_claims_total", "Partitions claimed (a new fence epoch written)")


def config_from_record(rec: dict[str, Any] | None, settings: Settings) -> StreamConfig:
    if rec is None:
        return StreamConfig(live_window_s=settings.packager_live_window_s)
    return StreamConfig(latency_mode=rec.get("latency_mode", "STANDARD"),
                        dvr_window_s=int(rec.get("dvr_window_seconds", 7200)),
                        drm=bool(rec.get("drm_required")),
                        key_rotation_segments=int(rec.get("key_rotation_segments") or 10),
                        live_window_s=settings.packager_live_window_s)


class PackagerWorker:
    def __init__(self, settings: Settings, group: str | None = None, store: ObjectStore | None = None) -> None:
        self.settings = settings
        self.group = group or settings.packager_group
        self.store = store or open_store(settings.resolved_store_url(), settings.s3_endpoint_url)
        self.keys = open_key_provider(settings.stack_dir)
        self.registry = RegistryView(settings)
        self.producer = make_producer(settings)
        self.streams: dict[str, StreamPackager] = {}
        self.partition_of: dict[str, int] = {}
        self.consumed: dict[int, int] = {}  # partition -> next offset after the last record taken
        self.cues: dict[str, dict[str, dict[str, Any]]] = {}  # stream -> cue_id -> Cue
        # every member reads all cues (floodlight.follow, on its thread); this loop applies them
        self._cues_in: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self.cue_follower = Follower(settings, {settings.topic("cues"): "Cue"}, lambda r: self._cues_in.put(r.value),
                                     name="packager-cues", group_id=f"{self.group}-cues-unused", on_bad=self._bad_cue,
                                     logger=log)
        self.registry_version = -1
        self._stop = threading.Event()
        self._last_commit = time.monotonic()
        self.consumer: Consumer | None = None
        # fencing (sinks/packager/fence.py): who we are in the store, partitions we were fenced off
        self.member = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.write_log = WriteLog(settings.packager_write_log) if settings.packager_write_log else None
        self.fences: dict[int, PartitionFence] = {}  # our claim on each partition assigned to us
        self.fenced_parts: set[int] = set()  # lost to another member; skipped until Kafka assigns them again

    def stop(self) -> None:
        self._stop.set()

    # --- stream ownership ---------------------------------------------------------------------
    def _publish_manifest(self, update: dict[str, Any]) -> None:
        self.producer.produce(self.settings.topic("manifests"), key=update["stream_id"].encode(),
                              value=codec.encode("ManifestUpdate", update))
        self.producer.poll(0)

    def packager_for(self, stream_id: str, part: int) -> StreamPackager:
        pkg = self.streams.get(stream_id)
        if pkg is None:
            fence = self.fences.get(part)
            if fence is None:  # not (or no longer) ours
                raise Fenced(f"partition {part} of stream {stream_id} is not claimed by {self.member}")
            cfg = config_from_record(self.registry.get(stream_id), self.settings)
            store = FencedStore(self.store, fence, stream_id, self.write_log)
            pkg = StreamPackager.open(store, stream_id, config=cfg, keys=self.keys,
                                      gap_deadline_s=self.settings.packager_gap_deadline_s,
                                      on_manifest=self._publish_manifest)
            for cue in self.cues.get(stream_id, {}).values():
                pkg.add_cue(cue)
            self.streams[stream_id] = pkg
            STREAMS.set(len(self.streams))
            log.info("stream opened", extra={"stream_id": stream_id, "resumed_msn": max(
                (t.last_msn for t in pkg.state.tracks.values()), default=-1)})
        return pkg

    def _on_assign(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        """Kafka has just made us the owner (this generation): claim each partition's epoch in the store
        before anything is written for it, so a former owner that is still running is fenced from here."""
        for tp in parts:
            fence = PartitionFence(self.store, tp.topic, tp.partition, self.member, log=self.write_log)
            epoch = self._retry_store(fence.claim, f"partition {tp.partition}")
            self.fences[tp.partition] = fence
            self.fenced_parts.discard(tp.partition)
            CLAIMS.inc()
            log.info("partition claimed", extra={"partition": tp.partition, "epoch": epoch, "member": self.member})
        log.info("partitions assigned", extra={"partitions": [p.partition for p in parts]})

    def _on_revoke(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        revoked = {p.partition for p in parts}
        self.fenced_parts -= revoked
        log.info("partitions revoked", extra={"partitions": sorted(revoked)})
        self._commit(force=True, only=revoked)
        for sid in [s for s, p in self.partition_of.items() if p in revoked]:
            self.streams.pop(sid, None)
            self.partition_of.pop(sid, None)
        for p in revoked:
            self.consumed.pop(p, None)
            self.fences.pop(p, None)
        STREAMS.set(len(self.streams))

    def _on_lost(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        """Partitions taken away without a revoke (session timed out): another member may own the
        streams already, so drop them without writing a checkpoint over the new owner's."""
        lost = {p.partition for p in parts}
        self.fenced_parts -= lost
        log.warning("partitions lost", extra={"partitions": sorted(lost)})
        for sid in [s for s, p in self.partition_of.items() if p in lost]:
            self.streams.pop(sid, None)
            self.partition_of.pop(sid, None)
        for p in lost:
            self.consumed.pop(p, None)
            self.fences.pop(p, None)
        STREAMS.set(len(self.streams))

    # --- the loop -----------------------------------------------------------------------------
    def run(self) -> None:
        self.registry.start()
        self.registry.wait_caught_up(30)
        consumer = self.consumer = make_consumer(self.settings, self.group)
        # catch up on cues before packaging so known breaks land where due (a broker still down: go on,
        # the follower applies them when it gets there)
        self.cue_follower.start().wait_caught_up(15, cancel=self._stop)
        consumer.subscribe([self.settings.topic("segments")], on_assign=self._on_assign, on_revoke=self._on_revoke,
                           on_lost=self._on_lost)
        log.info("packager started", extra={"group": self.group, "store": self.settings.resolved_store_url()})
        try:
            while not self._stop.is_set():
                self._poll_cues()
                # consume() waits its whole timeout for a full batch: wait for the first record only, then
                # take what else is there, so a part is written the moment it arrives (issue 15)
                first = consumer.poll(0.2)
                msgs = ([first] + consumer.consume(num_messages=63, timeout=0)) if first is not None else []
                now = time.monotonic()
                for msg in msgs:
                    self._handle(msg, now)
                self._housekeeping(time.monotonic())
        finally:
            try:
                self._commit(force=True)
            except Exception:  # noqa: BLE001 - best effort on the way out
                log.exception("final commit failed")
            consumer.close()
            self.cue_follower.stop()
            self.producer.flush(10)
            self.registry.stop()
            if self.write_log is not None:
                self.write_log.close()
            log.info("packager stopped")

    def _poll_cues(self) -> None:
        while True:
            try:
                cue = self._cues_in.get_nowait()
            except queue.Empty:
                return
            self._take_cue(cue)

    @staticmethod
    def _bad_cue(rec: Record, exc: Exception) -> None:
        # every member re-reads all cues on each start: a DeadLetter here would repeat per member and
        # restart, so a bad cue is counted and logged (the api validates cues before producing them)
        DLQ.labels("bad_cue").inc()
        log.warning("undecodable cue skipped", extra={"reason": str(exc), "offset": rec.offset})

    def _take_cue(self, cue: dict[str, Any]) -> None:
        self.cues.setdefault(cue["stream_id"], {})[cue["cue_id"]] = cue
        pkg = self.streams.get(cue["stream_id"])
        if pkg is not None and pkg.add_cue(cue):
            log.info("cue registered", extra={"stream_id": cue["stream_id"], "cue_id": cue["cue_id"]})

    def _handle(self, msg: Message, now: float) -> None:
        if msg.error():
            if msg.error().code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error", extra={"error": str(msg.error())})
            return
        part, off = msg.partition(), msg.offset()
        if part in self.fenced_parts:
            return  # another member writes these streams now
        try:
            rec = codec.decode(msg.value(), expect="RenditionSegment")
        except codec.CodecError as exc:
            self._dead(msg, str(exc), "schema", None, None)
        else:
            sid = rec["stream_id"]
            if self._expired(sid):
                log.info("segment of a stream past its DVR window after the end dropped",
                         extra={"stream_id": sid, "gop_index": rec.get("gop_index")})
                self.consumed[part] = off + 1
                return
            try:
                self.partition_of[sid] = part
                pkg = self._retry_store(lambda: self.packager_for(sid, part), sid)
                self._retry_store(lambda: pkg.add(rec, now, part, off), sid)
            except Fenced:
                return  # the partition went to another member: leave the record to it
            except (BadSegment, ValueError) as exc:
                self._dead(msg, str(exc), "invalid", sid, rec.get("gop_index"))
            else:
                SEGMENTS.labels(rec["rendition"]["name"]).inc()
        self.consumed[part] = off + 1

    def _retry_store(self, fn: Any, sid: str) -> Any:
        """A store outage must not lose or skip media: retry the same write until it works (or we stop)."""
        delay = 0.2
        while True:
            try:
                return fn()
            except Fenced as exc:
                self._fenced(sid, exc)
                raise
            except StoreError as exc:
                STORE_ERRORS.inc()
                log.warning("object store write failed, retrying", extra={"stream_id": sid, "reason": str(exc)})
                if self._stop.wait(delay):
                    raise
                delay = min(delay * 2, 5.0)

    # --- fencing --------------------------------------------------------------------------------
    def _fenced(self, sid: str, exc: Exception) -> None:
        """Another member claimed the partition of `sid`: drop every stream of that partition unwritten, and
        skip its records until Kafka assigns it to us again."""
        part = self.partition_of.get(sid)
        FENCED.inc()
        log.warning("fenced: another member owns the partition now; dropping its streams",
                    extra={"stream_id": sid, "partition": part, "reason": str(exc)})
        self.streams.pop(sid, None)
        self.partition_of.pop(sid, None)
        if part is None:
            return
        self.fenced_parts.add(part)
        self.fences.pop(part, None)
        for other in [s for s, p in self.partition_of.items() if p == part]:
            self.streams.pop(other, None)
            self.partition_of.pop(other, None)
        self.consumed.pop(part, None)
        STREAMS.set(len(self.streams))

    def _dead(self, msg: Message, reason: str, cls: str, sid: str | None, gop: int | None) -> None:
        DLQ.labels(cls).inc()
        dead_letter(self.producer, self.settings, msg, reason=reason, error_class=cls, stage="packager",
                    stream_id=sid, gop_index=gop)

    def _housekeeping(self, now: float) -> None:
        self._follow_registry(now)
        held = 0
        for sid, pkg in list(self.streams.items()):
            gaps0 = pkg.stats["gaps"]
            late0 = pkg.stats["late_fills"]
            t0 = time.perf_counter()
            if sid not in self.streams:
                continue  # dropped (fenced) earlier in this loop
            try:
                self._retry_store(lambda p=pkg: p.tick(now), sid)  # type: ignore[misc]
                written = self._retry_store(pkg.flush, sid)
            except Fenced:
                continue
            except StoreError:
                return
            WRITES.inc(written)
            FLUSH_S.observe(time.perf_counter() - t0)
            GAPS.inc(pkg.stats["gaps"] - gaps0)
            LATE.inc(pkg.stats["late_fills"] - late0)
            held += pkg.holding
        HELD.set(held)
        if now - self._last_commit >= self.settings.packager_commit_interval_s:
            self._commit()

    def _follow_registry(self, now: float) -> None:
        if self.registry.version == self.registry_version:
            ended_check = False
        else:
            self.registry_version = self.registry.version
            ended_check = True
        for sid, pkg in list(self.streams.items()):
            rec = self.registry.get(sid)
            if ended_check:
                cfg = config_from_record(rec, self.settings)
                if cfg != pkg.state.config:
                    pkg.state.reconfigure(cfg)
            if rec is None:
                continue
            status = rec.get("status")
            if status == "ENDED" and not pkg.state.ended:
                # let in-flight GOPs land first: end once nothing new came for the gap deadline
                if pkg.holding == 0 and now - pkg.last_segment_at >= self.settings.packager_gap_deadline_s:
                    try:
                        self._retry_store(pkg.end, sid)
                    except Fenced:
                        continue
                    log.info("stream ended: ENDLIST written", extra={"stream_id": sid})
            elif status == "LIVE" and pkg.state.ended:
                pkg.reopen()
            if pkg.state.ended and self._expired(sid):
                try:
                    n = self._retry_store(pkg.purge_all, sid)
                except Fenced:
                    continue
                self.streams.pop(sid, None)
                log.info("ended stream left its DVR window: objects deleted", extra={"stream_id": sid, "objects": n})

    def _expired(self, sid: str) -> bool:
        """Ended, and the event's DVR window (at least the live window) has passed since."""
        rec = self.registry.get(sid)
        if rec is None or rec.get("status") != "ENDED" or not rec.get("ended_at_ms"):
            return False
        keep_s = max(int(rec.get("dvr_window_seconds") or 0), self.settings.packager_live_window_s)
        return time.time() * 1000 > rec["ended_at_ms"] + keep_s * 1000

    def _commit(self, force: bool = False, only: set[int] | None = None) -> None:
        """Checkpoint every owned stream, then commit offsets that no held record precedes."""
        consumer = self.consumer
        if consumer is None:
            return
        self._last_commit = time.monotonic()
        for sid, pkg in list(self.streams.items()):
            if sid not in self.streams or (only is not None and self.partition_of.get(sid) not in only):
                continue
            try:
                self._retry_store(pkg.flush, sid)
                self._retry_store(pkg.refresh_dvr, sid)
                if pkg.unsaved:
                    self._retry_store(pkg.checkpoint, sid)
            except Fenced:
                continue
        self.producer.flush(10)
        floor: dict[int, int] = {}
        for pkg in self.streams.values():
            for p, off in pkg.held_offsets():
                floor[p] = min(floor.get(p, off), off)
        offsets = []
        for p, nxt in self.consumed.items():
            if only is not None and p not in only:
                continue
            offsets.append(TopicPartition(self.settings.topic("segments"), p, min(nxt, floor.get(p, nxt))))
        if not offsets:
            return
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except Exception as exc:  # noqa: BLE001 - e.g. a rebalance in progress; the next interval retries
            if force:
                log.warning("commit failed", extra={"reason": str(exc)})
