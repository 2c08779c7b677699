"""Ingest agent with the real-time test pattern, on the real broker (issue 3, first "must show")."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

from floodlight.partitioner import gop_partition
from floodlight.settings import Settings
from producers.gop.gopcheck import decode_gop
from producers.publish.publisher import publish_gops
from producers.sources.testsrc import generate_gops
from schemas import codec
from tests.support import wait_until


def agent_env(s: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "FLOODLIGHT_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
        "FLOODLIGHT_TOPIC_PREFIX": s.topic_prefix,
        "FLOODLIGHT_TOPIC_PARTITIONS": str(s.topic_partitions),
        "FLOODLIGHT_STORE_URL": s.store_url,
        "FLOODLIGHT_LOG_FORMAT": "text",
        "FLOODLIGHT_METRICS_PORT": "0",
    })
    return env


def consume(s: Settings, n: int, timeout: float) -> list[tuple[int, dict]]:
    """(partition, record) of the first n GopChunks on the gops topic."""
    from floodlight.kafka import make_consumer

    c = make_consumer(s, f"t-{uuid.uuid4().hex[:8]}")
    c.subscribe([s.topic("gops")])
    got: list[tuple[int, dict]] = []

    def more() -> bool:
        msg = c.poll(0.5)
        if msg is not None and not msg.error():
            got.append((msg.partition(), codec.decode(msg.value(), expect="GopChunk")))
        return len(got) >= n

    try:
        wait_until(more, timeout, interval=0, what=f"{n} GopChunks on {s.topic('gops')}")
    finally:
        c.close()
    return got


def test_testsrc_10s_with_2s_gops_gives_5_self_contained_gops(isolated: Settings):
    cmd = [sys.executable, "-m", "ops.cli", "ingest", "--stream", "ingest-t1", "--source", "testsrc",
           "--gop-seconds", "2", "--duration", "10", "--no-registry", "--status-interval", "1"]
    proc = subprocess.Popen(cmd, env=agent_env(isolated), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        got = consume(isolated, 5, timeout=40)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "[ingest ingest-t1/primary]" in out  # the status line
    gops = sorted((g for _, g in got), key=lambda g: g["gop_index"])
    assert len(gops) == 5
    idx = [g["gop_index"] for g in gops]
    assert idx == list(range(idx[0], idx[0] + 5))
    for part, g in got:
        assert part == gop_partition("ingest-t1", g["gop_index"], isolated.topic_partitions)
    for a, b in zip(gops, gops[1:], strict=False):
        assert a["pts_start"] + a["duration"] == b["pts_start"]  # PTS continuous across chunks
        last = a["video_packets"][-1]
        assert last["pts"] + last["duration"] == b["pts_start"]
    for g in gops:
        assert (g["time_base_num"], g["time_base_den"]) == (1, 90000)
        assert g["duration"] == 180000
        assert g["pts_start"] % 180000 == 0 and g["pts_start"] // 180000 == g["gop_index"]  # wall-clock grid
        assert abs(g["capture_wallclock_ms"] - g["pts_start"] // 90) <= 1
        assert g["published_wallclock_ms"] >= g["capture_wallclock_ms"]
        rep = decode_gop(g)
        assert rep.frames == 60 and rep.first_is_key
        assert (rep.width, rep.height) == (640, 360)
        assert g["audio"]["codec"] == "aac" and g["audio"]["sample_rate"] == 48000
        assert rep.audio_samples >= 90000  # ~2 s of 48 kHz audio in every GOP


def test_generate_gops_then_publish_gops_round_trip(isolated: Settings):
    gops = generate_gops("ingest-t2", 4, start_ms=1_800_000_000_000)
    assert len(gops) == 2
    acks = publish_gops(isolated, gops)
    assert [p for p, _ in acks] == [gop_partition("ingest-t2", g["gop_index"], 3) for g in gops]
    got = consume(isolated, 2, timeout=20)
    back = {g["gop_index"]: g for _, g in got}
    for g in gops:
        b = back[g["gop_index"]]
        assert b["video_packets"] == g["video_packets"] and b["audio_packets"] == g["audio_packets"]
        assert b["published_wallclock_ms"] > 0


def test_testsrc_primary_and_backup_started_apart_share_identities(isolated: Settings):
    """The chaos suite kills the primary while the backup runs: same instants, same (stream, gop_index)."""
    from producers.agent import AgentConfig
    from tests.integration.test_ingest_sources import running

    def cfg(role: str) -> AgentConfig:
        return AgentConfig("redund-ts", "testsrc:320x180@30", role, gop_seconds=1.0, use_registry=False,
                           status_interval=0)

    with running(isolated, cfg("primary")) as a:
        wait_until(lambda: a.stats.published >= 2, 20, what="primary on air")
        with running(isolated, cfg("backup")) as b:
            wait_until(lambda: b.stats.published >= 3, 20, what="backup on air")
    got = consume(isolated, a.stats.published + b.stats.published, timeout=20)
    by: dict[str, dict[int, tuple]] = {"primary": {}, "backup": {}}
    for part, g in got:
        by[g["ingest_id"]][g["gop_index"]] = (part, g["pts_start"], g["duration"], g["video_packets"][0]["data"])
    # the GOP each agent was in when it was stopped is published short: compare the complete ones
    shared = (set(by["primary"]) & set(by["backup"])) - {max(by["primary"]), max(by["backup"])}
    assert len(shared) >= 2 and min(by["backup"]) > min(by["primary"])
    for i in shared:  # same partition, same timeline, even the same IDR bytes
        assert by["primary"][i] == by["backup"][i]


def test_sigterm_stops_the_agent_cleanly(isolated: Settings):
    cmd = [sys.executable, "-m", "ops.cli", "ingest", "--stream", "sig-t", "--source", "testsrc:320x180@30",
           "--gop-seconds", "1", "--no-registry", "--status-interval", "0.5"]
    proc = subprocess.Popen(cmd, env=agent_env(isolated), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        consume(isolated, 1, timeout=30)
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "ingest stopped" in err


def test_unregistered_stream_is_refused_with_a_clear_message(isolated: Settings):
    cmd = [sys.executable, "-m", "ops.cli", "ingest", "--stream", "nobody-registered", "--source", "testsrc"]
    res = subprocess.run(cmd, env=agent_env(isolated), capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "is not registered" in res.stderr and "--no-registry" in res.stderr


def test_live_testsrc_skips_ahead_instead_of_falling_behind():
    """A camera does not slow down: a feed whose GOP is already in the past jumps to the current one."""
    import time

    from producers.sources.testsrc import TestPatternFeed, TestSpec

    feed = TestPatternFeed(TestSpec(128, 72, 30, 1.0))
    now_gop = int(time.time())  # 1 s GOPs: gop_index == Unix second
    first_pts, _ = next(feed.packets(now_gop - 30, None, live=True))
    assert first_pts // 90000 >= now_gop and feed.skipped_gops >= 30
