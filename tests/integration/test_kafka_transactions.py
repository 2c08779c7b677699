"""Fenced output on the real broker (issue 16): a consume-transform-produce member stopped past its session
timeout (SIGSTOP) loses its partition to another member; when it wakes (SIGCONT) and commits, its
transaction is refused and aborted, so its late output never reaches a read_committed reader — only the
new owner's does, and the group's offset is the new owner's. This is floodlight.kafka.TransactionalProducer,
the mechanism the encoder is to use for its segments (README "Packager": what is left)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

from confluent_kafka import KafkaError, TopicPartition

from floodlight.kafka import TransactionalProducer, make_consumer, make_producer
from floodlight.settings import Settings

SESSION_MS = 6000  # the group's session timeout for both members (the broker's minimum is 6 s)

ZOMBIE = textwrap.dedent("""
    import sys
    from confluent_kafka import TopicPartition
    from floodlight.kafka import ProducerFenced, TransactionAborted, TransactionalProducer, make_consumer
    from floodlight.settings import Settings

    settings = Settings(kafka_bootstrap=sys.argv[1])
    src, dst, group = sys.argv[2], sys.argv[3], sys.argv[4]
    consumer = make_consumer(settings, group, **{"session.timeout.ms": %(session)d, "log_level": 0})
    consumer.subscribe([src])
    producer = TransactionalProducer(settings, group + "-member-a", log_level=0)
    msg = None
    while msg is None or msg.error():
        msg = consumer.poll(0.5)
    print("got", msg.offset(), flush=True)
    sys.stdin.readline()  # the test stops us here (SIGSTOP), then wakes us and sends a line
    producer.produce(dst, value=b"A:" + msg.value())
    producer.flush(10)  # the late output is in the log before the commit is tried
    try:
        producer.commit(consumer, [TopicPartition(src, msg.partition(), msg.offset() + 1)])
        print("committed", flush=True)
    except TransactionAborted as exc:
        print("aborted", exc, flush=True)
    except ProducerFenced as exc:
        print("fenced", exc, flush=True)
    consumer.close()
""") % {"session": SESSION_MS}


def _read_all(settings: Settings, topic: str, isolation: str) -> list[bytes]:
    c = make_consumer(settings, f"audit-{uuid.uuid4().hex[:6]}",
                      **{"isolation.level": isolation, "enable.partition.eof": True, "log_level": 0})
    c.assign([TopicPartition(topic, 0, 0)])
    out: list[bytes] = []
    end = time.monotonic() + 20
    while time.monotonic() < end:
        msg = c.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                break
            continue
        out.append(msg.value())
    c.close()
    return out


def test_a_fenced_member_cannot_commit_its_late_output(isolated: Settings) -> None:
    src, dst = isolated.topic("cues"), isolated.topic("manifests")  # one partition each
    group = f"txn-{uuid.uuid4().hex[:6]}"
    producer = make_producer(isolated)
    producer.produce(src, value=b"gop-7")
    assert producer.flush(10) == 0

    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    zombie = subprocess.Popen([sys.executable, "-c", ZOMBIE, isolated.kafka_bootstrap, src, dst, group],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, env=env, start_new_session=True)
    try:
        line = zombie.stdout.readline()
        assert line.startswith("got"), f"the first member never got the record: {line!r}"
        offset = int(line.split()[1])
        os.killpg(zombie.pid, signal.SIGSTOP)  # stopped mid-record, heartbeats and all

        # the second member gets the partition once the stopped one's session has expired
        consumer = make_consumer(isolated, group, **{"session.timeout.ms": SESSION_MS, "log_level": 0})
        consumer.subscribe([src])
        b = TransactionalProducer(isolated, group + "-member-b", log_level=0)
        t0 = time.monotonic()
        msg = None
        while (msg is None or msg.error()) and time.monotonic() - t0 < 60:
            msg = consumer.poll(0.5)
        assert msg is not None and not msg.error() and msg.offset() == offset
        b.produce(dst, value=b"B:" + msg.value())
        b.commit(consumer, [TopicPartition(src, 0, offset + 1)])

        os.killpg(zombie.pid, signal.SIGCONT)
        zombie.stdin.write("go\n")
        zombie.stdin.flush()
        outcome = zombie.stdout.readline().strip()
        zombie.wait(30)
        # UNKNOWN_MEMBER_ID: the group no longer knows the stopped member, so its offsets are refused
        assert outcome.startswith("aborted"), f"the woken member's commit was not refused as expected: {outcome!r}"

        committed = _read_all(isolated, dst, "read_committed")
        assert committed == [b"B:gop-7"], committed  # the late output never reached a read_committed reader
        written = _read_all(isolated, dst, "read_uncommitted")
        assert b"A:gop-7" in written, written  # it was written, and aborted
        assert consumer.committed([TopicPartition(src, 0)], timeout=10)[0].offset == offset + 1
        consumer.close()
    finally:
        if zombie.poll() is None:
            os.killpg(zombie.pid, signal.SIGCONT)
            os.killpg(zombie.pid, signal.SIGKILL)
            zombie.wait(10)
