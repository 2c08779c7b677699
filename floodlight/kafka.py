"""Kafka client configuration shared by every role (confluent-kafka).

Large GOPs need every size limit raised together (DESIGN §4): broker message.max.bytes and
replica.fetch.max.bytes (./run stack), topic max.message.bytes (topics.py), and the client
limits below. Producers are idempotent with acks=all.

Riding through a leader change (a node killed or restarted, issue 16): librdkafka refreshes metadata
as soon as a request fails with NOT_LEADER / a dropped connection and retries against the new leader;
the settings in FAILOVER make each step of that quick — reconnect and retry backoffs capped at 1 s, a
connection attempt to a dead host given up after 5 s, fetches retried 100 ms after an error, metadata
re-read every 0.5 s. The bootstrap list names every node, so a client can start while any one of them
is down. The rest is on the broker side: how soon the controller fences the dead node and elects new
leaders (broker.session.timeout.ms 1.5 s in the local cluster, ops/stack.py).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from floodlight.settings import Settings
from schemas import codec
from schemas.errors import DeadLetterClass, FloodlightError, Stage

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
log = logging.getLogger("floodlight.kafka")

FAILOVER: dict[str, Any] = {
    "reconnect.backoff.ms": 100,
    "reconnect.backoff.max.ms": 1000,  # librdkafka backs off up to 10 s by default
    "retry.backoff.ms": 100,
    "retry.backoff.max.ms": 1000,
    "socket.connection.setup.timeout.ms": 5000,  # default 30 s against a host that does not answer
    "socket.keepalive.enable": True,
    # A killed leader is not a leaderless partition to librdkafka: it learns the new leader at its next
    # metadata refresh. Every 0.5 s (default 5 min) puts a leader move ~0.25 s from the client on average:
    # measured on the local cluster, a producer's longest gap after kill -9 of a leader 3.0 s vs 4.0 s.
    "topic.metadata.refresh.interval.ms": 500,
    "metadata.max.age.ms": 10_000,
}


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "message.max.bytes": MAX_MESSAGE_BYTES,
        "linger.ms": 5,
        "compression.type": "none",  # media does not compress; spare the CPU
        "message.timeout.ms": 120_000,  # a record waits out a whole election (or a broker restart), retried
        **FAILOVER,
    }
    conf.update(overrides)
    return conf


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.max.bytes": 64 * 1024 * 1024,
        "max.partition.fetch.bytes": MAX_MESSAGE_BYTES + 1024 * 1024,
        "receive.message.max.bytes": 64 * 1024 * 1024 + 4096,
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
        "max.poll.interval.ms": 300_000,
        "fetch.error.backoff.ms": 100,  # default 500 ms before fetching again from a partition's new leader
        **FAILOVER,
    }
    conf.update(overrides)
    return conf


def make_producer(settings: Settings, **overrides: Any) -> Producer:
    return Producer(producer_config(settings, **overrides))


def make_consumer(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    return Consumer(consumer_config(settings, group_id, **overrides))


class TransactionAborted(FloodlightError):
    """The transaction was aborted: none of its records reaches a read_committed reader and its offsets
    were not committed. The caller re-reads from the committed offsets (or, fenced, has lost them)."""


class ProducerFenced(FloodlightError):
    """Fatal: another producer with the same transactional.id took over. Make a new one, or stop."""


class TransactionalProducer:
    """A consume-transform-produce producer whose output and input offsets commit together (KIP-447).

    A stand-in for `confluent_kafka.Producer` (produce / poll / flush / len): `produce` opens a
    transaction when none is open, and `commit(consumer, offsets)` sends the consumer's offsets into it
    with the consumer's group metadata and commits it. The broker checks that metadata against the
    group: a member that was dropped from the generation (stopped past its session timeout while another
    member took its partitions) cannot commit — the transaction is aborted (TransactionAborted) and its
    records never reach read_committed readers (librdkafka's default isolation level). That is how a
    zombie's late output is kept out of the topic, not just deduplicated downstream.

    An open transaction of a process that dies holds read_committed readers of the partitions it wrote
    back until `transaction.timeout.ms` (10 s here) passes, unless a producer with the same
    transactional.id starts first: give each member slot a stable id where the platform has one.
    """

    def __init__(self, settings: Settings, transactional_id: str, *, timeout_s: float = 30.0,
                 **overrides: Any) -> None:
        # a record must be delivered within its transaction's lifetime (librdkafka insists)
        conf = producer_config(settings, **{"transactional.id": transactional_id, "transaction.timeout.ms": 10_000,
                                            "message.timeout.ms": 10_000, **overrides})
        self.producer = Producer(conf)
        self.timeout_s = timeout_s
        self.in_transaction = False
        self.producer.init_transactions(timeout_s)

    def _begin(self) -> None:
        if not self.in_transaction:
            self.producer.begin_transaction()
            self.in_transaction = True

    def produce(self, topic: str, *args: Any, **kwargs: Any) -> None:
        self._begin()
        self.producer.produce(topic, *args, **kwargs)

    def poll(self, timeout: float = 0) -> int:
        return self.producer.poll(timeout)

    def flush(self, timeout: float = -1) -> int:
        return self.producer.flush(timeout) if timeout >= 0 else self.producer.flush()

    def __len__(self) -> int:
        return len(self.producer)

    def commit(self, consumer: Consumer, offsets: list[TopicPartition]) -> None:
        """Commit what was produced since the last commit together with `offsets` (the next offset to
        read per input partition). TransactionAborted when the group refused the offsets (we were fenced)
        or the transaction failed; ProducerFenced when another instance took our transactional.id."""
        if not self.in_transaction and not offsets:
            return
        self._begin()
        try:
            if offsets:
                self.producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(),
                                                          self.timeout_s)
            self._commit_retrying()
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if err is None or err.fatal():
                self.in_transaction = False
                raise ProducerFenced(f"transactional producer unusable: {err or exc}") from exc
            # Refused (abortable), or not done within timeout_s (a coordinator unreachable: librdkafka
            # waits for a dead group coordinator to come back rather than look for its successor): abort
            # rather than hold the caller — nothing of it is visible, and its offsets were not committed.
            try:
                self.abort()
            except KafkaException as abort_exc:
                raise ProducerFenced(f"transaction neither committed nor aborted: {err}; {abort_exc}") from exc
            raise TransactionAborted(f"transaction aborted: {err}") from exc
        self.in_transaction = False

    def _commit_retrying(self) -> None:
        end = time.monotonic() + self.timeout_s
        while True:
            try:
                self.producer.commit_transaction(max(1.0, end - time.monotonic()))
                return
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if err is None or not err.retriable() or time.monotonic() >= end:
                    raise
                time.sleep(0.1)

    def abort(self) -> None:
        """Abort the open transaction (if any): its records are never delivered to read_committed readers."""
        if not self.in_transaction:
            return
        try:
            self.producer.abort_transaction(self.timeout_s)
        finally:
            self.in_transaction = False


def wait_for_broker(settings: Settings, deadline_s: float = 60.0) -> str:
    """Block until a metadata request succeeds; return the cluster id."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "log_level": 0})
    end = time.monotonic() + deadline_s
    last: Exception | None = None
    while time.monotonic() < end:
        try:
            md = admin.list_topics(timeout=2)
            return md.cluster_id or "?"
        except KafkaException as exc:
            last = exc
    raise TimeoutError(f"no Kafka broker at {settings.kafka_bootstrap} after {deadline_s}s: {last}")


def dead_letter(
    producer: Producer,
    settings: Settings,
    msg: Message | None,
    *,
    reason: str,
    error_class: DeadLetterClass,
    stage: Stage,
    stream_id: str | None = None,
    gop_index: int | None = None,
    value: bytes | None = None,
    key: bytes | None = None,
) -> None:
    """Publish a DeadLetter for `msg` (or for raw bytes when there is no message) to the dlq topic."""
    record = {
        "original_topic": msg.topic() if msg is not None else "",
        "partition": msg.partition() if msg is not None else -1,
        "offset": msg.offset() if msg is not None else -1,
        "key": msg.key() if msg is not None else key,
        "value": msg.value() if msg is not None else value,
        "reason": reason[:2000],
        "error_class": DeadLetterClass(error_class).value,
        "stage": Stage(stage).value,
        "stream_id": stream_id,
        "gop_index": gop_index,
        "failed_ms": int(time.time() * 1000),
        "attempt": 1,
    }
    producer.produce(settings.topic("dlq"), key=record["key"], value=codec.encode("DeadLetter", record))
    log.warning("dead-lettered", extra={"stage": stage, "reason": reason, "stream_id": stream_id,
                                        "gop_index": gop_index, "error_class": error_class})
