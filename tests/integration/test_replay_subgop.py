"""Replay of a LOW stream published in sub-GOP chunks (issue 15): every GOP comes back whole from its chunks
(the first copy of each, primary and backup mixed), so the VOD asset has every GOP once."""

from __future__ import annotations

import time
import uuid

import m3u8

from floodlight.kafka import make_producer
from floodlight.objectstore import open_store
from floodlight.partitioner import gop_partition
from floodlight.registry import new_stream_record, publish_stream
from floodlight.settings import Settings
from floodlight.topics import apply_topics
from ops.replay import run_replay
from producers.sources.testsrc import generate_gops
from schemas import codec
from tests.integration.test_replay import LADDER


def test_replay_assembles_gops_from_their_chunks(broker: Settings, tmp_path) -> None:
    s = broker.model_copy(update={"topic_prefix": f"r{uuid.uuid4().hex[:8]}.", "topic_partitions": 3,
                                  "store_url": (tmp_path / "store").as_uri(), "stack_dir": tmp_path / "stack"})
    apply_topics(s)
    start = int(time.time() * 1000) - 20_000
    kw = {"width": 640, "height": 360, "gop_seconds": 1.0, "start_ms": start, "part_seconds": 0.2}
    primary = generate_gops("low", 6, **kw)
    backup = generate_gops("low", 6, ingest_id="backup", **kw)
    assert {c["chunk_index"] for c in primary} == {0, 1, 2, 3, 4}
    producer = make_producer(s)
    for c in [c for pair in zip(primary, backup, strict=True) for c in pair]:
        producer.produce(s.topic("gops"), key=b"low", value=codec.encode("GopChunk", c),
                         partition=gop_partition("low", c["gop_index"], s.topic_partitions),
                         timestamp=c["capture_wallclock_ms"] + 1000)
    assert producer.flush(30) == 0
    publish_stream(producer, s, new_stream_record("low", "Low", status="ENDED", latency_mode="LOW", public=True,
                                                  ladder=[LADDER[1]]))
    t1, t2 = primary[0]["capture_wallclock_ms"], primary[-1]["capture_wallclock_ms"] + 1
    result = run_replay(s, "low", t1, t2, as_id="low-vod", vod=True, progress=False)
    gops = sorted({c["gop_index"] for c in primary})
    assert result.gops == len(gops) == 6 and result.failed == 0
    store = open_store(s.resolved_store_url())
    pl = m3u8.loads(store.get("vod/low-vod/240p/playlist.m3u8").data.decode())
    assert len(pl.segments) == 6 and all(abs(seg.duration - 1.0) < 1e-3 for seg in pl.segments)
