"""The encoder consumer group on the real broker: ladder from 1080p, duplicates, DLQ, kill -9."""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from pathlib import Path

import av
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from floodlight.kafka import consumer_config, make_producer
from floodlight.registry import new_stream_record, publish_stream
from floodlight.settings import Settings
from processors.encoder.worker import EncoderWorker
from producers.publish.publisher import publish_gops
from producers.sources.testsrc import generate_gops
from schemas import codec
from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[2]
SMALL_LADDER = [
    {"name": "360p", "width": 640, "height": 360, "bitrate_kbps": 800},
    {"name": "180p", "width": 320, "height": 180, "bitrate_kbps": 300},
]


class TopicReader:
    """Reads a whole topic (all partitions, from the start) into decoded records, incrementally."""

    def __init__(self, settings: Settings, short: str, expect: str) -> None:
        self.topic = settings.topic(short)
        self.expect = expect
        self.records: list[dict] = []
        self.consumer = Consumer(consumer_config(settings, f"reader-{uuid.uuid4().hex[:6]}"))
        parts = self.consumer.list_topics(self.topic, timeout=10).topics[self.topic].partitions
        self.consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in parts])

    def read(self) -> list[dict]:
        for msg in self.consumer.consume(500, timeout=0.2):
            if not msg.error():
                self.records.append(codec.decode(msg.value(), expect=self.expect))
        return self.records

    def close(self) -> None:
        self.consumer.close()


def register(settings: Settings, stream_id: str, **fields) -> None:
    producer = make_producer(settings)
    publish_stream(producer, settings, new_stream_record(stream_id, stream_id, status="LIVE", **fields))


@pytest.fixture
def worker_thread(isolated: Settings):
    """Start in-process encoder members; stop and join them at teardown."""
    started: list[tuple[EncoderWorker, threading.Thread]] = []

    def start(**kwargs) -> EncoderWorker:
        w = EncoderWorker(isolated.model_copy(update={"encoder_group": f"enc-{uuid.uuid4().hex[:6]}"}), **kwargs)
        t = threading.Thread(target=w.run, daemon=True)
        t.start()
        started.append((w, t))
        return w

    yield start
    for w, t in started:
        w.stop()
        t.join(60)


def test_1080p_source_to_aligned_ladder(isolated: Settings, worker_thread):
    register(isolated, "final", latency_mode="LOW")
    gops = generate_gops("final", 10, width=1920, height=1080, gop_seconds=2.0)
    assert len(gops) == 5
    publish_gops(isolated, gops)
    worker_thread()
    reader = TopicReader(isolated, "segments", "RenditionSegment")
    try:
        recs = wait_until(lambda: len(reader.read()) >= 25 and reader.records, 120, what="25 segments")
    finally:
        reader.close()
    by = {(r["rendition"]["name"], r["gop_index"]): r for r in recs}
    assert len(recs) == len(by) == 25  # 5 GOPs x (4 video rungs + audio), each exactly once
    sizes = {"1080p": (1920, 1080), "720p": (1280, 720), "480p": (854, 480), "240p": (426, 240)}
    for g in gops:
        starts = set()
        for name, (w, h) in sizes.items():
            rec = by[(name, g["gop_index"])]
            assert rec["rendition"]["codecs"].startswith("avc1.64") and rec["rendition"]["bandwidth"] > 0  # High
            assert len(rec["parts"]) == 6  # LOW latency: ~0.33 s parts in a 2 s segment
            with av.open(io.BytesIO(rec["init_segment"] + rec["data"])) as c:
                frames = list(c.decode(video=0))
            assert len(frames) == 60 and frames[0].key_frame
            assert (frames[0].width, frames[0].height) == (w, h)
            starts.add((rec["pts"], frames[0].pts))
        assert starts == {(g["pts_start"], g["pts_start"])}  # segment n starts at one instant everywhere
    for name in [*sizes, "audio"]:
        segs = sorted((r for r in recs if r["rendition"]["name"] == name), key=lambda r: r["gop_index"])
        assert len({r["init_hash"] for r in segs}) == 1
        whole = segs[0]["init_segment"] + b"".join(r["data"] for r in segs)
        with av.open(io.BytesIO(whole)) as c:
            pts = [p.pts for p in c.demux() if p.size]
        step = 1024 if name == "audio" else 3000
        assert all(b - a == step for a, b in zip(pts, pts[1:], strict=False)), f"gap in {name}"
        for a, b in zip(segs, segs[1:], strict=False):
            assert a["pts"] + a["duration"] == b["pts"], f"{name} segments do not tile"


def test_duplicates_dropped_and_corrupt_gop_dead_lettered(isolated: Settings, worker_thread):
    register(isolated, "dup", ladder=SMALL_LADDER[1:], latency_mode="LOW")
    register(isolated, "bad", ladder=SMALL_LADDER[1:], latency_mode="LOW")
    start_ms = 1_795_000_000_000
    primary = generate_gops("dup", 6, width=640, height=360, start_ms=start_ms)
    backup = generate_gops("dup", 6, width=640, height=360, start_ms=start_ms, ingest_id="backup")
    bad = generate_gops("bad", 6, width=640, height=360, start_ms=start_ms)
    rnd = random.Random(7)
    bad[1] = dict(bad[1], video_packets=[dict(p, data=rnd.randbytes(len(p["data"]))) for p in bad[1]["video_packets"]])
    mixed = [g for pair in zip(primary, backup, strict=True) for g in pair] + bad
    publish_gops(isolated, mixed)
    w = worker_thread()
    segments = TopicReader(isolated, "segments", "RenditionSegment")
    dlq = TopicReader(isolated, "dlq", "DeadLetter")
    try:
        wait_until(lambda: len(segments.read()) >= 10 and len(dlq.read()) >= 1, 60, what="segments and dlq")
        wait_until(lambda: w.stats["encoded"] + w.stats["duplicate"] + w.stats["dead_lettered"] == len(mixed), 30,
                   what="every GOP accounted for")
        segs, dead = segments.read(), dlq.read()
    finally:
        segments.close()
        dlq.close()
    keys = Counter((r["stream_id"], r["gop_index"], r["rendition"]["name"]) for r in segs)
    assert all(n == 1 for n in keys.values()), "a duplicate GOP was encoded twice by one member"
    assert {(s, g) for s, g, _ in keys} == ({("dup", g["gop_index"]) for g in primary}
                                            | {("bad", bad[0]["gop_index"]), ("bad", bad[2]["gop_index"])})
    assert w.stats == {"encoded": 5, "duplicate": 3, "dead_lettered": 1}
    (letter,) = dead
    assert letter["stage"] == "encoder" and letter["error_class"] == "decode"
    assert (letter["stream_id"], letter["gop_index"]) == ("bad", bad[1]["gop_index"])
    assert "undecodable video" in letter["reason"]
    assert codec.decode(letter["value"], expect="GopChunk")["video_packets"][0]["data"] == \
        bad[1]["video_packets"][0]["data"]  # the original bytes, untouched


def _spawn(settings: Settings, group: str, log: Path) -> subprocess.Popen:
    env = dict(os.environ, FLOODLIGHT_TOPIC_PREFIX=settings.topic_prefix,
               FLOODLIGHT_KAFKA_BOOTSTRAP=settings.kafka_bootstrap, FLOODLIGHT_STORE_URL=settings.store_url,
               FLOODLIGHT_ENCODER_GROUP=group, FLOODLIGHT_LOG_FORMAT="json", PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "ops.cli", "encoder"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=log.open("wb"))


@pytest.mark.waits  # mostly a killed member's session timeout: runs beside the rest
def test_two_members_share_partitions_and_survive_kill9(isolated: Settings, tmp_path: Path):
    register(isolated, "grp", ladder=SMALL_LADDER, latency_mode="STANDARD")
    start_ms = 1_795_000_000_000
    primary = generate_gops("grp", 24, width=640, height=360, start_ms=start_ms)
    backup = generate_gops("grp", 24, width=640, height=360, start_ms=start_ms, ingest_id="backup")
    group = f"enc-{uuid.uuid4().hex[:6]}"
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [_spawn(isolated, group, logs[0]), _spawn(isolated, group, logs[1])]
    segments = TopicReader(isolated, "segments", "RenditionSegment")
    try:
        # both members joined and own partitions before the GOPs arrive
        wait_until(lambda: all(b"partitions assigned" in p.read_bytes() for p in logs), 60, what="both joined")
        publish_gops(isolated, [g for pair in zip(primary, backup, strict=True) for g in pair])
        wait_until(lambda: all(b"GOP encoded" in p.read_bytes() for p in logs), 60, what="both members encoding")
        procs[0].send_signal(signal.SIGKILL)  # mid-stream: it has GOPs taken but not committed
        procs[0].wait(10)
        want = {(g["gop_index"], name) for g in primary for name in ("360p", "180p", "audio")}
        wait_until(lambda: want <= {(r["gop_index"], r["rendition"]["name"]) for r in segments.read()}, 120,
                   what="every GOP in every rendition after the rebalance")
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        segments.close()
    recs = segments.records
    identities = {(r["stream_id"], r["gop_index"], r["rendition"]["name"]) for r in recs}
    assert len(identities) == len(want)  # downstream dedup by identity: exactly once
    assert procs[1].returncode == 0  # the survivor exits cleanly on SIGTERM
    survivor_log = logs[1].read_bytes()
    assert b"partitions assigned" in survivor_log and survivor_log.count(b"partitions assigned") >= 2
