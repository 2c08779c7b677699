"""DASH rendering: a dynamic MPD (static once ended/VOD) over the same CMAF segments as HLS. Pure.

SegmentTemplate with $Number$ (= msn) and a SegmentTimeline per representation; the period starts
at availabilityStartTime = wall-clock of msn 0, and each track's presentationTimeOffset maps its
media timeline onto it. A gap keeps its timeline entry so $Number$ stays aligned with the msn; its
object is simply absent (players skip it). Ad breaks become an SCTE-35 EventStream.
"""

from __future__ import annotations

import base64
import time
import xml.etree.ElementTree as ET

from sinks.packager import scte35
from sinks.packager.playlist import audio_track, video_tracks
from sinks.packager.state import Segment, StreamState, Track

NS = "urn:mpeg:dash:schema:mpd:2011"
SCTE_NS = "http://www.scte.org/schemas/35/2016"
UTC_TIMING_SCHEME = "urn:mpeg:dash:utc:http-iso:2014"
UTC_TIMING_URL = "/api/v1/time"


def iso_dt(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def iso_dur(seconds: float) -> str:
    return f"PT{seconds:.3f}S"


def timeline(segs: list[Segment]) -> list[dict[str, int]]:
    """S entries (t, d, r): runs of equal, contiguous durations collapse into one entry."""
    out: list[dict[str, int]] = []
    for s in segs:
        if out:
            last = out[-1]
            end = last["t"] + last["d"] * (last["r"] + 1)
            if s.duration == last["d"] and s.pts == end:
                last["r"] += 1
                continue
        out.append({"t": s.pts, "d": s.duration, "r": 0})
    return out


def _pto(state: StreamState, track: Track, segs: list[Segment], static: bool) -> int:
    if static or not segs:
        return segs[0].pts if segs else 0
    if track.pto >= 0:
        return track.pto
    first = segs[0]
    return max(0, first.pts - round((first.pdt_ms - state.ast_ms) * first.timescale / 1000))


def _template(state: StreamState, track: Track, segs: list[Segment], static: bool) -> ET.Element:
    ts = segs[0].timescale if segs else (track.timescale or 1)
    init = next(iter(track.inits.values()), "init.mp4")
    tmpl = ET.Element("SegmentTemplate", {
        "timescale": str(ts), "presentationTimeOffset": str(_pto(state, track, segs, static)),
        "initialization": f"{track.name}/{init}", "media": f"{track.name}/$Number$.m4s",
        "startNumber": str(segs[0].msn if segs else 0),
    })
    tl = ET.SubElement(tmpl, "SegmentTimeline")
    for e in timeline(segs):
        attrs = {"t": str(e["t"]), "d": str(e["d"])}
        if e["r"]:
            attrs["r"] = str(e["r"])
        ET.SubElement(tl, "S", attrs)
    return tmpl


def _event_stream(state: StreamState, period_start_ms: int) -> ET.Element | None:
    cues = [c for c in state.cues.values() if c.out_msn is not None]
    if not cues:
        return None
    es = ET.Element("EventStream", {"schemeIdUri": "urn:scte:scte35:2014:xml+bin", "timescale": "1000"})
    for c in sorted(cues, key=lambda c: c.out_msn or 0):
        start = _pdt_of(state, c.out_msn) or c.start_ms
        end = _pdt_of(state, c.in_msn) if c.in_msn is not None else None
        dur = (end - start) if end is not None else c.duration_ms
        ev = ET.SubElement(es, "Event", {"presentationTime": str(max(0, start - period_start_ms)),
                                         "duration": str(max(0, dur)), "id": str(c.splice_event_id)})
        sig = ET.SubElement(ev, f"{{{SCTE_NS}}}Signal")
        raw = bytes.fromhex(c.scte35_hex) if c.scte35_hex else scte35.splice_insert(
            c.splice_event_id, True, c.duration_ms)
        ET.SubElement(sig, f"{{{SCTE_NS}}}Binary").text = base64.b64encode(raw).decode()
    return es


def _pdt_of(state: StreamState, msn: int | None) -> int | None:
    if msn is None:
        return None
    for t in state.tracks.values():
        if msn in t.segments:
            return t.segments[msn].pdt_ms
    return None


def render_mpd(state: StreamState, publish_ms: int) -> str:
    """The MPD document; `publish_ms` is the only input besides the state (keeps this pure)."""
    ET.register_namespace("", NS)
    ET.register_namespace("scte35", SCTE_NS)
    static = state.ended or state.vod
    td = max(1, state.target_duration)
    vids = video_tracks(state)
    audio = audio_track(state)
    mpd = ET.Element(f"{{{NS}}}MPD", {
        "profiles": "urn:mpeg:dash:profile:isoff-live:2011",
        "type": "static" if static else "dynamic",
        "minBufferTime": iso_dur(min(td * 2, 4)),
    })
    if static:
        vt = vids[0] if vids else audio
        segs = vt.ordered() if vt else []
        total = sum(s.seconds for s in segs)
        mpd.set("mediaPresentationDuration", iso_dur(total))
        period_start_ms = segs[0].pdt_ms if segs else 0
    else:
        window = state.config.dvr_window_s or state.config.live_window_s
        mpd.set("availabilityStartTime", iso_dt(state.ast_ms))
        mpd.set("publishTime", iso_dt(publish_ms))
        mpd.set("minimumUpdatePeriod", iso_dur(td))
        mpd.set("timeShiftBufferDepth", iso_dur(window))
        mpd.set("suggestedPresentationDelay", iso_dur(3 * td))
        mpd.set("maxSegmentDuration", iso_dur(state.max_segment_s or td))
        period_start_ms = state.ast_ms
    period = ET.SubElement(mpd, f"{{{NS}}}Period", {"id": "p0", "start": "PT0S"})
    es = _event_stream(state, period_start_ms)
    if es is not None:
        es.tag = f"{{{NS}}}EventStream"
        for ev in es:
            ev.tag = f"{{{NS}}}Event"
        period.append(es)
    if vids:
        aset = ET.SubElement(period, f"{{{NS}}}AdaptationSet", {
            "id": "0", "contentType": "video", "mimeType": "video/mp4", "segmentAlignment": "true",
            "startWithSAP": "1"})
        for t in vids:
            rep = ET.SubElement(aset, f"{{{NS}}}Representation", {
                "id": t.name, "bandwidth": str(max(t.bandwidth, t.target_bitrate)), "codecs": t.codecs,
                "width": str(t.width), "height": str(t.height), "frameRate": _frame_rate(t.frame_rate),
                "sar": "1:1"})
            _append_ns(rep, _template(state, t, t.ordered(), static))
    if audio:
        aset = ET.SubElement(period, f"{{{NS}}}AdaptationSet", {
            "id": "1", "contentType": "audio", "mimeType": "audio/mp4", "segmentAlignment": "true",
            "startWithSAP": "1", "lang": "und"})
        rep = ET.SubElement(aset, f"{{{NS}}}Representation", {
            "id": audio.name, "bandwidth": str(max(audio.bandwidth, audio.target_bitrate, 1)),
            "codecs": audio.codecs, "audioSamplingRate": str(audio.sample_rate or 48000)})
        ET.SubElement(rep, f"{{{NS}}}AudioChannelConfiguration", {
            "schemeIdUri": "urn:mpeg:dash:23003:3:audio_channel_configuration:2011",
            "value": str(audio.channels or 2)})
        _append_ns(rep, _template(state, audio, audio.ordered(), static))
    ET.SubElement(mpd, f"{{{NS}}}UTCTiming", {"schemeIdUri": UTC_TIMING_SCHEME, "value": UTC_TIMING_URL})
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(mpd, encoding="unicode") + "\n"


def _append_ns(parent: ET.Element, el: ET.Element) -> None:
    """Re-home an element tree built without a namespace into the MPD namespace."""
    for node in el.iter():
        if not node.tag.startswith("{"):
            node.tag = f"{{{NS}}}{node.tag}"
    parent.append(el)


def _frame_rate(fr: float) -> str:
    if not fr:
        return "30"
    if abs(fr - round(fr)) < 1e-3:
        return str(round(fr))
    for den in (1001, 1000):
        num = round(fr * den)
        if abs(num / den - fr) < 1e-4:
            return f"{num}/{den}"
    return f"{fr:.3f}"
