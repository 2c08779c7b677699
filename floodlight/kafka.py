"""Kafka client configuration shared by every role (confluent-kafka).

Large GOPs need every size limit raised together (DESIGN §4): broker message.max.bytes and
replica.fetch.max.bytes (./run stack), topic max.message.bytes (topics.py), and the client
limits below. Producers are idempotent with acks=all.

Riding through a leader change (a node killed or restarted, issue 16): librdkafka refreshes metadata
as soon as a request fails with NOT_LEADER / a dropped connection and retries against the new leader;
the settings in FAILOVER make each step of that quick — reconnect and retry backoffs capped at 1 s, a
connection attempt to a dead host given up after 5 s, fetches retried 100 ms after an error, metadata
re-read every second. The bootstrap list names every node, so a client can start while any one of them
is down. The rest is on the broker side: how soon the controller fences the dead node and elects new
leaders (broker.session.timeout.ms 2 s in the local cluster, ops/stack.py).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, Producer

from floodlight.settings import Settings
from schemas import codec
from schemas.errors import DeadLetterClass, Stage

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
    # metadata refresh. Every second (default 5 min) puts a leader move ~1 s from the client, not ~2 s:
    # measured on the local cluster, a producer's longest gap after kill -9 of a leader 3.0 s vs 4.0 s.
    "topic.metadata.refresh.interval.ms": 1000,
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
