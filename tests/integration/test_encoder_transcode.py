"""transcode_gop with real PyAV (no Kafka): aligned, decodable, idempotent CMAF; AAC passed through."""

from __future__ import annotations

import io
import random
from concurrent.futures import ThreadPoolExecutor

import av
import pytest

from floodlight.registry import DEFAULT_LADDER
from processors.encoder import cmaf
from processors.encoder.ladder import part_seconds_for, preset_for
from processors.encoder.transcode import TranscodeError, transcode_gop
from producers.sources.testsrc import generate_gops

START_MS = 1_795_000_000_000
LADDER_360 = [
    {"name": "360p", "width": 640, "height": 360, "bitrate_kbps": 800},
    {"name": "180p", "width": 320, "height": 180, "bitrate_kbps": 300},
]


@pytest.fixture(scope="module")
def gops():
    return generate_gops("tc", 4, width=640, height=360, gop_seconds=2.0, start_ms=START_MS)


def decode_video(init: bytes, data: bytes) -> list[av.VideoFrame]:
    with av.open(io.BytesIO(init + data)) as c:
        return list(c.decode(video=0))


def test_every_rung_and_audio_aligned_decodable(gops):
    gop = gops[0]
    recs = transcode_gop(gop, LADDER_360, preset="ultrafast", part_seconds=0.333)
    by = {r["rendition"]["name"]: r for r in recs}
    assert list(by) == ["360p", "180p", "audio"]
    for name, (w, h) in {"360p": (640, 360), "180p": (320, 180)}.items():
        rec = by[name]
        assert rec["pts"] == gop["pts_start"] and rec["timescale"] == 90000
        assert rec["duration"] == gop["duration"]
        assert rec["rendition"]["codecs"].startswith("avc1.")
        assert (rec["rendition"]["width"], rec["rendition"]["height"]) == (w, h)
        frames = decode_video(rec["init_segment"], rec["data"])
        assert len(frames) == len(gop["video_packets"])
        assert frames[0].key_frame and (frames[0].width, frames[0].height) == (w, h)
        assert frames[0].pts == gop["pts_start"]
        assert not any(f.key_frame for f in frames[1:])  # fixed GOP, no scene-cut keyframes
        # parts tile the data; LOW mode -> ~0.33 s parts, only the first independent
        assert [p["offset"] for p in rec["parts"]] == [sum(q["length"] for q in rec["parts"][:i])
                                                        for i in range(len(rec["parts"]))]
        assert sum(p["length"] for p in rec["parts"]) == len(rec["data"])
        assert len(rec["parts"]) == 6 and all(abs(p["duration"] - 1 / 3) < 0.01 for p in rec["parts"])
        assert [p["independent"] for p in rec["parts"]] == [True] + [False] * 5
        assert rec["rendition"]["bandwidth"] >= rec["rendition"]["average_bandwidth"] > 0
        for p in rec["parts"]:  # each part is a moof+mdat on its own
            assert [b.type for b in cmaf.iter_boxes(rec["data"][p["offset"]:p["offset"] + p["length"]])] == \
                [b"moof", b"mdat"]
    audio = by["audio"]
    assert audio["rendition"]["media_type"] == "AUDIO" and audio["rendition"]["codecs"] == "mp4a.40.2"
    assert audio["timescale"] == 48000 and audio["rendition"]["sample_rate"] == 48000


def test_audio_is_passed_through_not_reencoded(gops):
    gop = gops[1]
    (audio,) = transcode_gop(gop, LADDER_360, preset="ultrafast", part_seconds=1.0, renditions={"audio"})
    payload = b"".join(bytes(p) for p in _packets(audio["init_segment"] + audio["data"]))
    assert payload == b"".join(p["data"] for p in gop["audio_packets"])


def _packets(data: bytes):
    with av.open(io.BytesIO(data)) as c:
        return [p for p in c.demux(audio=0) if p.size]


def test_init_segment_is_stable_and_output_idempotent(gops):
    a = transcode_gop(gops[0], LADDER_360, preset="ultrafast", part_seconds=1.0)
    b = transcode_gop(gops[0], LADDER_360, preset="ultrafast", part_seconds=1.0)
    c = transcode_gop(gops[1], LADDER_360, preset="ultrafast", part_seconds=1.0)
    for x, y, z in zip(a, b, c, strict=True):
        assert x["init_segment"] == y["init_segment"] == z["init_segment"]
        assert x["init_hash"] == z["init_hash"]
        assert x["data"] == y["data"]  # same GOP, same parameters: same bytes
        assert len(x["parts"]) == 2  # STANDARD: 1 s parts


@pytest.mark.parametrize("mode", ["LOW", "STANDARD"])
def test_output_repeatable_under_concurrency_with_default_presets(gops, mode):
    """Re-processing a GOP reproduces its bytes (DESIGN 3.4) with each mode's default preset, also while
    other GOPs encode at the same time, as in the worker: one x264 thread per rung is what makes it so
    (frame threads + VBV gave 6 distinct outputs in 6 runs of one GOP). Both modes get High profile."""
    record = {"latency_mode": mode}
    preset, part = preset_for(record), part_seconds_for(record)

    def run(gop):
        return transcode_gop(gop, LADDER_360, preset=preset, part_seconds=part)

    with ThreadPoolExecutor(4) as pool:  # the same GOP three times among another GOP, all at once
        first, second, other, third = pool.map(run, [gops[0], gops[0], gops[1], gops[0]])
    for recs in (second, third):
        assert [r["data"] for r in recs] == [r["data"] for r in first]
        assert [r["init_segment"] for r in recs] == [r["init_segment"] for r in first]
    assert [r["data"] for r in other] != [r["data"] for r in first]
    for rec in first[:2]:  # 360p (the source's size: no scaling) and 180p (scaled)
        assert rec["rendition"]["codecs"].startswith("avc1.64"), (preset, rec["rendition"]["codecs"])  # High


def test_concatenated_segments_play_continuously(gops):
    recs = [transcode_gop(g, LADDER_360, preset="ultrafast", part_seconds=0.333, renditions={"180p", "audio"})
            for g in gops]
    video = recs[0][0]["init_segment"] + b"".join(r[0]["data"] for r in recs)
    frames = decode_video(video, b"")
    pts = [f.pts for f in frames]
    assert pts[0] == gops[0]["pts_start"] and all(b - a == 3000 for a, b in zip(pts, pts[1:], strict=False))
    assert [f.pts for f in frames if f.key_frame] == [g["pts_start"] for g in gops]
    audio = recs[0][1]["init_segment"] + b"".join(r[1]["data"] for r in recs)
    apts = [p.pts for p in _packets(audio)]
    assert all(b - a == 1024 for a, b in zip(apts, apts[1:], strict=False))  # no gap at any segment join


def test_renditions_filter_and_never_upscale(gops):
    recs = transcode_gop(gops[0], DEFAULT_LADDER, preset="ultrafast", part_seconds=1.0, renditions={"240p", "720p"})
    assert [r["rendition"]["name"] for r in recs] == ["240p"]  # 720p would upscale a 360p source


def test_corrupt_video_raises_decode_error(gops):
    gop = dict(gops[0])
    rnd = random.Random(4)
    gop["video_packets"] = [dict(p, data=rnd.randbytes(len(p["data"]))) for p in gop["video_packets"]]
    with pytest.raises(TranscodeError) as err:
        transcode_gop(gop, LADDER_360, preset="ultrafast", part_seconds=1.0)
    assert err.value.error_class == "decode" and "undecodable" in err.value.reason


def test_gop_without_keyframe_is_invalid(gops):
    gop = dict(gops[0])
    gop["video_packets"] = gop["video_packets"][1:]
    with pytest.raises(TranscodeError) as err:
        transcode_gop(gop, LADDER_360, preset="ultrafast", part_seconds=1.0)
    assert err.value.error_class == "invalid"


def test_bad_audio_keeps_the_video(gops):
    gop = dict(gops[0], audio=dict(gops[0]["audio"], codec="opus"))
    recs = transcode_gop(gop, LADDER_360, preset="ultrafast", part_seconds=1.0)
    assert [r["rendition"]["name"] for r in recs] == ["360p", "180p"]
    with pytest.raises(TranscodeError) as err:  # nothing else to publish: the GOP is refused
        transcode_gop(gop, LADDER_360, preset="ultrafast", part_seconds=1.0, renditions={"audio"})
    assert err.value.error_class == "invalid"
