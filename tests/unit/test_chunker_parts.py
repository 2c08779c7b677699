"""Sub-GOP chunks (issue 15): a GOP on the grid leaves the chunker while it is captured, one part's frames
at a time, with its identity fixed at its keyframe; whole GOPs stay as they were everywhere else."""

from __future__ import annotations

import pytest

from producers.gop.chunker import GopIndexer
from tests.unit.test_chunker import feed, make, run

GRID = {"gop_ticks": 90000, "grid": True}  # 1 s GOPs of 30 frames at 30 fps, 1/90000


def test_a_gop_leaves_in_parts_as_its_frames_arrive() -> None:
    ch = make(**GRID, part_seconds=1 / 3)
    assert ch.part_ticks == 30000  # 10 frames
    out: list[dict] = []
    emitted_at: list[int] = []  # the frame number after which each chunk came out
    for i, p in enumerate(feed(0, 60, gop_frames=30, with_audio=False)):
        got = ch.push(p)
        out += got
        emitted_at += [i] * len(got)
    # a chunk comes out with its last frame, not with the next one
    assert emitted_at == [9, 19, 29, 39, 49, 59]
    assert [(c["gop_index"], c["chunk_index"], c["is_last_chunk"]) for c in out] == [
        (0, 0, False), (0, 1, False), (0, 2, True), (1, 0, False), (1, 1, False), (1, 2, True)]
    assert all(len(c["video_packets"]) == 10 for c in out)
    assert [c["duration"] for c in out] == [30000] * 6  # each chunk's own span; they add up to the GOP
    assert {c["pts_start"] for c in out[:3]} == {0} and {c["pts_start"] for c in out[3:]} == {90000}
    assert [bool(c["video"]["extradata"]) for c in out] == [True, False, False] * 2  # codec params in chunk 0
    assert out[0]["video_packets"][0]["keyframe"] and not any(p["keyframe"] for c in out[1:3]
                                                              for p in c["video_packets"])
    assert ch.flush() == []


def test_chunks_carry_every_packet_once_with_the_identities_of_whole_gops() -> None:
    pkts = feed(0, 300, gop_frames=30)
    whole = run(make(**GRID), pkts)
    chunks = run(make(**GRID, part_seconds=0.25), pkts)
    assert {c["chunk_index"] for c in chunks} == {0, 1, 2, 3}  # 8 + 8 + 8 + 6 frames
    by_gop: dict[int, list[dict]] = {}
    for c in chunks:
        by_gop.setdefault(c["gop_index"], []).append(c)
    assert sorted(by_gop) == [g["gop_index"] for g in whole]
    for g in whole:
        cs = by_gop[g["gop_index"]]
        assert [c["chunk_index"] for c in cs] == list(range(len(cs))) and cs[-1]["is_last_chunk"]
        assert [p["pts"] for c in cs for p in c["video_packets"]] == [p["pts"] for p in g["video_packets"]]
        assert sum(c["duration"] for c in cs) == g["duration"] == 90000
        assert {(c["epoch"], c["capture_wallclock_ms"]) for c in cs} == {(g["epoch"], g["capture_wallclock_ms"])}
    # audio: every packet exactly once, each chunk's before its end (the first also takes what came before)
    end48 = 300 * 3000 * 48000 // 90000  # the end of input: audio past the last frame has no GOP to go with
    a_whole = sorted(p["pts"] for g in whole for p in g["audio_packets"] if p["pts"] < end48)
    a_chunks = [p["pts"] for c in chunks for p in c["audio_packets"]]
    assert sorted(a_chunks) == a_whole and len(set(a_chunks)) == len(a_chunks)
    for c in chunks[:-1]:
        end = c["video_packets"][-1]["pts"] + 3000
        assert all(p["pts"] * 90000 // 48000 < end for p in c["audio_packets"])


def test_an_interrupted_gop_ends_with_a_last_chunk_and_a_jump_opens_an_epoch() -> None:
    ch = make(**GRID, part_seconds=1 / 3)
    out = run(ch, feed(0, 45, gop_frames=30))  # the feed stops 15 frames into GOP 1
    assert [(c["gop_index"], c["chunk_index"], c["is_last_chunk"], len(c["video_packets"])) for c in out] == [
        (0, 0, False, 10), (0, 1, False, 10), (0, 2, True, 10), (1, 0, False, 10), (1, 1, True, 5)]
    ch = make(**GRID, part_seconds=1 / 3)
    out = run(ch, feed(0, 45, gop_frames=30, with_audio=False) + feed(0, 30, gop_frames=30, with_audio=False,
                                                                      base=90000 * 100))
    assert [c["gop_index"] for c in out if c["is_last_chunk"]] == [0, 1, 2]
    assert [c["epoch"] for c in out if c["chunk_index"] == 0] == [0, 0, 1]


def test_whole_gops_without_a_grid_or_a_part_duration() -> None:
    assert make(part_seconds=1 / 3).part_ticks is None  # a natural feed: GOP length learnt, whole GOPs
    assert make(**GRID).part_ticks is None
    assert make(**GRID, part_seconds=2.0).part_ticks is None  # a part as long as the GOP: whole GOPs
    out = run(make(**GRID, part_seconds=0), feed(0, 60, gop_frames=30))
    assert [(c["chunk_index"], c["is_last_chunk"]) for c in out] == [(0, True), (0, True)]


def test_indexer_begin_then_end_equals_assign() -> None:
    a, b = GopIndexer(nominal=90000, grid=True), GopIndexer(nominal=90000, grid=True)
    for start in (0, 90000, 180000, 90000 * 50, 90000 * 51):
        got = b.begin(start)
        b.end(start + 90000)
        assert got == a.assign(start, 90000)


@pytest.mark.parametrize("part_seconds", [None, 1 / 3])
def test_audio_from_before_a_skip_stays_out_of_the_next_gop(part_seconds) -> None:
    # GOP 0, then the source skips GOPs 1 and 2 (a testsrc behind real time) and goes on at GOP 3: the audio
    # it had sent ahead of GOP 0's end must not open GOP 3's audio with a 2 s hole
    ch = make(**GRID, part_seconds=part_seconds)
    out = run(ch, feed(0, 30, gop_frames=30) + feed(90, 30, gop_frames=30))
    first3 = next(c for c in out if c["gop_index"] == 3 and c["chunk_index"] == 0)
    assert min(a["pts"] for a in first3["audio_packets"]) * 90000 // 48000 >= 3 * 90000 - 45000
    assert ch.stale_audio > 0
    gop0 = [a["pts"] for c in out if c["gop_index"] == 0 for a in c["audio_packets"]]
    assert min(gop0) == 0  # the first GOP keeps the audio that came before its keyframe
