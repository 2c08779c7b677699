"""HLS / LL-HLS rendering, tag by tag, from synthetic state (no I/O)."""

from __future__ import annotations

import m3u8

from sinks.packager import playlist
from sinks.packager.conformance import attrs, check_media_playlist
from sinks.packager.state import CueEntry, Part, Segment, StreamConfig, StreamState, Track

T0 = 1_795_000_000_000


def make_state(n: int = 30, seg_s: float = 1.0, parts: int = 3, ended: bool = False, drm: bool = False,
               epochs: dict[int, int] | None = None, gaps: set[int] = frozenset()) -> StreamState:
    st = StreamState("s1", config=StreamConfig(latency_mode="LOW", live_window_s=20, drm=drm, dvr_window_s=7200))
    ts = 90000
    for name, mt, codecs in (("720p", "VIDEO", "avc1.64001f"), ("360p", "VIDEO", "avc1.42c01e"),
                             ("audio", "AUDIO", "mp4a.40.2")):
        t = Track(name=name, media_type=mt, codecs=codecs, bandwidth=4_400_000 if name == "720p" else 900_000,
                  average_bandwidth=3_900_000 if name == "720p" else 800_000,
                  width=1280 if name == "720p" else 640 if mt == "VIDEO" else 0,
                  height=720 if name == "720p" else 360 if mt == "VIDEO" else 0,
                  frame_rate=30.0 if mt == "VIDEO" else 0.0, channels=2 if mt == "AUDIO" else 0)
        if mt == "AUDIO":
            t.bandwidth = t.average_bandwidth = 128_000
        t.init_name("h1")
        for m in range(n):
            seg = Segment(msn=m, pts=m * int(seg_s * ts), duration=int(seg_s * ts), timescale=ts,
                          pdt_ms=T0 + int(m * seg_s * 1000), epoch=(epochs or {}).get(m, 0), init_hash="h1",
                          parts=[Part(seg_s / parts, j == 0) for j in range(parts)], gap=m in gaps,
                          key_id=f"k{m // 10}" if drm else None, iv_hex=f"{m // 10:032x}" if drm else None)
            if seg.gap:
                seg.parts = []
            t.segments[m] = seg
            st.note_durations(seg)
        st.tracks[name] = t
    st.ended = ended
    return st


def lines_of(text: str) -> list[str]:
    return text.splitlines()


def test_live_playlist_header_tags() -> None:
    st = make_state()
    text = playlist.media_playlist(st, "720p")
    lines = lines_of(text)
    assert lines[0] == "#EXTM3U"
    assert "#EXT-X-VERSION:9" in lines
    assert "#EXT-X-TARGETDURATION:1" in lines
    sc = attrs(next(x for x in lines if x.startswith("#EXT-X-SERVER-CONTROL")))
    assert sc["CAN-BLOCK-RELOAD"] == "YES"
    assert float(sc["PART-HOLD-BACK"]) >= 3 * st.part_target
    assert float(sc["HOLD-BACK"]) >= 3 * st.target_duration
    assert float(sc["CAN-SKIP-UNTIL"]) >= 6 * st.target_duration
    assert attrs(next(x for x in lines if x.startswith("#EXT-X-PART-INF")))["PART-TARGET"] == "0.334"
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:0" in lines
    assert lines.index('#EXT-X-MAP:URI="init.mp4"') < lines.index("#EXTINF:1.00000,")
    assert check_media_playlist(text) == []


def test_live_window_media_sequence_and_pdt() -> None:
    st = make_state(n=30)
    pl = m3u8.loads(playlist.media_playlist(st, "720p"))
    assert pl.media_sequence == 10  # 20 s live window of 1 s segments
    assert [s.uri for s in pl.segments] == [f"{m}.m4s" for m in range(10, 30)]
    assert all(s.program_date_time is not None for s in pl.segments)
    assert pl.segments[0].program_date_time.timestamp() * 1000 == T0 + 10_000


def test_parts_only_near_the_live_edge_and_preload_hint() -> None:
    st = make_state(n=30)
    lines = lines_of(playlist.media_playlist(st, "720p"))
    part_uris = [attrs(x)["URI"] for x in lines if x.startswith("#EXT-X-PART:")]
    assert part_uris[0] == "27.0.m4s" and part_uris[-1] == "29.2.m4s" and len(part_uris) == 9
    assert attrs(next(x for x in lines if x.startswith("#EXT-X-PART:")))["INDEPENDENT"] == "YES"
    assert lines.index('#EXT-X-PART:DURATION=0.33333,URI="29.2.m4s"') < lines.index("29.m4s")
    hint = next(x for x in lines if x.startswith("#EXT-X-PRELOAD-HINT"))
    assert attrs(hint) == {"TYPE": "PART", "URI": "30.0.m4s"}


def test_rendition_reports_name_the_other_renditions() -> None:
    lines = lines_of(playlist.media_playlist(make_state(), "720p"))
    reports = [attrs(x) for x in lines if x.startswith("#EXT-X-RENDITION-REPORT")]
    assert reports == [{"URI": "../360p/playlist.m3u8", "LAST-MSN": "29", "LAST-PART": "2"},
                       {"URI": "../audio/playlist.m3u8", "LAST-MSN": "29", "LAST-PART": "2"}]


def test_delta_update_skips_old_segments_only() -> None:
    st = make_state(n=30)
    full = m3u8.loads(playlist.media_playlist(st, "720p"))
    text = playlist.media_playlist(st, "720p", playlist.SKIP)
    lines = lines_of(text)
    skip = attrs(next(x for x in lines if x.startswith("#EXT-X-SKIP")))
    n = int(skip["SKIPPED-SEGMENTS"])
    delta = m3u8.loads(text)
    assert delta.media_sequence == full.media_sequence
    assert n + len(delta.segments) == len(full.segments)
    kept = sum(s.duration for s in delta.segments)
    assert kept >= playlist.skip_until(st) and kept - delta.segments[0].duration < playlist.skip_until(st)
    assert '#EXT-X-MAP:URI="init.mp4"' in lines  # the init stays declared for the first listed segment


def test_dvr_playlist_covers_everything() -> None:
    st = make_state(n=30)
    pl = m3u8.loads(playlist.media_playlist(st, "720p", playlist.DVR))
    assert pl.media_sequence == 0 and len(pl.segments) == 30


def test_ended_playlist_has_endlist_no_ll_tags() -> None:
    text = playlist.media_playlist(make_state(n=30, ended=True), "720p")
    assert text.rstrip().endswith("#EXT-X-ENDLIST")
    for tag in ("#EXT-X-PRELOAD-HINT", "#EXT-X-PART:", "#EXT-X-SERVER-CONTROL", "#EXT-X-RENDITION-REPORT"):
        assert tag not in text
    assert m3u8.loads(text).media_sequence == 0  # the event stays playable as VOD for the window


def test_vod_playlist_type() -> None:
    st = make_state(n=5, ended=True)
    st.vod = True
    text = playlist.media_playlist(st, "720p")
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in text and m3u8.loads(text).is_endlist


def test_gap_tag_and_no_parts_for_gaps() -> None:
    text = playlist.media_playlist(make_state(n=30, gaps={28}), "720p")
    lines = lines_of(text)
    i = lines.index("28.m4s")
    assert lines[i - 2] == "#EXT-X-GAP" and "28.0.m4s" not in text
    assert check_media_playlist(text) == []


def test_discontinuity_and_sequence() -> None:
    st = make_state(n=30, epochs={m: 1 for m in range(25, 30)})
    lines = lines_of(playlist.media_playlist(st, "720p"))
    i = lines.index("#EXT-X-DISCONTINUITY")
    assert lines[i + 1].startswith("#EXT-X-PROGRAM-DATE-TIME") and "25.m4s" in lines[i:i + 10]
    # once the discontinuity slides out, the sequence number counts it
    t = st.tracks["720p"]
    st.drop(t, list(range(0, 26)))
    lines = lines_of(playlist.media_playlist(st, "720p"))
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:1" in lines and "#EXT-X-DISCONTINUITY" not in lines


def test_aes128_key_tags_rotate_with_iv_and_clear_init() -> None:
    st = make_state(n=30, drm=True)
    lines = lines_of(playlist.media_playlist(st, "720p", playlist.DVR))
    keys = [x for x in lines if x.startswith("#EXT-X-KEY")]
    assert keys == [
        f'#EXT-X-KEY:METHOD=AES-128,URI="/keys/s1/k{k}",IV=0x{k:032x}' for k in range(3)]
    assert lines.index('#EXT-X-MAP:URI="init.mp4"') < lines.index(keys[0])  # init stays in the clear
    assert lines.index(keys[1]) < lines.index("10.m4s") and lines.index(keys[1]) > lines.index("9.m4s")
    pl = m3u8.loads("\n".join(lines))
    assert pl.segments[10].key.uri == "/keys/s1/k1" and pl.segments[10].key.iv == "0x" + f"{1:032x}"


def test_cue_daterange_out_and_in_on_boundaries() -> None:
    st = make_state(n=30)
    st.cues["c1"] = CueEntry("c1", 42, start_ms=T0 + 24_400, duration_ms=3000, out_msn=25, in_msn=28)
    text = playlist.media_playlist(st, "720p")
    lines = lines_of(text)
    drs = [attrs(x) for x in lines if x.startswith("#EXT-X-DATERANGE")]
    assert drs[0]["ID"] == "c1" and drs[0]["START-DATE"] == playlist.iso_ms(T0 + 25_000)
    assert drs[0]["PLANNED-DURATION"] == "3.000" and drs[0]["SCTE35-OUT"].startswith("0xFC")
    assert drs[1]["END-DATE"] == playlist.iso_ms(T0 + 28_000) and drs[1]["SCTE35-IN"].startswith("0xFC")
    assert drs[1]["START-DATE"] == drs[0]["START-DATE"]
    out_i = lines.index("#EXT-X-CUE-OUT:DURATION=3.000")
    assert lines[out_i + 1:].index("25.m4s") < lines[out_i + 1:].index("#EXTINF:1.00000,") + 2
    assert lines.index("#EXT-X-CUE-IN") < lines.index("28.m4s") and lines.index("#EXT-X-CUE-IN") > lines.index(
        "27.m4s")
    pl = m3u8.loads(text)
    assert [d.id for d in pl.segments[15].dateranges] == ["c1"]  # on msn 25 (window starts at 10)


def test_master_playlist_attributes() -> None:
    text = playlist.master_playlist(make_state())
    pl = m3u8.loads(text)
    assert pl.is_variant and [p.uri for p in pl.playlists] == ["720p/playlist.m3u8", "360p/playlist.m3u8"]
    p = pl.playlists[0].stream_info
    assert p.bandwidth == 4_400_000 + 128_000 and p.average_bandwidth == 3_900_000 + 128_000
    assert p.codecs == "avc1.64001f,mp4a.40.2" and p.resolution == (1280, 720) and p.frame_rate == 30.0
    assert p.audio == "aac"
    media = pl.media[0]
    assert media.type == "AUDIO" and media.group_id == "aac" and media.uri == "audio/playlist.m3u8"
    assert media.channels == "2"


def test_dvr_playlist_has_no_blocking_or_part_tags() -> None:
    text = playlist.media_playlist(make_state(n=30), "720p", playlist.DVR)
    for tag in ("#EXT-X-SERVER-CONTROL", "#EXT-X-PART", "#EXT-X-PRELOAD-HINT", "#EXT-X-RENDITION-REPORT"):
        assert tag not in text
    assert "#EXT-X-ENDLIST" not in text and check_media_playlist(text) == []


def test_standard_latency_lists_no_parts_but_keeps_blocking_and_skip() -> None:
    st = make_state(n=30, seg_s=4.0, parts=4)
    st.config.latency_mode = "STANDARD"
    text = playlist.media_playlist(st, "720p")
    for tag in ("#EXT-X-PART-INF", "#EXT-X-PART:", "#EXT-X-PRELOAD-HINT", "PART-HOLD-BACK", "LAST-PART"):
        assert tag not in text
    sc = attrs(next(x for x in text.splitlines() if x.startswith("#EXT-X-SERVER-CONTROL")))
    assert sc == {"CAN-BLOCK-RELOAD": "YES", "CAN-SKIP-UNTIL": "24.0", "HOLD-BACK": "12.0"}
    assert check_media_playlist(text) == []
