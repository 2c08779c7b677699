"""The beacon intake of the QoE app: a batch Kafka consumer thread.

Faust hands records to agents one at a time through several asyncio hops (about 0.2-0.5 ms of CPU
per record on this machine, measured with a bare agent that does nothing), which caps a Faust
agent at a few thousand beacons/s. Beacons are small and many, so the app reads them in batches
with librdkafka (confluent-kafka) in this thread, inserts a batch, and only then commits its
offsets; the Faust side of the app keeps the live-viewers table, its changelog and the timers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError, Message, TopicPartition

from floodlight.kafka import make_consumer
from floodlight.settings import Settings

log = logging.getLogger("floodlight.qoe.consumer")
STUCK_COMMIT_S = 30.0  # commits failing this long (seen: "Waiting for coordinator" for good after a broker
# restart): close the consumer and start a new one, which finds the coordinator again and resumes from the
# committed offsets (rows inserted since are skipped on replay)


class BeaconConsumer:
    """consume -> process(batch) -> commit, in a daemon thread; stop() drains and closes."""

    def __init__(self, settings: Settings, process: Callable[[list[tuple]], Any],
                 on_result: Callable[[Any], None], on_revoke: Callable[[], None], group_id: str) -> None:
        self.settings = settings
        self.topic = settings.topic("qoe")
        self.process = process
        self.on_result = on_result
        self.on_revoke_cb = on_revoke
        self.group_id = group_id
        self.rows = max(1, settings.qoe_batch_rows)
        self.max_wait = settings.qoe_batch_seconds
        self.pending: list[Message] = []
        self.first_at = 0.0
        self.last_commit = 0.0
        self.failing_since: float | None = None
        self.uncommitted: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="qoe-beacons", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> BeaconConsumer:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def join(self) -> None:
        self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set() and self.error is None:
            self._run_one()

    def _stuck(self) -> bool:
        return self.failing_since is not None and time.monotonic() - self.failing_since > STUCK_COMMIT_S

    def _run_one(self) -> None:
        """One consumer's life: until stop, or until its commits have failed for STUCK_COMMIT_S."""
        consumer = make_consumer(self.settings, self.group_id, **{"log_level": 3})
        consumer.subscribe([self.topic], on_revoke=self._revoked)
        self.failing_since = None
        try:
            while not self._stop.is_set():
                if self._stuck():
                    log.warning("offset commits failing; starting a new consumer",
                                extra={"seconds": round(time.monotonic() - (self.failing_since or 0), 1)})
                    self.pending, self.uncommitted = [], {}  # re-read from the committed offsets
                    return
                msgs = consumer.consume(num_messages=self.rows - len(self.pending), timeout=0.1)
                for m in msgs:
                    if m.error():
                        if m.error().code() != KafkaError._PARTITION_EOF:
                            log.warning("beacon consumer error", extra={"error": str(m.error())})
                        continue
                    if not self.pending:
                        self.first_at = time.monotonic()
                    self.pending.append(m)
                if self.pending and (len(self.pending) >= self.rows
                                     or time.monotonic() - self.first_at >= self.max_wait):
                    self._flush(consumer)
                self._maybe_commit(consumer)
            if self.pending:
                self._flush(consumer)
            self._maybe_commit(consumer, force=True)
        except BaseException as exc:  # noqa: BLE001 - recorded for the app to exit non-zero
            self.error = exc
            log.exception("beacon consumer stopped")
        finally:
            consumer.close()

    def _flush(self, consumer: Consumer) -> None:
        """Insert the pending batch; its offsets become committable only after the insert returned."""
        now_ms = int(time.time() * 1000)
        items = []
        for m in self.pending:
            ts_type, ts = m.timestamp()
            items.append((m.key(), m.value(), m.partition(), m.offset(),
                          ts if ts_type != TIMESTAMP_NOT_AVAILABLE else now_ms))
        result = self.process(items)
        for m in self.pending:
            if m.offset() + 1 > self.uncommitted.get(m.partition(), -1):
                self.uncommitted[m.partition()] = m.offset() + 1
        self.pending = []
        self.on_result(result)

    def _maybe_commit(self, consumer: Consumer, force: bool = False) -> None:
        if not self.uncommitted:
            return
        if not force and time.monotonic() - self.last_commit < self.settings.qoe_commit_interval_s:
            return
        offsets = [TopicPartition(self.topic, p, o) for p, o in sorted(self.uncommitted.items())]
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
            self.uncommitted.clear()
            self.failing_since = None
        except Exception as exc:  # noqa: BLE001 - retried next round; stored rows are skipped on replay
            log.warning("offset commit failed", extra={"error": str(exc)})
            if self.failing_since is None:
                self.failing_since = time.monotonic()
        self.last_commit = time.monotonic()

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Before partitions move: insert what was read and commit it, then reload watermarks later."""
        if self.pending:
            self._flush(consumer)
        self._maybe_commit(consumer, force=True)
        self.on_revoke_cb()
