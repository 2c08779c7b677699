"""A fenced encoder member's late output never reaches floodlight.segments (issue 16, item 4).

Member A is stopped (SIGSTOP) mid-backlog with a GOP being transcoded, past its session timeout;
member B takes its partitions over and encodes every GOP; then A wakes (SIGCONT). Its transcode
finishes and it would publish the segments of a GOP it no longer owns — the encoder's transactions
(segments and input offsets committed together, the group generation checked by the broker) abort
that output, so a read_committed reader (the packager) never sees a record A produced after waking.
(Without them, the woken member's output races the consumer's notice that its partitions were lost:
whenever the GOP finishes first, its segments reach the topic.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from floodlight.kafka import consumer_config, make_producer
from floodlight.registry import new_stream_record, publish_stream
from floodlight.settings import Settings
from processors.encoder.worker import MEMBER_HEADER
from producers.publish.publisher import publish_gops
from producers.sources.testsrc import generate_gops
from schemas import codec
from tests.support import wait_until

pytestmark = pytest.mark.waits  # mostly a member stopped past its session timeout: runs beside the rest

ROOT = Path(__file__).resolve().parents[2]
LADDER = [{"name": "360p", "width": 640, "height": 360, "bitrate_kbps": 800},
          {"name": "180p", "width": 320, "height": 180, "bitrate_kbps": 300}]


def _spawn(settings: Settings, group: str, name: str, log: Path) -> subprocess.Popen:
    env = dict(os.environ, FLOODLIGHT_TOPIC_PREFIX=settings.topic_prefix,
               FLOODLIGHT_KAFKA_BOOTSTRAP=settings.kafka_bootstrap, FLOODLIGHT_STORE_URL=settings.store_url,
               FLOODLIGHT_ENCODER_GROUP=group, FLOODLIGHT_ENCODER_INSTANCE=name,
               FLOODLIGHT_ENCODER_CONCURRENT_GOPS="1", FLOODLIGHT_LOG_FORMAT="json", PYTHONPATH=str(ROOT),
               FLOODLIGHT_ENCODER_TRANSACTIONS=os.environ.get("FLOODLIGHT_ENCODER_TRANSACTIONS", "true"))
    return subprocess.Popen([sys.executable, "-m", "ops.cli", "encoder"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=log.open("wb"), start_new_session=True)


def _segments(settings: Settings, isolation: str) -> list[tuple[str, int, tuple[int, str]]]:
    """Every record of the segments topic as (member, CreateTime ms, (gop_index, rendition))."""
    topic = settings.topic("segments")
    consumer = Consumer(consumer_config(settings, f"audit-{uuid.uuid4().hex[:6]}", **{
        "isolation.level": isolation, "enable.partition.eof": True, "log_level": 0}))
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    out, at_end = [], set()
    end = time.monotonic() + 30
    while len(at_end) < len(parts) and time.monotonic() < end:
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                at_end.add(msg.partition())
            continue
        rec = codec.decode(msg.value(), expect="RenditionSegment")
        member = dict(msg.headers() or []).get(MEMBER_HEADER, b"?").decode()
        out.append((member, msg.timestamp()[1], (rec["gop_index"], rec["rendition"]["name"])))
    consumer.close()
    assert len(at_end) == len(parts), "the segments topic was not read to its end"
    return out


def test_a_woken_fenced_encoder_publishes_nothing(isolated: Settings, tmp_path: Path) -> None:
    publish_stream(make_producer(isolated), isolated,
                   new_stream_record("fence", "fence", status="LIVE", ladder=LADDER, latency_mode="STANDARD"))
    gops = generate_gops("fence", 24, width=640, height=360, start_ms=1_795_000_000_000)
    want = {(g["gop_index"], name) for g in gops for name in ("360p", "180p", "audio")}
    group = f"enc-{uuid.uuid4().hex[:6]}"
    logs = {"a": tmp_path / "a.log", "b": tmp_path / "b.log"}
    a = _spawn(isolated, group, "a", logs["a"])
    b: subprocess.Popen | None = None
    try:
        wait_until(lambda: b"partitions assigned" in logs["a"].read_bytes(), 60, what="member a joined")
        publish_gops(isolated, gops)
        # a backlog and one GOP at a time: a is always transcoding a GOP when it is stopped
        wait_until(lambda: logs["a"].read_bytes().count(b"GOP encoded") >= 2, 60, what="a encoding")
        os.killpg(a.pid, signal.SIGSTOP)
        b = _spawn(isolated, group, "b", logs["b"])
        # b owns everything only once a's session (10 s) has expired, then encodes the rest
        wait_until(lambda: want <= {seg for _m, _t, seg in _segments(isolated, "read_committed")}, 120,
                   interval=1.0, what="every GOP in every rendition, by b")
        woke_ms = int(time.time() * 1000)
        os.killpg(a.pid, signal.SIGCONT)
        # it either learns it lost its partitions first (and drops the GOP's result) or tries to commit the
        # GOP's segments and is refused (the transaction is aborted, its work redone from the committed offsets)
        wait_until(lambda: b"partitions lost" in logs["a"].read_bytes() or b"rewound" in logs["a"].read_bytes(),
                   60, what="the woken member to learn it was fenced")
        a.send_signal(signal.SIGTERM)
        assert a.wait(60) == 0  # it goes on (rejoins, finds nothing to do) and stops cleanly
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGCONT)
                p.kill()
                p.wait(10)

    committed = _segments(isolated, "read_committed")
    late = [(m, t, seg) for m, t, seg in committed if m == "a" and t >= woke_ms]
    assert not late, f"the fenced member's late output reached read_committed readers: {late[:5]}"
    assert {m for m, _t, _s in committed} == {"a", "b"}  # both worked (a before it was stopped)
    assert want == {seg for _m, _t, seg in committed}
    written = _segments(isolated, "read_uncommitted")
    aborted = [seg for m, t, seg in written if m == "a" and t >= woke_ms]
    print(f"\nfenced member: {len(aborted)} late records written and aborted (0 if it dropped its work "
          f"before producing), 0 of them committed; b encoded {sum(m == 'b' for m, _t, _s in committed)}")
