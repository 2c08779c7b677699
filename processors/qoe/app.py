"""The QoE Faust app: floodlight.qoe beacons -> ClickHouse raw rows + one-minute aggregates, live viewers.

Beacons come in through a batch consumer thread (processors/qoe/consumer.py says why not a Faust
agent): a batch (by size or time) is decoded, checked and inserted as ONE block (the engine's
materialized view folds the same block into the AggregatingMergeTree `qoe_minute`, so raw and
aggregate never disagree and late beacons merge into their minute), and only then are its offsets
committed. The Faust side keeps the live viewers: a table ((stream, partition) -> {session: last
seen}), changelogged to Kafka every few seconds so a restart restores it, counted every 2 s.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections import Counter
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import faust
from faust.streams import _current_event
from prometheus_client import Counter as PCounter
from prometheus_client import Gauge, Histogram

from floodlight import clickhouse
from floodlight.kafka import dead_letter, make_producer
from floodlight.registry import RegistryView
from floodlight.settings import Settings
from processors.qoe.batch import Batch, advance, already_stored
from processors.qoe.consumer import BeaconConsumer
from processors.qoe.decode import decode_beacon
from processors.qoe.validate import Limits, check
from processors.qoe.viewers import count, group_sightings, merge, prune
from schemas import codec
from schemas.errors import DeadLetterClass, Stage

log = logging.getLogger("floodlight.qoe")

BEACONS = PCounter("floodlight_qoe_beacons_total", "Beacons handled by outcome.", ["outcome"])
DROPPED = PCounter("floodlight_qoe_dropped_total", "Beacons dropped, by reason.", ["reason"])
INSERT_SECONDS = Histogram("floodlight_qoe_insert_seconds", "ClickHouse insert time per batch.")
BATCH_ROWS = Histogram("floodlight_qoe_batch_rows", "Rows per inserted batch.",
                       buckets=(10, 100, 500, 1000, 2000, 5000, 10000, 20000, 50000))
INSERT_ERRORS = PCounter("floodlight_qoe_insert_errors_total", "Failed ClickHouse inserts (retried).")
VIEWERS = Gauge("floodlight_qoe_viewers", "Sessions seen in the viewer window, all streams.")
PERSIST_EVERY_MS = 5000
LAG_MS = Gauge("floodlight_qoe_event_lag_ms", "Accept time of the newest inserted beacon, behind now.")


@dataclass(frozen=True)
class _Source:
    """Where a beacon came from, shaped like the Kafka message dead_letter() records."""
    _topic: str
    _partition: int
    _offset: int
    _key: bytes | None
    _value: bytes | None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value


@dataclass
class BatchResult:
    inserted: int
    sightings: list[tuple[str, str, int, int]]  # (session_id, stream_id, event_ms, partition)


class QoeService:
    """The state the agent, the timer and the query server share (one per process)."""

    def __init__(self, settings: Settings, registry: RegistryView | None = None) -> None:
        self.settings = settings
        self.topic = settings.topic("qoe")
        self.limits = Limits(max_past_ms=int(settings.qoe_max_past_s * 1000),
                             max_future_ms=int(settings.qoe_max_future_s * 1000))
        self.registry = registry or RegistryView(settings)
        self.client = clickhouse.connect(settings)
        self.db_lock = threading.Lock()  # the writer's client
        self.read_client = clickhouse.connect(settings, own=True)  # analyst reads never wait for inserts
        self.read_lock = threading.Lock()
        self.dlq = make_producer(settings, **{"linger.ms": 50})
        self.watermarks: dict[int, int] = {}
        self.watermarks_stale = True
        self.viewers: dict[str, int] = {}
        self.viewers_updated_ms = 0

    def start(self) -> None:
        with self.db_lock:
            applied = clickhouse.migrate(self.client)
        log.info("clickhouse schema ready", extra={"applied": applied, "version": clickhouse.SCHEMA_VERSION,
                                                   "embedded": clickhouse.is_embedded(
                                                       self.settings.resolved_clickhouse_dsn())})
        self.registry.start()
        if not self.registry.wait_caught_up(60):
            raise RuntimeError("stream registry did not catch up within 60 s")

    # --- the batch path (runs in the intake thread) ------------------------------------------

    def process(self, items: list[tuple[bytes | None, bytes | None, int, int, int]]) -> BatchResult:
        """items: (key, value, partition, offset, accept_ms). Insert what is new and plausible."""
        if self.watermarks_stale:
            with self.db_lock:
                clickhouse.repair_aggregates(self.client, self.topic)
                self.watermarks = clickhouse.stored_watermarks(self.client, self.topic)
            self.watermarks_stale = False
            log.info("offset watermarks loaded", extra={"watermarks": self.watermarks})
        batch = Batch(self.topic)
        reasons: Counter[str] = Counter()
        sightings = []
        replayed = 0
        for key, value, partition, offset, accept_ms in items:
            batch.see(partition, offset)
            if already_stored(self.watermarks, partition, offset):
                replayed += 1
                continue
            try:
                beacon = decode_beacon(value or b"")
            except codec.CodecError as exc:
                reasons["undecodable"] += 1
                dead_letter(self.dlq, self.settings, _Source(self.topic, partition, offset, key, value),
                            reason=f"undecodable beacon: {exc}", error_class=DeadLetterClass.SCHEMA, stage=Stage.QOE)
                continue
            reason = check(beacon, accept_ms, self._known, self.limits)
            if reason:
                reasons[reason] += 1
                dead_letter(self.dlq, self.settings, _Source(self.topic, partition, offset, key, value),
                            reason=f"implausible beacon: {reason}", error_class=DeadLetterClass.IMPLAUSIBLE,
                            stage=Stage.QOE,
                            stream_id=beacon["stream_id"][:100])
                continue
            batch.add(beacon, partition, offset)
            sightings.append((beacon["session_id"], beacon["stream_id"], beacon["event_time"], partition))
        if reasons:
            self.dlq.flush(30)
            for reason, n in reasons.items():
                DROPPED.labels(reason).inc(n)
            BEACONS.labels("dropped").inc(sum(reasons.values()))
            log.warning("beacons dropped", extra={"reasons": dict(reasons), "batch": len(items)})
        if replayed:
            BEACONS.labels("already_stored").inc(replayed)
            log.info("skipped beacons already stored", extra={"count": replayed})
        if len(batch):
            self._insert(batch)
            BEACONS.labels("inserted").inc(len(batch))
            BATCH_ROWS.observe(len(batch))
            LAG_MS.set(max(0, time.time() * 1000 - max(i[4] for i in items)))
        advance(self.watermarks, batch.ranges.items())
        return BatchResult(len(batch), sightings)

    def _insert(self, batch: Batch) -> None:
        token = batch.token()
        delay = 0.5
        while True:
            t0 = time.perf_counter()
            try:
                with self.db_lock:
                    clickhouse.insert_raw(self.client, batch.columns, token)
                INSERT_SECONDS.observe(time.perf_counter() - t0)
                log.debug("batch inserted", extra={"rows": len(batch), "token": token})
                return
            except Exception as exc:  # noqa: BLE001 - retry the same token until it lands
                INSERT_ERRORS.inc()
                log.error("clickhouse insert failed, retrying", extra={"rows": len(batch), "token": token,
                                                                       "error": str(exc)[:500]})
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _known(self, stream_id: str) -> bool:
        return self.registry.get(stream_id) is not None

    # --- reads (query server threads) ---------------------------------------------------------

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self.read_lock:
            return clickhouse.run_read_only(self.read_client, sql, parameters)

    def viewer_count(self, stream_id: str) -> int:
        return self.viewers.get(stream_id, 0)

    def close(self) -> None:
        self.dlq.flush(10)
        self.registry.stop()


class _PartitionEvent:
    """Stands in for Faust's "current event": a table write is changelogged to this partition."""

    def __init__(self, topic: str, partition: int) -> None:
        self.message = SimpleNamespace(topic=topic, partition=partition)


def changelog_replication(settings: Settings) -> int:
    """Replication of the app's changelog topics: like every topic (floodlight.topics), from the cluster."""
    from floodlight.topics import cluster_nodes, replication_for

    try:
        return replication_for(cluster_nodes(settings, timeout=10))
    except Exception:  # noqa: BLE001 - broker not up yet: the local stack's node count
        return replication_for(settings.kafka_nodes)


def build_app(settings: Settings, service: QoeService) -> faust.App:
    """The Faust app; its id (and so its consumer groups and changelog topics) follows the topic prefix."""
    app_id = f"{settings.topic_prefix}qoe"
    datadir = settings.stack_dir / "faust" / app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id,
        broker=[f"kafka://{h}" for h in settings.kafka_bootstrap.split(",")],
        store="memory://",
        datadir=str(datadir),
        web_enabled=False,
        topic_replication_factor=changelog_replication(settings),
        topic_partitions=settings.topic_partitions,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=10.0,  # a killed member is replaced within seconds, not faust's default 60 s
        broker_heartbeat_interval=1.0,
        # a leader change: aiokafka re-reads metadata on NOT_LEADER / a dropped connection at once (retrying
        # every 100 ms); a periodic refresh every 30 s (default 5 min) also catches leaders moving back
        consumer_metadata_max_age_ms=30_000,
        producer_metadata_max_age_ms=30_000,
        producer_acks=-1,
        table_cleanup_interval=3600.0,
        key_serializer="json",
        value_serializer="json",
    )
    viewers = app.Table("viewers", default=None, partitions=settings.topic_partitions)
    window_ms = int(settings.qoe_viewer_window_s * 1000)
    persisted_ms: dict[str, int] = {}
    dirty: set[str] = set()  # merged since their last changelog write
    partition_events = [_PartitionEvent(service.topic, p) for p in range(settings.topic_partitions)]

    def persist(key: str, state: dict[str, int], now_ms: int) -> None:
        """Write a key's state to the table (and its changelog, on the key's source partition)."""
        partition = int(key.rsplit("|", 1)[1])
        _current_event.set(weakref.ref(partition_events[partition]))  # type: ignore[arg-type]
        try:
            viewers[key] = state
        finally:
            _current_event.set(None)
        persisted_ms[key] = now_ms
        dirty.discard(key)

    def on_batch(result: BatchResult) -> None:
        """On the event loop, after a batch was inserted: fold its sightings into the viewers table."""
        now_ms = int(time.time() * 1000)
        for key, sightings in group_sightings(result.sightings, now_ms).items():
            state = viewers.get(key)
            fresh = state is None
            if fresh:
                state = {}
            merge(state, sightings)
            dirty.add(key)
            if fresh or now_ms - persisted_ms.get(key, 0) >= PERSIST_EVERY_MS:
                prune(state, now_ms - window_ms)
                persist(key, state, now_ms)

    def revoked() -> None:
        service.watermarks_stale = True

    @app.task
    async def intake() -> None:
        loop = asyncio.get_running_loop()
        consumer = BeaconConsumer(settings, service.process, lambda r: loop.call_soon_threadsafe(on_batch, r),
                                  revoked, group_id=f"{app_id}-beacons").start()
        try:
            await asyncio.to_thread(consumer.join)
            log.error("beacon intake ended", extra={"error": repr(consumer.error)})
            await app.crash(consumer.error or RuntimeError("beacon intake ended"))
        finally:
            await asyncio.to_thread(consumer.stop)

    @app.timer(interval=2.0)
    async def count_viewers() -> None:
        now_ms = int(time.time() * 1000)
        horizon = now_ms - window_ms
        counts = count(viewers.items(), horizon)
        service.viewers = counts
        service.viewers_updated_ms = now_ms
        VIEWERS.set(sum(counts.values()))
        for key, state in list(viewers.items()):
            if state and now_ms - persisted_ms.get(key, 0) >= PERSIST_EVERY_MS:
                prune(state, horizon)
                persist(key, state, now_ms)

    @app.on_before_shutdown.connect
    async def flush_viewers(app: faust.App, **kwargs: Any) -> None:
        """A clean stop writes every changed key, so a restart restores the latest sightings."""
        now_ms = int(time.time() * 1000)
        for key in list(dirty):
            state = viewers.get(key)
            if state is not None:
                persist(key, state, now_ms)

    return app
