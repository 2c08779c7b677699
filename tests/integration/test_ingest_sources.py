"""Ingest from real pushers and files: RTMP behind the key gate, SRT behind its key gate, primary + backup.

Pushers are Debian's ffmpeg (a real RTMP/SRT client); agents run in-process so the test can read
their counters; every agent is stopped in a finally.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from floodlight.kafka import make_producer
from floodlight.registry import new_stream_record, publish_stream
from floodlight.settings import Settings
from floodlight.streamkeys import hash_stream_key, new_stream_key
from producers.agent import AgentConfig, IngestAgent
from producers.gop.gopcheck import decode_gop
from producers.sources.demux import free_port
from tests.integration.test_ingest_testsrc import consume
from tests.support import wait_until


@pytest.fixture(scope="module")
def feed_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 s of 320x240@30 H.264 (1 s closed GOPs) + AAC 48 kHz stereo, made by a real encoder."""
    path = tmp_path_factory.mktemp("ingest") / "feed.mp4"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
         "-f", "lavfi", "-i", "sine=f=1000:sample_rate=48000", "-t", "6", "-c:v", "libx264", "-preset", "ultrafast",
         "-g", "30", "-keyint_min", "30", "-sc_threshold", "0", "-c:a", "aac", "-ac", "2", str(path)],
        check=True, timeout=60)
    return path


@contextmanager
def running(settings: Settings, cfg: AgentConfig) -> Iterator[IngestAgent]:
    stop = threading.Event()
    agent = IngestAgent(settings, cfg, stop)
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(agent.run()), daemon=True)
    t.start()
    try:
        yield agent
    finally:
        stop.set()
        t.join(30)
        assert not t.is_alive(), "agent did not stop"


def push(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_rtmp_push_is_chunked_and_a_wrong_key_is_refused(isolated: Settings, feed_file: Path):
    key = new_stream_key()
    port = free_port()
    rec = new_stream_record("rtmp-t", "RTMP test", status="LIVE", ingest_endpoints=[{
        "role": "primary", "protocol": "rtmp", "url": f"rtmp://127.0.0.1:{port}/live",
        "stream_key_hash": hash_stream_key(key)}])
    p = make_producer(isolated)
    publish_stream(p, isolated, rec)
    cfg = AgentConfig("rtmp-t", f"rtmp://127.0.0.1:{port}/live/{{stream_key}}", status_interval=0)
    with running(isolated, cfg) as agent:
        wait_until(lambda: agent.source is not None, 30, what="rtmp gate listening")
        bad = push(["-re", "-i", str(feed_file), "-t", "2", "-c", "copy", "-f", "flv",
                    f"rtmp://127.0.0.1:{port}/live/sk_wrong-key"])
        assert bad.returncode != 0  # the pusher was cut off
        assert agent.source.gate.refused == 1 and agent.stats.published == 0
        good = push(["-re", "-i", str(feed_file), "-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{port}/live/{key}"])
        assert agent.source.gate.accepted == 1, good.stderr
        wait_until(lambda: agent.stats.published >= 6, 20, what="6 GOPs from the RTMP push")
        # the pusher reconnects: its timestamps restart at 0 -> a new epoch, identities keep counting up
        push(["-re", "-i", str(feed_file), "-t", "3", "-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{port}/live/{key}"])
        wait_until(lambda: agent.stats.published >= 9, 20, what="GOPs after the reconnect")
    got = consume(isolated, agent.stats.published, timeout=20)
    gops = sorted((g for _, g in got), key=lambda g: g["gop_index"])
    again = [g for g in gops if g["epoch"] == 1]
    assert len(again) == 3 and again[0]["gop_index"] == gops[0]["gop_index"] + 6
    assert again[0]["pts_start"] < gops[5]["pts_start"]  # the pusher's timeline restarted
    gops = [g for g in gops if g["epoch"] == 0]
    assert [g["gop_index"] for g in gops] == list(range(gops[0]["gop_index"], gops[0]["gop_index"] + 6))
    assert (gops[0]["time_base_num"], gops[0]["time_base_den"]) == (1, 1000)  # FLV timeline
    assert gops[0]["video"]["extradata"][:1] == b"\x01"  # avcC from FLV travels with every GOP
    for g in gops:
        rep = decode_gop(g)
        assert rep.first_is_key and rep.frames == 30 and (rep.width, rep.height) == (320, 240)
        assert g["audio_packets"]
    assert all(g["epoch"] == 0 for g in gops)


def test_srt_push_through_the_relay_arrives_as_gops(isolated: Settings, feed_file: Path):
    port = free_port()
    cfg = AgentConfig("srt-t", f"srt://127.0.0.1:{port}?streamid=venue-a", use_registry=False, status_interval=0)
    with running(isolated, cfg) as agent:
        wait_until(lambda: agent.source is not None and agent.source.gate.listening.is_set(), 30, what="srt gate")
        res = None
        for _ in range(3):  # the relay may still be binding its port
            res = push(["-re", "-i", str(feed_file), "-c", "copy", "-f", "mpegts",
                        f"srt://127.0.0.1:{port}?mode=caller&streamid=venue-a"])
            if res.returncode == 0:
                break
        assert res is not None and res.returncode == 0, res.stderr
        wait_until(lambda: agent.stats.published >= 5, 20, what="GOPs from the SRT push")
        # the caller's session ends with it; the gate listens again and the next caller gets through
        wait_until(lambda: agent.source.gate.restarts >= 1, 20, what="gate listening again")
        first = agent.stats.published  # at least this many came from the first caller (its tail may follow)
        again = None
        for _ in range(3):
            again = push(["-re", "-i", str(feed_file), "-t", "2", "-c", "copy", "-f", "mpegts",
                          f"srt://127.0.0.1:{port}?mode=caller&streamid=venue-a"])
            if again.returncode == 0:
                break
        assert again is not None and again.returncode == 0, again.stderr
        wait_until(lambda: agent.stats.published > first, 20, what="GOPs from the second SRT caller")
    got = consume(isolated, agent.stats.published, timeout=20)
    every = sorted((g for _, g in got), key=lambda g: g["gop_index"])
    assert {g["epoch"] for g in every} == {0, 1}  # the second caller restarted the timeline
    gops = [g for g in every if g["epoch"] == 0]
    assert len(gops) >= first >= 5
    assert [g["gop_index"] for g in gops] == list(range(gops[0]["gop_index"], gops[0]["gop_index"] + len(gops)))
    assert (gops[0]["time_base_num"], gops[0]["time_base_den"]) == (1, 90000)  # MPEG-TS timeline
    for i, g in enumerate(gops):
        rep = decode_gop(g)
        assert rep.first_is_key
        assert rep.frames == 30 or (i == len(gops) - 1 and rep.frames > 0)  # the relay may cut the tail
        assert g["audio"]["codec"] == "aac" and g["audio_packets"]


def test_primary_and_backup_reading_the_same_file_produce_identical_identities(isolated: Settings,
                                                                                  feed_file: Path):
    src = f"file:{feed_file}"
    with running(isolated, AgentConfig("redund-t", src, "primary", use_registry=False, status_interval=0)) as a, \
            running(isolated, AgentConfig("redund-t", src, "backup", use_registry=False, status_interval=0)) as b:
        wait_until(lambda: a.stats.published >= 6 and b.stats.published >= 6, 30, what="both agents done")
    got = consume(isolated, 12, timeout=20)
    by_agent: dict[str, dict[int, tuple[int, int, int]]] = {"primary": {}, "backup": {}}
    for part, g in got:
        by_agent[g["ingest_id"]][g["gop_index"]] = (part, g["pts_start"], g["duration"])
    assert len(by_agent["primary"]) == 6
    assert by_agent["primary"] == by_agent["backup"]  # same identities, same partitions, same timeline


def test_file_loop_keeps_timestamps_continuous(isolated: Settings, feed_file: Path):
    cfg = AgentConfig("loop-t", f"file:{feed_file}?loop=1", duration=9, use_registry=False, status_interval=0)
    agent = IngestAgent(isolated, cfg)
    assert agent.run() == 0
    got = sorted((g for _, g in consume(isolated, 9, timeout=20)), key=lambda g: g["gop_index"])
    assert [g["gop_index"] for g in got] == list(range(got[0]["gop_index"], got[0]["gop_index"] + 9))
    for a, b in zip(got, got[1:], strict=False):
        assert a["pts_start"] + a["duration"] == b["pts_start"]  # across the loop point too
    assert {g["epoch"] for g in got} == {0}
    from prometheus_client import REGISTRY

    labels = {"stream_id": "loop-t", "ingest_id": "primary"}
    assert REGISTRY.get_sample_value("floodlight_ingest_gops_total", labels) == 9
    assert REGISTRY.get_sample_value("floodlight_ingest_bytes_total", labels) > 0
    assert REGISTRY.get_sample_value("floodlight_ingest_publish_latency_seconds_count", labels) == 9
    assert REGISTRY.get_sample_value("floodlight_ingest_input_bitrate_bps", labels) > 0


def test_udp_mpegts_feed(isolated: Settings, feed_file: Path):
    port = free_port()
    cfg = AgentConfig("udp-t", f"udp://127.0.0.1:{port}", use_registry=False, status_interval=0)
    with running(isolated, cfg) as agent:
        def sent() -> bool:
            res = push(["-re", "-i", str(feed_file), "-t", "3", "-c", "copy", "-f", "mpegts",
                        f"udp://127.0.0.1:{port}?pkt_size=1316"])
            return res.returncode == 0 and agent.stats.chunked >= 1

        wait_until(sent, 40, interval=0, what="a UDP feed chunked")
        wait_until(lambda: agent.stats.published >= 2, 20, what="GOPs from UDP")
    got = consume(isolated, agent.stats.published, timeout=20)
    assert all(decode_gop(g).first_is_key for _, g in got)
