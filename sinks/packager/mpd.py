"""DASH rendering: a dynamic MPD (static once ended/VOD) over the same CMAF segments as HLS. Pure.

SegmentTemplate with $Number$ (= msn) and a SegmentTimeline per representation. availabilityStartTime
is the wall-clock of msn 0; each track's `pto` maps that instant onto its media timeline. $Number$
counts contiguous timeline entries only, so a gap ends a Period and the next one starts after it
(dash.js cannot skip a missing $Number$ segment; it plays across a Period boundary). Period ids
come from the msn the period began at, kept in the state when that msn leaves the DVR window, so
they do not change between MPD updates. Ad breaks become an SCTE-35 EventStream in their Period.

Low-latency DASH (issue 15.4), for LOW streams whose segments come in parts: the MPD carries what dash.js's
low-latency mode needs (DASH-IF IOP low-latency guidelines): the profile, a ServiceDescription with the
latency target and the playback rates catch-up may use, and on every SegmentTemplate
`availabilityTimeOffset` = segment duration - part target with `availabilityTimeComplete="false"`: a
segment may be asked for once its first part is out, and the origin streams it part by part (chunked
CMAF). So that the player can ask for it from its timing alone, each timeline lists one segment beyond
the newest complete one, with the duration of the one before (GOPs on a grid: it is that long).
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from sinks.packager import scte35
from sinks.packager.playlist import audio_track, iso_ms, video_tracks
from sinks.packager.state import Segment, StreamState, Track, starts_discontinuity

NS = "urn:mpeg:dash:schema:mpd:2011"
SCTE_NS = "http://www.scte.org/schemas/35/2016"
UTC_TIMING_SCHEME = "urn:mpeg:dash:utc:http-iso:2014"
UTC_TIMING_URL = "/api/v1/time"
LL_PROFILE = "http://www.dashif.org/guidelines/low-latency-live-v5"
LL_SCOPE = "urn:dvb:dash:lowlatency:scope:2019"
CATCH_UP_RATES = (0.96, 1.04)  # how far dash.js may speed up or slow down to hold the latency target


def low_latency(state: StreamState) -> bool:
    """A live LOW stream whose segments come in parts: chunked CMAF, announced as low-latency DASH."""
    return state.has_parts and not (state.ended or state.vod)


def latency_target_ms(state: StreamState) -> int:
    """The ServiceDescription latency target: three parts behind the live edge (as PART-HOLD-BACK in HLS), plus
    the half second a part takes from capture to listed."""
    return round(1000 * (3 * state.part_target + 0.5))


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


@dataclass
class Run:
    """A DASH Period: consecutive msns of one timeline (gaps and discontinuities split periods)."""

    origin: int  # msn the period began at (may have left the DVR window)
    start_s: float  # period start, seconds after availabilityStartTime
    ptos: dict[str, int]  # per rendition: media time at the period start (presentationTimeOffset)
    msns: list[int]

    @property
    def period_id(self) -> str:
        return f"p{self.origin}"


def media_tracks(state: StreamState) -> list[Track]:
    vids = video_tracks(state)
    audio = audio_track(state)
    return vids + ([audio] if audio else [])


def _breaks_before(tracks: list[Track], m: int) -> bool:
    """Segment m starts a new timeline (epoch or init changed) in some track."""
    for t in tracks:
        prev, seg = t.segments.get(m - 1), t.segments.get(m)
        if prev is not None and seg is not None and not prev.gap and not seg.gap and starts_discontinuity(prev, seg):
            return True
    return False


def _open_run(state: StreamState, tracks: list[Track], ms: list[int]) -> Run:
    """A period beginning at ms[0]: its start from the wall clock, each track's offset from its own media."""
    first = ms[0]
    pdt = next(t.segments[first].pdt_ms for t in tracks if first in t.segments)
    ptos = {}
    for t in tracks:
        seg = next((t.segments[m] for m in ms if m in t.segments and not t.segments[m].gap), None)
        if seg is not None:  # a track starting later in the run: back-date by the wall-clock difference
            ptos[t.name] = max(0, seg.pts - round((seg.pdt_ms - pdt) * seg.timescale / 1000))
    return Run(first, (pdt - state.ast_ms) / 1000, ptos, ms)


def runs(state: StreamState, tracks: list[Track] | None = None) -> list[Run]:
    """Split the window into periods at gaps ($Number$ can only count contiguous segments) and at
    discontinuities (a new timeline needs its own presentationTimeOffset)."""
    tracks = tracks if tracks is not None else media_tracks(state)
    gaps = {m for t in tracks for m, s in t.segments.items() if s.gap}
    msns = sorted({m for t in tracks for m in t.segments})
    out: list[list[int]] = []
    cur: list[int] = []
    for m in msns:
        if m in gaps or (cur and (m != cur[-1] + 1 or _breaks_before(tracks, m))):
            if cur:
                out.append(cur)
            cur = []
        if m not in gaps:
            cur.append(m)
    if cur:
        out.append(cur)
    result = []
    for i, ms in enumerate(out):
        continuing = i == 0 and ms[0] == msns[0] and state.period_origin < ms[0] and state.period_ptos
        if continuing:  # the period began before the DVR window's start: keep its id, start and offsets
            run = Run(state.period_origin, state.period_start_s, dict(state.period_ptos), ms)
            start_ms = state.ast_ms + round(run.start_s * 1000)
            for t in tracks:  # a rendition that joined since: back-date it to the period start
                seg = next((t.segments[m] for m in ms if m in t.segments and not t.segments[m].gap), None)
                if t.name not in run.ptos and seg is not None:
                    run.ptos[t.name] = max(0, seg.pts - round((seg.pdt_ms - start_ms) * seg.timescale / 1000))
            result.append(run)
        else:
            result.append(_open_run(state, tracks, ms))
    return result


def _template(track: Track, run: Run, ll: StreamState | None = None, last_run: bool = False) -> ET.Element | None:
    segs = [track.segments[m] for m in run.msns if m in track.segments and not track.segments[m].gap]
    if not segs or track.name not in run.ptos:
        return None
    ts = segs[0].timescale
    init = track.inits.get(segs[0].init_hash) or next(iter(track.inits.values()), "init.mp4")
    tmpl = ET.Element("SegmentTemplate", {
        "timescale": str(ts), "presentationTimeOffset": str(run.ptos[track.name]),
        "initialization": f"{track.name}/{init}", "media": f"{track.name}/$Number$.m4s",
        "startNumber": str(segs[0].msn),
    })
    if ll is not None:  # low-latency DASH (module doc): the segment being built, streamed part by part
        last = segs[-1]
        tmpl.set("availabilityTimeOffset", f"{max(0.0, last.seconds - ll.part_target):.3f}")
        tmpl.set("availabilityTimeComplete", "false")
        if last_run and last.msn == track.last_msn:
            segs = [*segs, Segment(msn=last.msn + 1, pts=last.pts + last.duration, duration=last.duration,
                                   timescale=last.timescale, pdt_ms=last.end_ms, epoch=last.epoch)]
    tl = ET.SubElement(tmpl, "SegmentTimeline")
    for e in timeline(segs):
        attrs = {"t": str(e["t"]), "d": str(e["d"])}
        if e["r"]:
            attrs["r"] = str(e["r"])
        ET.SubElement(tl, "S", attrs)
    return tmpl


def _event_stream(state: StreamState, run: Run) -> ET.Element | None:
    cues = [c for c in state.cues.values() if c.out_msn is not None and c.out_msn in run.msns]
    if not cues:
        return None
    es = ET.Element(f"{{{NS}}}EventStream", {"schemeIdUri": "urn:scte:scte35:2014:xml+bin", "timescale": "1000"})
    for c in sorted(cues, key=lambda c: c.out_msn or 0):
        start = _pdt_of(state, c.out_msn) or c.start_ms
        end = _pdt_of(state, c.in_msn) if c.in_msn is not None else None
        dur = (end - start) if end is not None else c.duration_ms
        at = start - state.ast_ms - round(run.start_s * 1000)
        ev = ET.SubElement(es, f"{{{NS}}}Event", {"presentationTime": str(max(0, at)),
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
    tracks = vids + ([audio] if audio else [])
    periods = runs(state, tracks)
    ll = state if low_latency(state) else None
    mpd = ET.Element(f"{{{NS}}}MPD", {
        "profiles": "urn:mpeg:dash:profile:isoff-live:2011" + (f",{LL_PROFILE}" if ll else ""),
        "type": "static" if static else "dynamic",
        "minBufferTime": iso_dur(min(td * 2, 4) if not ll else 1.0),
    })
    base_s = 0.0
    if static:
        if periods:
            base_s = periods[0].start_s
            last = periods[-1]
            ref = next(t for t in tracks if last.msns[-1] in t.segments)
            seg = ref.segments[last.msns[-1]]
            end_s = last.start_s + (seg.pts + seg.duration - last.ptos.get(ref.name, seg.pts)) / seg.timescale
        else:
            end_s = 0.0
        mpd.set("mediaPresentationDuration", iso_dur(end_s - base_s))
    else:
        window = state.config.dvr_window_s or state.config.live_window_s
        mpd.set("availabilityStartTime", iso_ms(state.ast_ms))
        mpd.set("publishTime", iso_ms(publish_ms))
        mpd.set("minimumUpdatePeriod", iso_dur(td))
        mpd.set("timeShiftBufferDepth", iso_dur(window))
        delay = max(3.0 * td, td + state.lag_ms / 1000 + 1.0)  # segments appear lag_ms after their end
        mpd.set("suggestedPresentationDelay", iso_dur(delay if ll is None else latency_target_ms(state) / 1000))
        mpd.set("maxSegmentDuration", iso_dur(state.max_segment_s or td))
    if ll is not None:
        target = latency_target_ms(state)
        sd = ET.SubElement(mpd, f"{{{NS}}}ServiceDescription", {"id": "0"})
        ET.SubElement(sd, f"{{{NS}}}Scope", {"schemeIdUri": LL_SCOPE})
        ET.SubElement(sd, f"{{{NS}}}Latency", {"referenceId": "0", "target": str(target),
                                                "min": str(round(target * 0.75)), "max": str(target * 2)})
        ET.SubElement(sd, f"{{{NS}}}PlaybackRate", {"min": str(CATCH_UP_RATES[0]), "max": str(CATCH_UP_RATES[1])})
    for run in periods:
        last_run = run is periods[-1]
        period = ET.SubElement(mpd, f"{{{NS}}}Period", {"id": run.period_id,
                                                         "start": iso_dur(run.start_s - base_s)})
        es = _event_stream(state, run)
        if es is not None:
            period.append(es)
        if vids:
            aset = ET.SubElement(period, f"{{{NS}}}AdaptationSet", {
                "id": "0", "contentType": "video", "mimeType": "video/mp4", "segmentAlignment": "true",
                "startWithSAP": "1"})
            for t in vids:
                tmpl = _template(t, run, ll, last_run)
                if tmpl is None:
                    continue
                rep = ET.SubElement(aset, f"{{{NS}}}Representation", {
                    "id": t.name, "bandwidth": str(max(t.bandwidth, t.target_bitrate)), "codecs": t.codecs,
                    "width": str(t.width), "height": str(t.height), "frameRate": _frame_rate(t.frame_rate),
                    "sar": "1:1"})
                _append_ns(rep, tmpl)
        if audio:
            tmpl = _template(audio, run, ll, last_run)
            if tmpl is None:
                continue
            aset = ET.SubElement(period, f"{{{NS}}}AdaptationSet", {
                "id": "1", "contentType": "audio", "mimeType": "audio/mp4", "segmentAlignment": "true",
                "startWithSAP": "1", "lang": "und"})
            rep = ET.SubElement(aset, f"{{{NS}}}Representation", {
                "id": audio.name, "bandwidth": str(max(audio.bandwidth, audio.target_bitrate, 1)),
                "codecs": audio.codecs, "audioSamplingRate": str(audio.sample_rate or 48000)})
            ET.SubElement(rep, f"{{{NS}}}AudioChannelConfiguration", {
                "schemeIdUri": "urn:mpeg:dash:23003:3:audio_channel_configuration:2011",
                "value": str(audio.channels or 2)})
            _append_ns(rep, tmpl)
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
