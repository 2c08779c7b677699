"""DASH MPD rendering: structure, timing attributes, timeline, events (pure, from synthetic state)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from sinks.packager import mpd
from sinks.packager.playlist import iso_ms
from sinks.packager.state import CueEntry
from tests.unit.test_playlist import T0, make_state

NS = {"d": mpd.NS}


def parse(text: str) -> ET.Element:
    root = ET.fromstring(text.encode())
    assert root.tag == f"{{{mpd.NS}}}MPD"
    return root


def test_dynamic_mpd_structure_and_timing() -> None:
    st = make_state(n=30)
    st.ast_ms = T0
    root = parse(mpd.render_mpd(st, T0 + 31_000))
    assert root.get("type") == "dynamic"
    assert root.get("availabilityStartTime") == iso_ms(T0)
    assert root.get("timeShiftBufferDepth") == "PT7200.000S"
    assert root.get("minimumUpdatePeriod") == "PT1.000S"
    assert root.get("publishTime") == iso_ms(T0 + 31_000)
    utc = root.find("d:UTCTiming", NS)
    assert utc is not None and utc.get("schemeIdUri") == "urn:mpeg:dash:utc:http-iso:2014"
    assert utc.get("value") == "/api/v1/time"
    sets = root.findall("d:Period/d:AdaptationSet", NS)
    assert [s.get("contentType") for s in sets] == ["video", "audio"]
    reps = sets[0].findall("d:Representation", NS)
    assert [r.get("id") for r in reps] == ["720p", "360p"]
    assert reps[0].get("width") == "1280" and reps[0].get("codecs") == "avc1.64001f"
    tmpl = reps[0].find("d:SegmentTemplate", NS)
    assert tmpl.get("media") == "720p/$Number$.m4s" and tmpl.get("initialization") == "720p/init.mp4"
    assert tmpl.get("startNumber") == "0" and tmpl.get("timescale") == "90000"
    s = tmpl.findall("d:SegmentTimeline/d:S", NS)
    # msns 0..29, and the one being built (low-latency DASH: the stream's segments come in parts)
    assert [(x.get("t"), x.get("d"), x.get("r")) for x in s] == [("0", "90000", "30")]
    audio = sets[1].find("d:Representation", NS)
    assert audio.find("d:AudioChannelConfiguration", NS).get("value") == "2"


def test_timeline_breaks_on_duration_change() -> None:
    st = make_state(n=4)
    segs = st.tracks["720p"].ordered()
    segs[2].duration = 45000
    segs[3].pts = segs[2].pts + 45000
    assert mpd.timeline(segs) == [{"t": 0, "d": 90000, "r": 1}, {"t": 180000, "d": 45000, "r": 0},
                                  {"t": 225000, "d": 90000, "r": 0}]


def test_static_when_ended() -> None:
    st = make_state(n=10, ended=True)
    root = parse(mpd.render_mpd(st, T0))
    assert root.get("type") == "static" and root.get("mediaPresentationDuration") == "PT10.000S"
    assert root.get("minimumUpdatePeriod") is None


def test_cue_becomes_scte35_event() -> None:
    st = make_state(n=30)
    st.ast_ms = T0
    st.cues["c1"] = CueEntry("c1", 42, start_ms=T0 + 24_400, duration_ms=3000, out_msn=25, in_msn=28)
    root = parse(mpd.render_mpd(st, T0))
    es = root.find("d:Period/d:EventStream", NS)
    assert es.get("schemeIdUri") == "urn:scte:scte35:2014:xml+bin" and es.get("timescale") == "1000"
    ev = es.find("d:Event", NS)
    assert ev.get("presentationTime") == "25000" and ev.get("duration") == "3000" and ev.get("id") == "42"
    binary = ev.find(f"{{{mpd.SCTE_NS}}}Signal/{{{mpd.SCTE_NS}}}Binary")
    assert binary is not None and binary.text


def test_gap_splits_periods_and_numbers_stay_msns() -> None:
    st = make_state(n=30, gaps={20})
    st.ast_ms = T0
    root = parse(mpd.render_mpd(st, T0))
    periods = root.findall("d:Period", NS)
    assert [(p.get("id"), p.get("start")) for p in periods] == [("p0", "PT0.000S"), ("p21", "PT21.000S")]
    tmpl = periods[1].find("d:AdaptationSet/d:Representation/d:SegmentTemplate", NS)
    assert tmpl.get("startNumber") == "21" and tmpl.get("presentationTimeOffset") == str(21 * 90000)
    s = tmpl.findall("d:SegmentTimeline/d:S", NS)
    assert [(x.get("t"), x.get("r")) for x in s] == [(str(21 * 90000), "9")]  # 21..29 and the next one
    first = periods[0].find("d:AdaptationSet/d:Representation/d:SegmentTemplate/d:SegmentTimeline/d:S", NS)
    assert first.get("r") == "19"  # msns 0..19, the gap (20) is in no period


def test_period_id_and_start_survive_the_window_sliding(tmp_path) -> None:
    from floodlight.objectstore import DirectoryStore
    from sinks.packager.core import StreamPackager
    from sinks.packager.state import StreamConfig
    from tests.unit.test_packager_core import seg

    p = StreamPackager.open(DirectoryStore(tmp_path), "s1", config=StreamConfig(dvr_window_s=10))
    for g in range(8):
        p.add(seg(g), now=0)
    p.flush(T0)
    first = parse(p.store.get("live/s1/manifest.mpd").data.decode()).find("d:Period", NS)
    for g in range(8, 30):
        p.add(seg(g), now=0)
        p.flush(T0)
    later = parse(p.store.get("live/s1/manifest.mpd").data.decode()).find("d:Period", NS)
    assert (later.get("id"), later.get("start")) == (first.get("id"), first.get("start")) == ("p0", "PT0.000S")
    tmpl = later.find("d:AdaptationSet/d:Representation/d:SegmentTemplate", NS)
    assert tmpl.get("startNumber") == "20"  # the window moved, the period did not


def test_discontinuity_starts_a_period_with_its_own_offset() -> None:
    st = make_state(n=12, epochs={m: 1 for m in range(6, 12)})
    st.ast_ms = T0
    for t in st.tracks.values():  # the new epoch's timeline restarts near zero
        for m in range(6, 12):
            t.segments[m].pts = (m - 6) * 90000 + 4500
    root = parse(mpd.render_mpd(st, T0))
    periods = root.findall("d:Period", NS)
    assert [(p.get("id"), p.get("start")) for p in periods] == [("p0", "PT0.000S"), ("p6", "PT6.000S")]
    tmpl = periods[1].find("d:AdaptationSet/d:Representation/d:SegmentTemplate", NS)
    assert tmpl.get("presentationTimeOffset") == "4500" and tmpl.get("startNumber") == "6"
    s = tmpl.findall("d:SegmentTimeline/d:S", NS)
    assert [(x.get("t"), x.get("r")) for x in s] == [("4500", "6")]  # 6..11 and the next one


def test_low_latency_dash_for_streams_in_parts() -> None:
    st = make_state(n=10)
    st.ast_ms = T0
    root = parse(mpd.render_mpd(st, T0 + 10_000))
    assert "http://www.dashif.org/guidelines/low-latency-live-v5" in root.get("profiles")
    sd = root.find("d:ServiceDescription", NS)
    assert sd.find("d:Scope", NS).get("schemeIdUri") == "urn:dvb:dash:lowlatency:scope:2019"
    lat = sd.find("d:Latency", NS)
    assert int(lat.get("min")) < int(lat.get("target")) == mpd.latency_target_ms(st) < int(lat.get("max"))
    assert {k: sd.find("d:PlaybackRate", NS).get(k) for k in ("min", "max")} == {"min": "0.96", "max": "1.04"}
    children = [c.tag.split("}")[1] for c in root]
    assert children.index("ServiceDescription") < children.index("Period") < children.index("UTCTiming")
    for tmpl in root.findall(".//d:SegmentTemplate", NS):
        assert tmpl.get("availabilityTimeComplete") == "false"
        assert abs(float(tmpl.get("availabilityTimeOffset")) - (1.0 - st.part_target)) < 1e-3
        last = tmpl.findall("d:SegmentTimeline/d:S", NS)[-1]
        assert int(last.get("t")) + int(last.get("d")) * (int(last.get("r") or 0) + 1) == 11 * 90000
    # a STANDARD stream, or one that ended, is plain DASH
    st.config.latency_mode = "STANDARD"
    plain = parse(mpd.render_mpd(st, T0 + 10_000))
    assert plain.find("d:ServiceDescription", NS) is None and "low-latency" not in plain.get("profiles")
    assert all(t.get("availabilityTimeOffset") is None for t in plain.findall(".//d:SegmentTemplate", NS))
