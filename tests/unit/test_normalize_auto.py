"""--normalize auto, the pure part: which GOPs conform (with the reason), when the feed switches to
re-encoding and back, and the identities of GOPs across those switches (producers.gop.conform)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from producers.gop.chunker import GopChunker, GopIndexer
from producers.gop.conform import (
    IRREGULAR_GOP,
    LONG_GOP,
    OPEN_GOP,
    ConformancePolicy,
    GopShape,
    LegIdentities,
    shape_of,
)
from producers.media import MediaPacket

pytestmark = pytest.mark.unit

TB = Fraction(1, 90000)
FRAME = Fraction(1500)  # 60 fps in 1/90000


def gop(frames: int, start: int = 0, idr: bool = True, leading: int = 0, closed: bool = True) -> GopShape:
    return GopShape(start=start, duration=frames * 1500, tick=TB, idr=idr, leading=leading, frame=FRAME,
                    closed_by_key=closed)


def run(policy: ConformancePolicy, frames: list[int | GopShape]) -> list[tuple[bool, bool, str | None]]:
    """(normalize, switched, verdict kind) per GOP."""
    out = []
    for f in frames:
        d = policy.decide(f if isinstance(f, GopShape) else gop(f))
        out.append((d.normalize, d.switched, d.verdict.kind))
    return out


# --- the verdict on one GOP ------------------------------------------------------------------------

def test_a_closed_regular_gop_conforms():
    p = ConformancePolicy(max_seconds=4)
    assert p.judge(gop(60), Fraction(1)).ok
    assert p.judge(gop(61), Fraction(1)).ok  # within a frame


@pytest.mark.parametrize(("shape", "kind", "words"), [
    (gop(60, start=9000, idr=False), OPEN_GOP, "not an IDR"),
    (gop(60, leading=3), OPEN_GOP, "3 frame(s) shown before the keyframe"),
    (gop(300), LONG_GOP, "long GOP: 5.000 s, over the 4.000 s limit"),
    (gop(42), IRREGULAR_GOP, "irregular GOP: 0.700 s instead of 1.000 s"),
])
def test_what_does_not_conform_is_named(shape: GopShape, kind: str, words: str):
    v = ConformancePolicy(max_seconds=4).judge(shape, Fraction(1))
    assert v.kind == kind and words in v.reason


def test_a_gop_ended_by_the_session_is_not_held_to_the_length():
    p = ConformancePolicy(max_seconds=4)
    assert p.judge(gop(17, closed=False), Fraction(1)).ok
    assert p.judge(gop(300, closed=False), Fraction(1)).kind == LONG_GOP  # too long is too long


# --- the switching -----------------------------------------------------------------------------------

def test_a_conforming_feed_passes_through_all_along():
    assert run(ConformancePolicy(4), [60] * 10) == [(False, False, None)] * 10


def test_an_open_gop_switches_to_re_encoding_with_its_reason():
    p = ConformancePolicy(4)
    got = run(p, [60, gop(60, start=90000, idr=False), gop(60, leading=3), gop(60, idr=False)])
    assert got[0] == (False, False, None)
    assert got[1] == (True, True, OPEN_GOP)  # the switch, once
    assert got[2:] == [(True, False, OPEN_GOP)] * 2  # no further switch while it stays open
    assert p.normalizing


def test_scene_cut_keyframes_switch_and_the_feed_switches_back_after_n_conforming_gops():
    p = ConformancePolicy(4, switch_back_after=3)
    got = run(p, [90, 90, 50, 90, 90, 90, 90])
    assert got[:2] == [(False, False, None)] * 2
    assert got[2] == (True, True, IRREGULAR_GOP)
    assert got[3:5] == [(True, False, IRREGULAR_GOP), (True, False, None)]  # 50 then 90: a new run starts
    assert got[5] == (False, True, None)  # the third 90 in a row passes through again
    assert got[6] == (False, False, None) and p.nominal == Fraction(90, 60)


def test_a_run_is_broken_by_an_open_gop_and_counts_again_from_zero():
    p = ConformancePolicy(4, switch_back_after=2)
    got = run(p, [gop(60, idr=False), 60, gop(60, leading=2), 60, 60])
    assert [n for n, _, _ in got] == [True, True, True, True, False]
    assert got[-1][1]  # switched back on the second conforming GOP after the open one


def test_a_new_gop_length_is_learnt_through_re_encoding():
    p = ConformancePolicy(4, switch_back_after=2)
    got = run(p, [120, 120, 60, 60, 60])  # the venue changed its keyframe interval from 2 s to 1 s
    assert got[2] == (True, True, IRREGULAR_GOP)  # the first 1 s GOP already counts as a run of one
    assert got[3] == (False, True, None) and p.nominal == Fraction(1)
    assert got[4] == (False, False, None)


def test_the_last_gop_of_a_session_neither_switches_nor_counts():
    p = ConformancePolicy(4, switch_back_after=2)
    assert run(p, [60, 60, gop(17, closed=False)]) == [(False, False, None)] * 3
    p = ConformancePolicy(4, switch_back_after=2)
    got = run(p, [gop(60, idr=False), 60, gop(17, closed=False)])
    assert [n for n, _, _ in got] == [True, True, True] and p.streak == 1


def test_restart_forgets_the_feed():
    p = ConformancePolicy(4)
    run(p, [60, gop(60, idr=False)])
    p.restart()
    assert not p.normalizing and p.nominal is None
    assert run(p, [120, 120]) == [(False, False, None)] * 2


def test_the_same_feed_switches_at_the_same_gops():
    feed = [90, 90, gop(90, idr=False), 50, 90, 90, 90, 90, gop(90, leading=2), 90]
    assert run(ConformancePolicy(4), feed) == run(ConformancePolicy(4), feed)


# --- shapes from records -----------------------------------------------------------------------------

AVCC = b"\x01\x64\x00\x1f\xff\xe1\x00\x04\x67\x64\x00\x1f\x01\x00\x02\x68\xee"  # avcC, 4-byte lengths


def avcc(nal_type: int) -> bytes:
    nal = bytes([0x60 | nal_type]) + b"\x88\x84"
    return len(nal).to_bytes(4, "big") + nal


def record(packets: list[tuple[int, bytes]], start: int, duration: int, extradata: bytes = AVCC) -> dict:
    return {"video": {"codec": "h264", "extradata": extradata, "frame_rate_num": 30, "frame_rate_den": 1},
            "time_base_num": 1, "time_base_den": 1000, "pts_start": start, "duration": duration,
            "video_packets": [{"pts": pts, "dts": pts, "data": data} for pts, data in packets]}


def test_shape_of_an_avcc_record_with_leading_pictures():
    s = shape_of(record([(1000, avcc(1)), (967, avcc(1)), (1033, avcc(1))], 1000, 1000))
    assert (s.idr, s.leading, s.seconds) == (False, 1, 1)
    assert s.frame == Fraction(100, 3) and s.closed_by_key


def test_shape_of_an_annex_b_record_starting_with_an_idr():
    annexb = b"\x00\x00\x00\x01\x67\x64\x00\x1f\x00\x00\x00\x01\x68\xee"
    s = shape_of(record([(0, b"\x00\x00\x00\x01\x65\x88\x84"), (33, b"\x00\x00\x01\x41\x9a")], 0, 1000,
                        extradata=annexb), closed_by_key=False)
    assert s.idr and s.leading == 0 and not s.closed_by_key


# --- identities across legs --------------------------------------------------------------------------

VIDEO = {"codec": "h264", "width": 64, "height": 36, "frame_rate_num": 30, "frame_rate_den": 1, "extradata": b"x"}


def chunked(gop_frames: list[int], base: int = 0) -> tuple[GopChunker, list[dict]]:
    """A natural feed (GOP lengths in frames at 30 fps, 1/90000) through a chunker."""
    ch = GopChunker("s", "primary", VIDEO, None, TB)
    out, pts = [], base
    for n in gop_frames:
        for i in range(n):
            out += ch.push(MediaPacket("video", pts, pts, b"v", i == 0, 3000))
            pts += 3000
    return ch, out + ch.flush()


def test_a_feed_that_never_switches_keeps_the_chunkers_identities():
    ch, gops = chunked([60] * 4 + [61, 59] + [60] * 3, base=90000 * 3600)
    ids = LegIdentities()
    ids.start_leg(ch.indexer)
    got = [ids.assign(g) for g in gops]
    assert [(g["gop_index"], g["epoch"]) for g in got] == [(g["gop_index"], g["epoch"]) for g in gops]


def test_each_leg_is_a_discontinuity_that_continues_at_last_plus_one():
    ch, gops = chunked([60] * 3)
    ids = LegIdentities()
    ids.start_leg(ch.indexer)
    first = [ids.assign(g) for g in gops]
    # a re-encoded leg on the 2 s grid of 1/90000, then the feed passes through again
    grid = GopIndexer(nominal=Fraction(180000), grid=True)
    ids.start_leg(grid)
    norm = [ids.assign({"epoch": 0, "pts_start": p, "duration": d, "video_packets": [{}] * (d // 3000)})
            for p, d in ((270000, 90000), (360000, 180000), (540000, 180000))]  # the first one ends on the grid
    ids.start_leg(ch.indexer)
    back = ids.assign({"epoch": 0, "pts_start": 720000, "duration": 180000, "video_packets": [{}] * 60})
    assert [g["gop_index"] for g in first] == [0, 1, 2]
    assert [(g["gop_index"], g["epoch"]) for g in norm] == [(3, 1), (4, 1), (5, 1)]  # grid: 360000 -> index+1
    assert (back["gop_index"], back["epoch"]) == (6, 2)


def test_an_epoch_the_chunker_opens_inside_a_leg_is_opened_too():
    ch, gops = chunked([60] * 3)
    ch2, later = chunked([60] * 2)  # the pusher reconnected: timestamps restart at 0
    later = [{**g, "epoch": 1} for g in later]
    ids = LegIdentities()
    ids.start_leg(ch.indexer)
    got = [ids.assign(g) for g in gops + later]
    assert [(g["gop_index"], g["epoch"]) for g in got] == [(0, 0), (1, 0), (2, 0), (3, 1), (4, 1)]


def test_the_same_legs_give_the_same_identities():
    def once() -> list[tuple[int, int]]:
        ch, gops = chunked([60, 60, 45, 60, 60], base=123456)
        ids = LegIdentities()
        out = []
        for i, g in enumerate(gops):
            if i in (0, 2, 4):  # legs start at the first, third and fifth GOP
                ids.start_leg(ch.indexer)
            out.append((ids.assign(g)["gop_index"], ids.epoch))
        return out

    assert once() == once()
