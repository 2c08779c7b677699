"""Sub-GOP streaming through the encoder (issue 15): a GOP's chunks in, each chunk's parts out as soon as they
are encoded; state scoped to the GOP; the same part bytes whoever re-does the GOP; duplicates dropped per
(gop_index, chunk_index); a GOP whose chunks stop is closed with its parts; nothing goes to the dlq."""

from __future__ import annotations

import io
import time
from collections import defaultdict

import av
import pytest

from floodlight.settings import Settings
from processors.encoder.ladder import preset_for
from processors.encoder.streaming import GopStream, assemble
from processors.encoder.transcode import TranscodeError, transcode_gop
from producers.publish.publisher import publish_gops
from producers.sources.testsrc import generate_gops
from tests.integration.test_encoder import SMALL_LADDER, TopicReader, register, worker_thread  # noqa: F401
from tests.support import wait_until

START_MS = 1_795_000_000_000


def chunks_of(stream: str, seconds: float, ingest_id: str = "primary", part: float = 1 / 3) -> list[dict]:
    return generate_gops(stream, seconds, width=640, height=360, gop_seconds=1.0, start_ms=START_MS,
                         ingest_id=ingest_id, part_seconds=part)


def stream_gop(chunks: list[dict]) -> list[list[dict]]:
    """The part records of each chunk of one GOP, in-process, with the preset a LOW stream gets."""
    s = GopStream(chunks[0], SMALL_LADDER, preset=preset_for({"latency_mode": "LOW"}))
    return [s.feed(c) for c in chunks]


def test_each_chunk_gives_its_own_frames_as_one_part_per_rendition() -> None:
    cs = chunks_of("s", 2)
    gop0 = [c for c in cs if c["gop_index"] == cs[0]["gop_index"]]
    assert [c["chunk_index"] for c in gop0] == [0, 1, 2] and gop0[-1]["is_last_chunk"]
    out = stream_gop(gop0)
    for k, (chunk, recs) in enumerate(zip(gop0, out, strict=True)):
        assert sorted(r["rendition"]["name"] for r in recs) == ["180p", "360p", "audio"]
        video = [r for r in recs if r["rendition"]["media_type"] == "VIDEO"]
        # zero latency: the part holds exactly the chunk's frames, starting where the chunk starts
        assert {(r["pts"], r["duration"]) for r in video} == {(chunk["pts_start"] + 30000 * k, 30000)}
        assert all(r["part_index"] == k and r["is_last_part"] == (k == 2) for r in recs)
        assert all(r["parts"][0]["independent"] == (k == 0) for r in video)
    for name in ("360p", "180p", "audio"):
        parts = [r for recs in out for r in recs if r["rendition"]["name"] == name]
        assert len({r["init_hash"] for r in parts}) == 1
        with av.open(io.BytesIO(parts[0]["init_segment"] + b"".join(r["data"] for r in parts))) as c:
            if name == "audio":
                assert sum(1 for p in c.demux() if p.size) == sum(len(ch["audio_packets"]) for ch in gop0)
            else:
                frames = list(c.decode(video=0))
                assert len(frames) == 30 and frames[0].key_frame and not any(f.key_frame for f in frames[1:])
        if name != "audio":
            assert parts[-1]["rendition"]["bandwidth"] > 0 and parts[-1]["rendition"]["codecs"].startswith("avc1.")


def test_re_processing_a_gop_gives_the_same_part_bytes_and_state_stays_in_the_gop() -> None:
    cs = chunks_of("s", 2)
    g0 = [c for c in cs if c["gop_index"] == cs[0]["gop_index"]]
    g1 = [c for c in cs if c["gop_index"] != cs[0]["gop_index"]]
    a, b = stream_gop(g0), stream_gop(g0)
    assert [[r["data"] for r in recs] for recs in a] == [[r["data"] for r in recs] for recs in b]
    # GOP 1 alone (another member) is the same as GOP 1 after GOP 0 in one process: nothing carried over
    c = stream_gop(g1)
    stream_gop(g0)
    assert [[r["data"] for r in recs] for recs in c] == [[r["data"] for r in recs] for recs in stream_gop(g1)]
    # the whole-GOP path still takes the GOP reassembled from its chunks (replay)
    whole = assemble(g0)
    assert len(whole["video_packets"]) == 30 and whole["duration"] == 90000
    assert len(transcode_gop(whole, SMALL_LADDER, preset="ultrafast", part_seconds=1 / 3)) == 3


def test_a_gop_closed_early_gets_closing_records_and_bad_order_is_refused() -> None:
    cs = chunks_of("s", 1)
    s = GopStream(cs[0], SMALL_LADDER, preset="ultrafast")
    with pytest.raises(TranscodeError):
        s.feed(cs[2])  # chunk 2 before chunk 0
    first = s.feed(cs[0])
    assert len(first) == 3
    closing = s.close()
    assert sorted(r["rendition"]["name"] for r in closing) == ["180p", "360p", "audio"]
    assert all(r["is_last_part"] and r["part_index"] == 1 and not r["data"] and not r["parts"] for r in closing)
    assert s.close() == []


def test_worker_streams_parts_drops_duplicate_chunks_and_closes_a_stalled_gop(isolated: Settings,
                                                                            worker_thread):  # noqa: F811
    register(isolated, "live", ladder=SMALL_LADDER, latency_mode="LOW")
    primary = chunks_of("live", 3)
    backup = chunks_of("live", 3, ingest_id="backup")
    last_gop = primary[-1]["gop_index"]
    stalled = [c for c in primary if c["gop_index"] != last_gop or c["chunk_index"] == 0]  # ingest died mid-GOP
    backup = [c for c in backup if c["gop_index"] != last_gop]
    mixed = [c for pair in zip(stalled, backup, strict=False) for c in pair] + stalled[len(backup):]
    publish_gops(isolated, mixed)
    worker_thread()
    segments = TopicReader(isolated, "segments", "RenditionSegment")
    dlq = TopicReader(isolated, "dlq", "DeadLetter")
    try:
        def closed() -> list[dict] | None:
            recs = segments.read()
            done = {(r["gop_index"], r["rendition"]["name"]) for r in recs if r["is_last_part"]}
            return recs if len(done) == 9 else None

        recs = wait_until(closed, 120, what="3 GOPs x 3 renditions closed")
        time.sleep(1.0)
        recs = segments.read()
        assert dlq.read() == []
    finally:
        segments.close()
        dlq.close()
    by: dict[tuple[int, str], list[dict]] = defaultdict(list)
    for r in recs:
        by[(r["gop_index"], r["rendition"]["name"])].append(r)
    for (gop, name), parts in by.items():
        idx = [p["part_index"] for p in parts]
        assert idx == list(range(len(idx))), f"{gop} {name}: parts {idx} (duplicate chunks must be dropped)"
        assert parts[-1]["is_last_part"] and not any(p["is_last_part"] for p in parts[:-1])
        if gop != last_gop:
            assert len(parts) == 3 and all(p["data"] for p in parts)
        else:  # only chunk 0 came: its part, then a closing record
            assert len(parts) == 2 and parts[0]["data"] and not parts[1]["data"]
    # the member's part bytes are those of the GOP done anywhere else (in this process)
    g0 = [c for c in primary if c["gop_index"] == primary[0]["gop_index"]]
    here = {(r["rendition"]["name"], r["part_index"]): r["data"] for recs in stream_gop(g0) for r in recs}
    there = {(r["rendition"]["name"], r["part_index"]): r["data"] for r in recs if r["gop_index"] == g0[0]["gop_index"]}
    assert here == there
