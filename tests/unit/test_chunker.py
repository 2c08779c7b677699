"""GOP chunker on synthetic packets: cuts, audio attribution, deterministic indices, wraps, epochs."""

from __future__ import annotations

from fractions import Fraction

import pytest

from producers.gop.chunker import GopChunker, GopIndexer, PtsUnwrapper
from producers.media import FeedProblem, MediaPacket

TB = Fraction(1, 90000)
ATB = Fraction(1, 48000)
VIDEO = {"codec": "h264", "width": 640, "height": 360, "frame_rate_num": 30, "frame_rate_den": 1,
         "extradata": b"x"}
AUDIO = {"codec": "aac", "sample_rate": 48000, "channels": 2, "extradata": b"\x11\x90",
         "time_base_num": 1, "time_base_den": 48000}


def video(pts: int, key: bool = False) -> MediaPacket:
    return MediaPacket("video", pts, pts, b"v%d" % pts, key, 3000, wallclock_ms=pts // 90)


def audio(pts48: int) -> MediaPacket:
    return MediaPacket("audio", pts48, pts48, b"a%d" % pts48, True, 1024)


def feed(first_frame: int, frames: int, gop_frames: int = 60, with_audio: bool = True, base: int = 0,
         wrap: int | None = None) -> list[MediaPacket]:
    """Interleaved packets (audio slightly ahead of video, as demuxers deliver them)."""
    out, next_a = [], None
    for f in range(first_frame, first_frame + frames):
        pts = base + f * 3000
        t48 = (f * 3000 + 6000) * 48000 // 90000 + base * 48000 // 90000
        if next_a is None:
            next_a = (t48 // 1024 - 3) * 1024
        while with_audio and next_a < t48:
            out.append(audio(next_a % wrap if wrap else next_a))
            next_a += 1024
        out.append(video(pts % wrap if wrap else pts, key=(f % gop_frames == 0)))
    return out


def run(chunker: GopChunker, packets: list[MediaPacket]) -> list[dict]:
    out = []
    for p in packets:
        out += chunker.push(p)
    return out + chunker.flush()


def make(**kw) -> GopChunker:
    return GopChunker("s1", kw.pop("ingest_id", "primary"), VIDEO, AUDIO, TB, ATB, **kw)


def test_cuts_at_keyframes_and_keeps_every_packet():
    pkts = feed(0, 300)
    gops = run(make(), pkts)
    assert [len(g["video_packets"]) for g in gops] == [60] * 5
    assert all(g["video_packets"][0]["keyframe"] for g in gops)
    assert [g["gop_index"] for g in gops] == [0, 1, 2, 3, 4]
    assert [g["duration"] for g in gops] == [180000] * 5
    n_audio = sum(1 for p in pkts if p.kind == "audio")
    assert sum(len(g["audio_packets"]) for g in gops) == n_audio  # audio before the first IDR too


def test_audio_goes_with_the_gop_its_pts_falls_in():
    gops = run(make(), feed(0, 180))
    for g in gops[1:-1]:
        start, end = g["pts_start"], g["pts_start"] + g["duration"]
        assert all(start <= a["pts"] * 90000 // 48000 < end for a in g["audio_packets"])


def test_audio_before_the_first_keyframe_goes_with_the_first_gop():
    pkts = feed(0, 120)
    early = [audio(-4096), audio(-3072)]
    gops = run(make(), early + pkts)
    assert gops[0]["audio_packets"][0]["pts"] == -4096
    assert gops[0]["audio_packets"][1]["pts"] == -3072


def test_video_before_the_first_idr_is_skipped():
    ch = make()
    gops = run(ch, feed(45, 135))  # joins mid-GOP: frames 45..59 are not decodable alone
    assert gops[0]["pts_start"] == 60 * 3000
    assert ch.skipped_before_idr == 15


def test_index_is_derived_from_pts_not_arrival_order():
    """A backup that joins two GOPs late gets the same identities for the same instants."""
    primary = run(make(), feed(0, 360))
    backup = run(make(ingest_id="backup"), feed(130, 230))
    p = {g["gop_index"]: g["pts_start"] for g in primary}
    b = {g["gop_index"]: g["pts_start"] for g in backup}
    assert b and all(p[i] == b[i] for i in b)
    assert min(b) == 3


def test_index_from_wallclock_anchored_pts():
    base = 1_795_000_000 * 90000  # pts = seconds since the epoch * 90000, GOP boundaries on 2 s multiples
    gops = run(make(gop_ticks=180000), feed(0, 120, base=base))
    assert [g["gop_index"] for g in gops] == [base // 180000, base // 180000 + 1]


def test_index_in_a_millisecond_time_base_does_not_drift():
    """FLV/RTMP: 1/1000, 33/34 ms frames; 200 GOPs must index 0..199 without gaps or repeats."""
    v = dict(VIDEO)
    ch = GopChunker("s1", "primary", v, None, Fraction(1, 1000))
    out = []
    for f in range(200 * 60):
        pts = f * 1000 // 30
        out += ch.push(MediaPacket("video", pts, pts, b"x", f % 60 == 0, 33))
    out += ch.flush()
    assert [g["gop_index"] for g in out] == list(range(200))


def test_pts_wrap_at_33_bits_is_unwrapped():
    wrap = 1 << 33
    base = wrap - 5 * 180000 - 30000  # wraps in the middle of the 6th GOP
    gops = run(make(wrap_bits=33), feed(0, 600, base=base, wrap=wrap))
    starts = [g["pts_start"] for g in gops]
    assert all(b - a == 180000 for a, b in zip(starts, starts[1:], strict=False))
    assert starts[-1] > wrap
    idx = [g["gop_index"] for g in gops]
    assert idx == list(range(idx[0], idx[0] + 10))
    assert {g["epoch"] for g in gops} == {0}


def test_unwrapper_handles_late_packets_from_before_the_wrap():
    u = PtsUnwrapper(33)
    period = 1 << 33
    assert u(period - 10) == period - 10
    assert u(5) == period + 5
    assert u(period - 3) == period - 3  # a late packet from before the wrap
    assert u(20) == period + 20


def test_jump_back_opens_a_new_epoch_and_continues_the_index():
    events = []
    ch = make(on_event=lambda kind, info: events.append((kind, info)))
    first = feed(0, 180, with_audio=False)
    again = feed(0, 120, with_audio=False)  # the pusher reconnected: timestamps restart at 0
    gops = run(ch, first + again)
    assert [g["gop_index"] for g in gops] == [0, 1, 2, 3, 4]
    assert [g["epoch"] for g in gops] == [0, 0, 0, 1, 1]
    assert events and events[0][0] == "discontinuity"


def test_small_forward_gap_keeps_pts_indices():
    gops = run(make(), feed(0, 120, with_audio=False) + feed(240, 120, with_audio=False))
    assert [g["gop_index"] for g in gops] == [0, 1, 4, 5]
    assert [g["duration"] for g in gops] == [180000] * 4  # the GOP before the gap ends with its last frame
    assert {g["epoch"] for g in gops} == {0}


def test_large_forward_jump_is_a_discontinuity():
    gops = run(make(), feed(0, 120, with_audio=False) + feed(6000, 120, with_audio=False))
    assert [g["gop_index"] for g in gops] == [0, 1, 2, 3]
    assert [g["epoch"] for g in gops] == [0, 0, 1, 1]


def test_params_change_bumps_epoch_and_records_new_params():
    ch = make()
    out = run(ch, feed(0, 120, with_audio=False))
    v2 = dict(VIDEO, width=1280, height=720)
    out += ch.change_params(v2, AUDIO, "resolution 640x360 -> 1280x720")
    out += run(ch, feed(120, 120, with_audio=False))
    assert [g["gop_index"] for g in out] == [0, 1, 2, 3]
    assert [g["epoch"] for g in out] == [0, 0, 1, 1]
    assert [g["video"]["width"] for g in out] == [640, 640, 1280, 1280]


def test_gop_waits_for_its_audio_before_it_is_emitted():
    ch = make()
    pkts = [video(f * 3000, f % 60 == 0) for f in range(61)]  # video only so far: GOP 0 closed by frame 60
    out = []
    for p in pkts:
        out += ch.push(p)
    assert out == []  # its audio has not caught up yet
    for n in range(0, 96 * 1024, 1024):
        out += ch.push(audio(n))
    assert len(out) == 1 and len(out[0]["audio_packets"]) == 94  # samples [0, 96000) = 2 s = 93.75 frames


def test_gop_is_emitted_without_audio_after_the_grace():
    ch = make(audio_grace_s=0.5)
    out = []
    for f in range(60 + 16):
        out += ch.push(video(f * 3000, f % 60 == 0))
    assert len(out) == 1  # 0.5 s of video past the boundary


def test_check_regular_refuses_scene_cut_keyframes():
    ch = make(check_regular=True)
    pkts = [video(f * 3000, key=f in (0, 60, 75, 120)) for f in range(200)]
    with pytest.raises(FeedProblem, match="irregular GOP"):
        run(ch, pkts)


def test_check_regular_refuses_open_gops():
    ch = make(check_regular=True)
    pkts = [video(f * 3000, key=f % 60 == 0) for f in range(61)]
    pkts.append(MediaPacket("video", 59 * 3000 - 1500, 60 * 3000 + 1, b"b", False, 3000))  # leading B
    with pytest.raises(FeedProblem, match="open GOP"):
        run(ch, pkts)


def test_idr_check_refuses_recovery_point_keyframes():
    ch = make(idr_check=lambda data: data != b"v180000")
    with pytest.raises(FeedProblem, match="not an IDR"):
        run(ch, feed(0, 120, with_audio=False))


def test_indexer_drift_never_repeats_an_index():
    ix = GopIndexer(nominal=Fraction(180000))
    got = [ix.assign(s, 179000)[0] for s in range(0, 179000 * 400, 179000)]
    assert got == sorted(set(got))


# --- caps: an open GOP never grows past the message limit or the longest GOP (issue 13.5) ----------
def big(pts: int, key: bool = False, size: int = 1000) -> MediaPacket:
    return MediaPacket("video", pts, pts, bytes(size), key, 3000)


def test_a_gop_over_the_byte_cap_is_dropped_at_once_and_the_stream_goes_on():
    events: list[tuple[str, dict]] = []
    ch = make(max_gop_bytes=80_000, on_event=lambda kind, info: events.append((kind, info)))
    pkts = []
    for f in range(300):  # 5 GOPs of 60 frames; GOP 2 carries 2 KB frames (120 KB > 80 KB), the rest 500 bytes
        pkts.append(big(f * 3000, key=f % 60 == 0, size=2000 if 120 <= f < 180 else 500))
    out, held = [], 0
    for p in pkts:
        out += ch.push(p)
        held = max(held, ch._current.size if ch._current else 0)
    out += ch.flush()
    assert [g["gop_index"] for g in out] == [0, 1, 3, 4]  # PTS-derived: GOP 2 is a hole, not a renumbering
    assert {g["epoch"] for g in out} == {0}
    assert held <= 80_000  # never more than the cap in memory
    dropped = [info for kind, info in events if kind == "gop_dropped"]
    assert len(dropped) == 1 and dropped[0]["kind"] == "gop_too_large" and dropped[0]["gop_index"] == 2
    assert "Kafka message limit" in dropped[0]["reason"]
    assert ch.gops_dropped == 1


def test_a_gop_with_no_keyframe_for_too_long_is_dropped_and_its_audio_with_it():
    events: list[tuple[str, dict]] = []
    ch = make(max_gop_seconds=10.0, on_event=lambda kind, info: events.append((kind, info)))
    pkts = [p for p in feed(0, 900) if not (p.kind == "video" and p.keyframe and 120 < p.pts // 3000 < 600)]
    out = run(ch, pkts)  # keyframes at 0, 60, 120, then none until frame 600 (16 s)
    dropped = [info for kind, info in events if kind == "gop_dropped"]
    assert len(dropped) == 1 and dropped[0]["kind"] == "gop_too_long" and "10.0 s" in dropped[0]["reason"]
    starts = [g["pts_start"] // 3000 for g in out]
    assert starts[:2] == [0, 60] and starts[2:] == [600, 660, 720, 780, 840]
    after = out[2]
    assert all(a["pts"] * 90000 // 48000 >= 600 * 3000 - 3000 for a in after["audio_packets"])  # none of the gap
    assert [g["gop_index"] for g in out[2:]] == [2, 3, 4, 5, 6] and after["epoch"] == 1  # a discontinuity


def test_dropping_is_deterministic_for_primary_and_backup():
    pkts = [p for p in feed(0, 900) if not (p.kind == "video" and p.keyframe and 120 < p.pts // 3000 < 600)]
    a = run(make(ingest_id="primary", max_gop_seconds=10.0), pkts)
    b = run(make(ingest_id="backup", max_gop_seconds=10.0), pkts)
    assert [(g["gop_index"], g["epoch"], g["pts_start"]) for g in a] == \
        [(g["gop_index"], g["epoch"], g["pts_start"]) for g in b]


def test_audio_with_no_video_is_bounded():
    events: list[tuple[str, dict]] = []
    ch = make(max_gop_bytes=10_000, on_event=lambda kind, info: events.append((kind, info)))
    for i in range(2000):
        assert ch.push(MediaPacket("audio", i * 1024, i * 1024, bytes(100), True, 1024)) == []
        assert ch._audio_bytes <= 10_000
    assert any(kind == "gop_dropped" and info["kind"] == "audio_backlog" for kind, info in events)
