"""--normalize auto (the default) on feeds as venues send them, pushed by real clients over RTMP and SRT.

- An H.264 60 fps feed with B-frames, open GOPs and irregular keyframes (x264 `open-gop=1`, forced
  keyframes at odd instants) for 4 s, then closed regular 1 s GOPs for 6 s: it is re-encoded from
  its first open GOP, and passes through again after 3 conforming GOPs; the timeline has no hole
  and no overlap at either switch, each switch opens an epoch, gop_index counts on by one.
- An HEVC feed: re-encoded whole. Over SRT the pusher is Debian's ffmpeg (MPEG-TS). Over RTMP, HEVC
  needs enhanced RTMP (FLV `hvc1`), which Debian's ffmpeg 5.1 cannot send; the pusher there is the
  FFmpeg 8 inside PyAV, run as a subprocess.

Every GOP on Kafka is proved closed: its first packet is an IDR, a fresh decoder given the record
alone returns every frame, and the encoder transcodes it (processors.encoder.transcode_gop).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from floodlight.settings import Settings
from processors.encoder.transcode import transcode_gop
from producers.agent import AgentConfig, IngestAgent
from producers.gop import h264
from producers.gop.conform import CODEC, IRREGULAR_GOP, OPEN_GOP
from producers.gop.gopcheck import decode_gop
from producers.sources.demux import free_port
from tests.integration.test_ingest_sources import push, running
from tests.integration.test_ingest_testsrc import consume
from tests.support import wait_until

pytestmark = pytest.mark.integration

LAVFI = ["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=60", "-f", "lavfi", "-i", "sine=f=1000:sample_rate=48000"]
LADDER = [{"name": "240p", "width": 426, "height": 240, "bitrate_kbps": 400}]


def _encode(path: Path, seconds: float, *args: str) -> Path:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *LAVFI, "-t", str(seconds), *args,
                    "-c:a", "aac", "-ac", "2", "-f", "mpegts", str(path)], check=True, timeout=120)
    return path


@pytest.fixture(scope="module")
def feeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("venue")
    venue = _encode(d / "venue.ts", 4, "-c:v", "libx264", "-preset", "veryfast", "-bf", "3",
                    "-force_key_frames", "0,0.7,1.9,2.4",
                    "-x264-params", "open-gop=1:keyint=90:min-keyint=20:scenecut=40")
    clean = _encode(d / "clean.ts", 6, "-c:v", "libx264", "-preset", "veryfast", "-bf", "3",
                    "-x264-params", "open-gop=0:keyint=60:min-keyint=60:scenecut=0", "-output_ts_offset", "4")
    switch = d / "switch.ts"  # one MPEG-TS timeline: 4 s open/irregular, then 6 s closed regular
    switch.write_bytes(venue.read_bytes() + clean.read_bytes())
    hevc = _encode(d / "hevc.ts", 4, "-c:v", "libx265", "-preset", "ultrafast",
                   "-x265-params", "log-level=error:keyint=60")
    return {"switch": switch, "hevc": hevc}


def settle(agent: IngestAgent, quiet: float = 3.0, timeout: float = 40) -> None:
    """Wait until the agent has chunked something and then nothing more for `quiet` seconds."""
    seen = [-1, time.monotonic()]

    def quiet_now() -> bool:
        n = agent.stats.chunked
        if n != seen[0]:
            seen[:] = [n, time.monotonic()]
        return n > 0 and time.monotonic() - seen[1] >= quiet

    wait_until(quiet_now, timeout, what="the agent to finish the feed")


def published(settings: Settings, agent: IngestAgent) -> list[dict[str, Any]]:
    got = consume(settings, agent.stats.published, timeout=30)
    gops = sorted((g for _, g in got), key=lambda g: g["gop_index"])
    assert [g["gop_index"] for g in gops] == list(range(gops[0]["gop_index"], gops[0]["gop_index"] + len(gops)))
    return gops


def seconds(g: dict[str, Any], key: str = "pts_start") -> Fraction:
    return Fraction(g[key] * g["time_base_num"], g["time_base_den"])


def assert_closed_and_transcodable(gops: list[dict[str, Any]]) -> None:
    for g in gops:
        v = g["video"]
        assert v["codec"] == "h264"
        first = g["video_packets"][0]
        assert h264.has_idr(first["data"], h264.parse_extradata(v["extradata"]).length_size), g["gop_index"]
        assert all(p["pts"] >= g["pts_start"] for p in g["video_packets"])  # nothing shown before the IDR
        rep = decode_gop(g)
        assert rep.first_is_key and rep.frames == len(g["video_packets"]) > 0
        assert (rep.width, rep.height) == (640, 360)
        assert g["audio"]["codec"] == "aac" and g["audio_packets"]
        renditions = transcode_gop(g, LADDER, preset="ultrafast", part_seconds=0.5)
        assert {r["rendition"]["name"] for r in renditions} == {"240p", "audio"}


def assert_one_timeline(gops: list[dict[str, Any]]) -> None:
    """No hole and no overlap from GOP to GOP, across switches and time bases (within two frames)."""
    for a, b in zip(gops, gops[1:], strict=False):
        gap = seconds(b) - seconds(a) - seconds(a, "duration")
        assert abs(gap) <= Fraction(2, 60), (a["gop_index"], float(gap))


def assert_switched_there_and_back(agent: IngestAgent, gops: list[dict[str, Any]]) -> None:
    switches = list(agent.stats.normalize_switches)
    assert [k is None for k, _ in switches] == [False, True], switches  # once there, once back: said once each
    assert switches[0][0] in (OPEN_GOP, IRREGULAR_GOP)
    assert "3 conforming GOPs" in switches[1][1]
    legs = [kind for kind, _ in agent.auto.legs]
    assert legs in (["normalize", "pass"], ["pass", "normalize", "pass"]), agent.auto.legs
    # each switch opens an epoch at a GOP boundary, and gop_index counts on by one across it
    starts = [i for _, i in agent.auto.legs]
    by_index = {g["gop_index"]: g for g in gops}
    for s in starts[1:]:
        assert by_index[s]["epoch"] == by_index[s - 1]["epoch"] + 1
    normalized = [g for g in gops if starts[-2] <= g["gop_index"] < starts[-1]]
    passed = [g for g in gops if g["gop_index"] >= starts[-1]]
    assert len(normalized) >= 3 and len(passed) >= 2
    assert all(seconds(g) % 2 == 0 for g in normalized[1:])  # re-encoded on the --normalize grid (2 s here)
    assert all(abs(seconds(g, "duration") - 1) < Fraction(1, 30) for g in passed[:-1])  # the feed's own 1 s GOPs
    labels = {"stream_id": gops[0]["stream_id"], "ingest_id": "primary"}
    assert REGISTRY.get_sample_value("floodlight_ingest_normalize_switches_total",
                                     {**labels, "to": "normalize", "reason": switches[0][0]}) == 1
    assert REGISTRY.get_sample_value("floodlight_ingest_normalize_switches_total",
                                     {**labels, "to": "passthrough", "reason": switches[0][0]}) == 1
    assert REGISTRY.get_sample_value("floodlight_ingest_normalizing", {**labels, "reason": switches[0][0]}) == 0


def test_rtmp_open_gop_b_frame_feed_is_re_encoded_then_passes_through(isolated: Settings, feeds: dict[str, Path]):
    port = free_port()
    cfg = AgentConfig("auto-rtmp", f"rtmp://127.0.0.1:{port}/live/venue-key", use_registry=False, status_interval=0,
                      gop_seconds=2.0)  # the --normalize grid, unlike the feed's own 1 s GOPs
    with running(isolated, cfg) as agent:
        wait_until(lambda: agent.source is not None, 30, what="rtmp gate listening")
        res = push(["-re", "-i", str(feeds["switch"]), "-c", "copy", "-f", "flv",
                    f"rtmp://127.0.0.1:{port}/live/venue-key"])
        assert res.returncode == 0, res.stderr
        settle(agent)
    gops = published(isolated, agent)
    assert_switched_there_and_back(agent, gops)
    assert {(g["time_base_num"], g["time_base_den"]) for g in gops} == {(1, 1000), (1, 90000)}  # FLV, ours
    assert_one_timeline(gops)
    assert_closed_and_transcodable(gops)


def srt_ready(agent: IngestAgent) -> bool:
    """The SRT listener is up: the libsrt gate listening (or, before it, the ffmpeg relay started)."""
    gate, relay = getattr(agent.source, "gate", None), getattr(agent.source, "relay", None)
    return bool(gate is not None and gate.listening.is_set()) or bool(relay is not None and relay.proc is not None)


def test_srt_open_gop_b_frame_feed_is_re_encoded_then_passes_through(isolated: Settings, feeds: dict[str, Path]):
    port = free_port()
    cfg = AgentConfig("auto-srt", f"srt://127.0.0.1:{port}?streamid=venue", use_registry=False, status_interval=0,
                      gop_seconds=2.0)  # the --normalize grid, unlike the feed's own 1 s GOPs
    with running(isolated, cfg) as agent:
        wait_until(lambda: srt_ready(agent), 30, what="srt listener")
        res = None
        for _ in range(3):  # the relay may still be binding its port
            res = push(["-re", "-i", str(feeds["switch"]), "-c", "copy", "-f", "mpegts",
                        f"srt://127.0.0.1:{port}?mode=caller&streamid=venue"])
            if res.returncode == 0:
                break
        assert res is not None and res.returncode == 0, res.stderr
        settle(agent)
    gops = published(isolated, agent)
    assert_switched_there_and_back(agent, gops)
    assert_one_timeline(gops)
    assert_closed_and_transcodable(gops)


def assert_hevc_re_encoded(agent: IngestAgent, gops: list[dict[str, Any]]) -> None:
    assert list(agent.stats.normalize_switches) == [(CODEC, "video codec is hevc, not H.264")]
    assert [kind for kind, _ in agent.auto.legs] == ["as-is"]
    assert len(gops) >= 2 and all(seconds(g) % 2 == 0 for g in gops[1:])
    assert_one_timeline(gops)
    assert_closed_and_transcodable(gops)


def test_hevc_over_srt_is_re_encoded(isolated: Settings, feeds: dict[str, Path]):
    port = free_port()
    cfg = AgentConfig("auto-hevc-srt", f"srt://127.0.0.1:{port}?streamid=venue", use_registry=False, gop_seconds=2.0,
                      status_interval=0)
    with running(isolated, cfg) as agent:
        wait_until(lambda: srt_ready(agent), 30, what="srt listener")
        res = None
        for _ in range(3):
            res = push(["-re", "-i", str(feeds["hevc"]), "-c", "copy", "-f", "mpegts",
                        f"srt://127.0.0.1:{port}?mode=caller&streamid=venue"])
            if res.returncode == 0:
                break
        assert res is not None and res.returncode == 0, res.stderr
        settle(agent)
    assert_hevc_re_encoded(agent, published(isolated, agent))


PYAV_PUSHER = textwrap.dedent("""
    import sys, time
    import av
    src, url = sys.argv[1], sys.argv[2]
    inp = av.open(src)
    out = av.open(url, "w", format="flv")  # FFmpeg 8: enhanced FLV, HEVC as hvc1
    streams = {s.index: out.add_stream_from_template(s, opaque=True) for s in inp.streams}
    t0, first = time.monotonic(), None
    for pkt in inp.demux():
        if pkt.dts is None:
            continue
        ts = float(pkt.dts * pkt.time_base)
        first = ts if first is None else first
        time.sleep(max(0.0, t0 + ts - first - time.monotonic()))  # real time, as -re
        pkt.stream = streams[pkt.stream.index]
        out.mux(pkt)
    out.close()
""")


def test_hevc_over_enhanced_rtmp_is_re_encoded(isolated: Settings, feeds: dict[str, Path]):
    port = free_port()
    cfg = AgentConfig("auto-hevc-rtmp", f"rtmp://127.0.0.1:{port}/live/venue-key", use_registry=False, gop_seconds=2.0,
                      status_interval=0)
    with running(isolated, cfg) as agent:
        wait_until(lambda: agent.source is not None, 30, what="rtmp gate listening")
        res = subprocess.run([sys.executable, "-c", PYAV_PUSHER, str(feeds["hevc"]),
                              f"rtmp://127.0.0.1:{port}/live/venue-key"], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        settle(agent)
    assert_hevc_re_encoded(agent, published(isolated, agent))


def test_primary_and_backup_switch_at_the_same_gops(isolated: Settings, feeds: dict[str, Path]):
    src = f"file:{feeds['switch']}"
    with running(isolated, AgentConfig("auto-redund", src, "primary", use_registry=False, status_interval=0)) as a, \
            running(isolated, AgentConfig("auto-redund", src, "backup", use_registry=False, status_interval=0)) as b:
        settle(a)
        settle(b)
    assert a.auto.legs == b.auto.legs and len(a.auto.legs) >= 2
    got = consume(isolated, a.stats.published + b.stats.published, timeout=30)
    by_agent: dict[str, dict[int, tuple]] = {"primary": {}, "backup": {}}
    for part, g in got:
        by_agent[g["ingest_id"]][g["gop_index"]] = (part, g["epoch"], g["pts_start"], g["duration"],
                                                    len(g["video_packets"]))
    assert len(by_agent["primary"]) == a.stats.published
    assert by_agent["primary"] == by_agent["backup"]  # same identities, partitions, cuts


def test_never_refuses_what_auto_re_encodes(isolated: Settings, feeds: dict[str, Path]):
    agent = IngestAgent(isolated, AgentConfig("never-t", f"file:{feeds['switch']}", normalize="never",
                                              use_registry=False, status_interval=0))
    assert agent.run() == 3  # EXIT_REFUSED
    assert "--normalize" in agent.refusals[-1]
    with pytest.raises(ValueError, match="auto, always, never"):
        AgentConfig("x", "testsrc", normalize="sometimes")
    assert AgentConfig("x", "testsrc").normalize == "auto"
    assert AgentConfig("x", "testsrc", normalize=True).normalize == "always"
