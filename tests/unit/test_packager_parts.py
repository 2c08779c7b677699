"""Parts that leave the encoder one by one (issue 15): the packaging core writes and lists each the moment
it arrives, announces every playlist write with its msn and part, completes segments from their parts,
never lists a part it will contradict, and never replaces a segment with listed parts by a gap.
Synthetic part records, a real directory store, no Kafka."""

from __future__ import annotations

import copy
from typing import Any

import m3u8

from sinks.packager.conformance import check_media_playlist
from sinks.packager.core import PARTIAL_DEADLINE_S
from sinks.packager.playlist import iso_ms
from tests.support import sample_records
from tests.unit.test_packager_core import BASE_GOP, T0, pkg, playlist_of

PARTS = 3


def part(g: int, i: int, name: str = "720p", *, last: bool | None = None, data: bytes | None = None,
         media: str = "VIDEO") -> dict[str, Any]:
    """Part i of GOP g (1 s GOPs, three parts of 1/3 s): the record the streaming encoder publishes."""
    r = copy.deepcopy(sample_records()["RenditionSegment"])
    ts = 90000
    r["gop_index"] = BASE_GOP + g
    r["pts"] = (BASE_GOP + g) * ts + i * 30000
    r["duration"] = 30000
    r["capture_wallclock_ms"] = T0 + g * 1000
    r["rendition"].update(name=name, media_type=media, codecs="mp4a.40.2" if media == "AUDIO" else "avc1.64001f")
    r["init_segment"] = b"ftyp-moov-" + name.encode()
    r["data"] = data if data is not None else bytes([g % 256, i]) * 15 + name.encode()
    r["parts"] = [{"duration": 1 / 3, "offset": 0, "length": len(r["data"]), "independent": i == 0}]
    r["part_index"] = i
    r["is_last_part"] = (i == PARTS - 1) if last is None else last
    return r


def whole(p, store, ups, g: int, now: float, name: str = "720p") -> None:
    for i in range(PARTS):
        p.add(part(g, i, name), now)
        p.flush()


def last_update(ups: list[dict[str, Any]], name: str = "720p") -> tuple[int, int]:
    u = [u for u in ups if u["rendition"] == name][-1]
    return u["msn"], u["part"]


def complete(pl: m3u8.M3U8) -> list[str]:
    return [s.uri for s in pl.segments if s.uri is not None]


def test_each_part_is_written_listed_and_announced_as_it_arrives(tmp_path) -> None:
    p, store, ups = pkg(tmp_path)
    whole(p, store, ups, 0, now=0)  # the first segment: the playlist starts once one is complete
    ups.clear()
    p.add(part(1, 0), now=1)
    assert store.get("live/s1/720p/1.0.m4s") is not None
    p.flush()
    text = store.get("live/s1/720p/playlist.m3u8").data.decode()
    lines = text.splitlines()
    assert '#EXT-X-PART:DURATION=0.33333,URI="1.0.m4s",INDEPENDENT=YES' in lines
    assert '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="1.1.m4s"' in lines
    assert "1.m4s" not in lines  # no EXTINF for the segment being built
    first = lines.index('#EXT-X-PART:DURATION=0.33333,URI="1.0.m4s",INDEPENDENT=YES')
    assert lines[first - 1] == f"#EXT-X-PROGRAM-DATE-TIME:{iso_ms(T0 + 1000)}"  # its GOP's capture time
    assert [(u["msn"], u["part"]) for u in ups if u["rendition"] == "720p"] == [(1, 0)]
    p.add(part(1, 1), now=1.3)
    p.flush()
    assert last_update(ups) == (1, 1)
    p.add(part(1, 2), now=1.6)  # the last part: the segment is complete
    p.flush()
    assert last_update(ups) == (1, -1)
    text = store.get("live/s1/720p/playlist.m3u8").data.decode()
    assert "#EXTINF:1.00000,\n1.m4s" in text and '"2.0.m4s"' in text  # the hint moved on
    seg = store.get("live/s1/720p/1.m4s").data
    assert seg == b"".join(part(1, i)["data"] for i in range(PARTS))  # the segment is its parts
    assert check_media_playlist(text) == []


def test_partial_segment_has_the_pdt_of_its_gop_and_parts_of_a_later_msn_wait(tmp_path) -> None:
    p, store, ups = pkg(tmp_path)
    whole(p, store, ups, 0, now=0)
    p.add(part(2, 0), now=1)  # GOP 2 from the other encoder, before GOP 1: written, not listed
    p.add(part(1, 0), now=1.1)
    p.flush()
    pl = playlist_of(store)
    text = store.get("live/s1/720p/playlist.m3u8").data.decode()
    assert store.get("live/s1/720p/2.0.m4s") is not None
    assert '"2.0.m4s"' not in text.split("PRELOAD-HINT")[0] and '"1.0.m4s"' in text
    pdts = [ln for ln in text.splitlines() if ln.startswith("#EXT-X-PROGRAM-DATE-TIME")]
    assert pdts[-1] == f"#EXT-X-PROGRAM-DATE-TIME:{iso_ms(T0 + 1000)}"
    assert complete(pl) == ["0.m4s"]
    for i in (1, 2):
        p.add(part(1, i), now=1.5)
    p.flush()  # segment 1 complete: segment 2's waiting part is listed at once
    text = store.get("live/s1/720p/playlist.m3u8").data.decode()
    assert '"2.0.m4s"' in text and '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="2.1.m4s"' in text
    assert last_update(ups) == (2, 0)


def test_a_part_delivered_again_is_never_rewritten_and_a_different_one_is_refused(tmp_path) -> None:
    p, store, ups = pkg(tmp_path)
    whole(p, store, ups, 0, now=0)
    p.add(part(1, 0), now=1)
    p.add(part(1, 1), now=1.2)
    p.flush()
    before = store.get("live/s1/720p/1.1.m4s").data
    p.add(part(1, 0), now=2)  # another member re-does the GOP: same bytes
    p.add(part(1, 1, data=b"different bytes"), now=2)  # a contradiction: refused, the listed part stays
    assert p.stats["duplicate_parts"] == 1 and p.stats["contradicting_parts"] == 1
    assert store.get("live/s1/720p/1.1.m4s").data == before
    p.add(part(1, 2), now=2.1)
    p.flush()
    for i in range(PARTS):  # and once complete, every re-delivery is dropped
        p.add(part(1, i, data=b"x"), now=3)
    assert store.get("live/s1/720p/1.m4s").data == part(1, 0)["data"] + before + part(1, 2)["data"]


def test_closing_record_completes_a_segment_at_the_parts_it_has(tmp_path) -> None:
    p, store, ups = pkg(tmp_path)
    for g in (0, 1):
        p.add(part(g, 0, "audio", media="AUDIO", last=False), now=g)
        p.add(part(g, 1, "audio", media="AUDIO", last=False), now=g)
        closing = part(g, 2, "audio", media="AUDIO", last=True)
        closing.update(data=b"", parts=[], duration=0)
        p.add(closing, now=g)
        p.flush()
    pl = playlist_of(store, "audio")
    assert complete(pl) == ["0.m4s", "1.m4s"]
    assert abs(pl.segments[-1].duration - 2 / 3) < 1e-3
    assert store.get("live/s1/audio/1.2.m4s") is None


def test_a_segment_with_listed_parts_is_waited_for_then_completed_short_never_a_gap(tmp_path) -> None:
    p, store, ups = pkg(tmp_path)
    whole(p, store, ups, 0, now=0)
    p.add(part(1, 0), now=1)
    p.flush()
    whole(p, store, ups, 2, now=1.5)  # the next GOP is complete; GOP 1 stalls (its encoder died)
    p.tick(now=1.5 + 2.5)  # past the gap deadline (2 s): no gap over listed parts
    p.flush()
    assert p.stats["gaps"] == 0
    text = store.get("live/s1/720p/playlist.m3u8").data.decode()
    assert '"1.0.m4s"' in text and "GAP" not in text
    p.add(part(1, 1), now=8)  # the new owner re-does the GOP: part 0 again (dropped), then the rest
    p.add(part(1, 0), now=8)
    p.add(part(1, 2), now=8)
    p.flush()
    pl = playlist_of(store)
    assert complete(pl) == ["0.m4s", "1.m4s", "2.m4s"]
    assert p.stats["gaps"] == 0 and p.stats["duplicate_parts"] == 1
    # a GOP that never gets the rest is completed with its parts after the partial deadline
    p.add(part(3, 0), now=10)
    whole(p, store, ups, 4, now=10)
    p.tick(now=10 + PARTIAL_DEADLINE_S + 0.1)
    p.flush()
    pl = playlist_of(store)
    assert complete(pl)[-2:] == ["3.m4s", "4.m4s"] and p.stats["short_segments"] == 1
    assert abs(pl.segments[-2].duration - 1 / 3) < 1e-3 and p.stats["gaps"] == 0


def test_held_parts_hold_the_commit_and_restart_lists_them_again(tmp_path) -> None:
    p, store, ups = pkg(tmp_path)
    whole(p, store, ups, 0, now=0)
    p.add(part(1, 0), now=1, partition=0, offset=40)
    p.add(part(1, 1), now=1, partition=0, offset=41)
    assert sorted(p.held_offsets()) == [(0, 40), (0, 41)]
    p.flush()
    p.checkpoint()
    from sinks.packager.core import StreamPackager

    again = StreamPackager.open(store, "s1", config=p.state.config, keys=p.keys, gap_deadline_s=2.0)
    for i in range(PARTS):  # re-read from the committed offset (40)
        again.add(part(1, i), now=5)
    again.flush()
    pl = playlist_of(store)
    assert complete(pl) == ["0.m4s", "1.m4s"] and again.held_offsets() == []


def test_rendition_reports_and_skip_playlist_carry_the_partial_segment(tmp_path) -> None:
    p, store, ups = pkg(tmp_path)
    for g in range(8):
        whole(p, store, ups, g, now=g)
        for i in range(PARTS):
            p.add(part(g, i, "360p"), now=g)
        p.flush()
    p.add(part(8, 0), now=8)
    p.add(part(8, 0, "360p"), now=8)
    p.add(part(8, 1, "360p"), now=8)
    p.flush()
    text = store.get("live/s1/720p/playlist.m3u8").data.decode()
    assert '#EXT-X-RENDITION-REPORT:URI="../360p/playlist.m3u8",LAST-MSN=8,LAST-PART=1' in text
    skip = store.get("live/s1/720p/playlist-skip.m3u8").data.decode()
    assert "#EXT-X-SKIP:SKIPPED-SEGMENTS=" in skip and '"8.0.m4s"' in skip
    assert check_media_playlist(text) == [] and check_media_playlist(skip) == []
    m3u8.loads(text)  # a third-party parser takes it
    dvr = store.get("live/s1/720p/dvr.m3u8").data.decode()
    assert "8.0.m4s" not in dvr
