"""HLS rendering (RFC 8216bis, LL-HLS): pure functions of a StreamState, no I/O, no clock.

Three media playlists per rendition: the live window (`playlist.m3u8`), its delta update
(`playlist-skip.m3u8`, served for `_HLS_skip=YES`) and the whole DVR window (`dvr.m3u8`); plus the
master. URIs are relative, except EXT-X-KEY which points at the api key endpoint.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from functools import lru_cache

from sinks.packager import scte35
from sinks.packager.state import CueEntry, Segment, StreamState, Track, starts_discontinuity

VERSION = 9  # EXT-X-SKIP (delta updates) needs 9; LL-HLS and EXT-X-GAP are within it
PART_WINDOW_TARGETS = 3  # parts are listed for the last three target durations (RFC 8216bis §4.4.4.9)
LIVE = "live"
DVR = "dvr"
SKIP = "skip"
KEY_URI = "/keys/{stream_id}/{key_id}"


def iso_ms(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


@lru_cache(maxsize=65536)
def _pdt_line(ms: int) -> str:
    """Segment lines never change once written: memoised, the DVR playlist re-renders cheaply."""
    return f"#EXT-X-PROGRAM-DATE-TIME:{iso_ms(ms)}"


@lru_cache(maxsize=65536)
def _extinf_lines(msn: int, duration: int, timescale: int) -> str:
    return f"#EXTINF:{fmt(duration / timescale if timescale else 0.0)},\n{msn}.m4s"


def fmt(x: float, places: int = 5) -> str:
    return f"{x:.{places}f}"


def live_window(state: StreamState, track: Track, ordered: list[Segment] | None = None) -> list[Segment]:
    """The live playlist's segments: the last live_window_s, or everything once ended/VOD."""
    segs = ordered if ordered is not None else track.ordered()
    if state.ended or state.vod or not segs:
        return segs
    edge = segs[-1].end_ms - state.config.live_window_s * 1000
    min_keep = 6 * max(1, state.target_duration)  # keep CAN-SKIP-UNTIL meaningful
    start = len(segs)
    span = 0.0
    while start > 0 and (segs[start - 1].end_ms > edge or span < min_keep):
        start -= 1
        span += segs[start].seconds
    return segs[start:]


def skip_until(state: StreamState) -> float:
    return 6.0 * max(1, state.target_duration)


def skipped_count(state: StreamState, segs: list[Segment]) -> int:
    """Leading segments a delta update may skip: the rest still spans at least CAN-SKIP-UNTIL."""
    limit = skip_until(state)
    remaining = sum(s.seconds for s in segs)
    n = 0
    for s in segs[:-1]:
        if remaining - s.seconds < limit:
            break
        remaining -= s.seconds
        n += 1
    return n


def _key_tag(state: StreamState, seg: Segment) -> str:
    if not seg.key_id:
        return "#EXT-X-KEY:METHOD=NONE"
    uri = KEY_URI.format(stream_id=state.stream_id, key_id=seg.key_id)
    return f'#EXT-X-KEY:METHOD=AES-128,URI="{uri}",IV=0x{seg.iv_hex}'


def _cue_tags(state: StreamState, cue: CueEntry, at: Segment, kind: str) -> list[str]:
    """DATERANGE with SCTE35-OUT at the break's first segment, SCTE35-IN where programming resumes."""
    start_ms = _boundary_pdt(state, cue.out_msn)
    if start_ms is None:
        start_ms = cue.start_ms
    planned = cue.duration_ms / 1000
    if kind == "out":
        out_hex = cue.scte35_hex or scte35.splice_insert(cue.splice_event_id, True, cue.duration_ms).hex()
        return [
            f'#EXT-X-DATERANGE:ID="{cue.cue_id}",START-DATE="{iso_ms(start_ms)}",'
            f"PLANNED-DURATION={fmt(planned, 3)},SCTE35-OUT=0x{out_hex.upper()}",
            f"#EXT-X-CUE-OUT:DURATION={fmt(planned, 3)}",
        ]
    in_hex = scte35.splice_insert(cue.splice_event_id, False).hex()
    actual = max(0.0, (at.pdt_ms - start_ms) / 1000)
    return [
        f'#EXT-X-DATERANGE:ID="{cue.cue_id}",START-DATE="{iso_ms(start_ms)}",'
        f'END-DATE="{iso_ms(at.pdt_ms)}",DURATION={fmt(actual, 3)},SCTE35-IN=0x{in_hex.upper()}',
        "#EXT-X-CUE-IN",
    ]


def _boundary_pdt(state: StreamState, msn: int | None) -> int | None:
    """PDT of segment msn in any track (tracks are aligned by msn, so any will do)."""
    if msn is None:
        return None
    for t in state.tracks.values():
        seg = t.segments.get(msn)
        if seg is not None:
            return seg.pdt_ms
    return None


def _cues_at(state: StreamState) -> dict[int, list[tuple[CueEntry, str]]]:
    out: dict[int, list[tuple[CueEntry, str]]] = {}
    for cue in sorted(state.cues.values(), key=lambda c: (c.start_ms, c.cue_id)):
        if cue.out_msn is not None:
            out.setdefault(cue.out_msn, []).append((cue, "out"))
        if cue.in_msn is not None:
            out.setdefault(cue.in_msn, []).append((cue, "in"))
    return out


def media_playlist(state: StreamState, name: str, kind: str = LIVE, *, ordered: list[Segment] | None = None,
                   disc: dict[int, int] | None = None) -> str:
    """Render one rendition's media playlist; `kind` is live, skip (delta update) or dvr.

    `ordered` and `disc` (the track's segments by msn and their discontinuity numbers) may be passed
    in when several playlists of one track are rendered together, to compute them once.
    """
    track = state.tracks[name]
    ordered = ordered if ordered is not None else track.ordered()
    segs = ordered if kind == DVR else live_window(state, track, ordered)
    final = state.ended or state.vod
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{VERSION}", f"#EXT-X-TARGETDURATION:{max(1, state.target_duration)}"]
    # the DVR playlist is a plain sliding playlist: no blocking reload, parts or reports (the api only
    # blocks on playlist.m3u8, so advertising CAN-BLOCK-RELOAD there would invite refused requests)
    ll = not final and kind != DVR
    parts_on = state.has_parts and ll
    if ll:
        sc = f"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={fmt(skip_until(state), 1)}"
        if parts_on:
            sc += f",PART-HOLD-BACK={fmt(3 * state.part_target, 3)}"
        sc += f",HOLD-BACK={fmt(3.0 * max(1, state.target_duration), 1)}"
        lines.append(sc)
        if parts_on:
            lines.append(f"#EXT-X-PART-INF:PART-TARGET={fmt(state.part_target, 3)}")
    if state.vod:
        lines.append("#EXT-X-PLAYLIST-TYPE:VOD")
    if not segs:
        lines.append("#EXT-X-MEDIA-SEQUENCE:0")
        return "\n".join(lines) + "\n"
    disc = disc if disc is not None else state.discontinuities(track)
    lines.append(f"#EXT-X-MEDIA-SEQUENCE:{segs[0].msn}")
    lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{disc[segs[0].msn]}")
    lines.append("#EXT-X-INDEPENDENT-SEGMENTS")

    skipped = skipped_count(state, segs) if kind == SKIP and not final else 0
    cues = _cues_at(state)
    if skipped:
        lines.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}")
        for s in segs[:skipped]:  # DATERANGEs of skipped segments stay (no CAN-SKIP-DATERANGES)
            lines += [t for cue, k in cues.get(s.msn, []) for t in _cue_tags(state, cue, s, k)
                      if t.startswith("#EXT-X-DATERANGE")]

    part_from = _part_window_start(state, segs) if parts_on else None
    partial = track.partial if parts_on and track.partial is not None else None
    if partial is not None and partial.msn != segs[-1].msn + 1:
        partial = None
    if partial is not None:  # the segment being built: its parts so far, no EXTINF yet
        disc = {**disc, partial.msn: disc[segs[-1].msn] + (1 if starts_discontinuity(segs[-1], partial) else 0)}
        segs = [*segs, partial]
    cur_init: str | None = None
    cur_key: str | None = None
    prev: Segment | None = None
    for i, seg in enumerate(segs):
        if i < skipped:
            prev = seg
            continue
        first_listed = i == skipped
        if prev is not None and disc[seg.msn] > disc[prev.msn]:
            lines.append("#EXT-X-DISCONTINUITY")
        init_name = track.inits.get(seg.init_hash) if seg.init_hash else None
        if init_name is None and first_listed:
            init_name = next(iter(track.inits.values()), "init.mp4")
        if init_name and init_name != cur_init:
            if cur_key:  # keep init sections in the clear (RFC 8216bis §4.4.4.5)
                lines.append("#EXT-X-KEY:METHOD=NONE")
                cur_key = None
            lines.append(f'#EXT-X-MAP:URI="{init_name}"')
            cur_init = init_name
        if (seg.key_id or None) != cur_key:
            lines.append(_key_tag(state, seg))
            cur_key = seg.key_id or None
        lines.append(_pdt_line(seg.pdt_ms))
        for cue, k in cues.get(seg.msn, []):
            lines += _cue_tags(state, cue, seg, k)
        if seg.gap:
            lines.append("#EXT-X-GAP")
        elif part_from is not None and seg.msn >= part_from and len(seg.parts) > 0:
            for j, p in enumerate(seg.parts):
                ind = ",INDEPENDENT=YES" if p.independent else ""
                lines.append(f'#EXT-X-PART:DURATION={fmt(p.duration)},URI="{seg.msn}.{j}.m4s"{ind}')
        if seg is partial:
            break
        lines.append(_extinf_lines(seg.msn, seg.duration, seg.timescale))
        prev = seg
    if parts_on:
        msn, part = (partial.msn, len(partial.parts)) if partial is not None else (segs[-1].msn + 1, 0)
        lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{msn}.{part}.m4s"')
    if ll:
        lines += rendition_reports(state, name)
    if final:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _part_window_start(state: StreamState, segs: list[Segment]) -> int:
    """First msn whose parts are listed: segments within the last three target durations."""
    limit = PART_WINDOW_TARGETS * max(1, state.target_duration)
    acc = 0.0
    first = segs[-1].msn
    for s in reversed(segs):
        if acc >= limit:
            break
        acc += s.seconds
        first = s.msn
    return first


def last_part(track: Track) -> int:
    if track.partial is not None:
        return len(track.partial.parts) - 1
    if not track.segments:
        return -1
    seg = track.segments[track.last_msn]
    return max(0, len(seg.parts) - 1)


def live_edge(state: StreamState, track: Track) -> tuple[int, int]:
    """(msn, part) of the newest media the live playlist lists: the segment being built and its last
    part, or the newest complete segment and -1 (what a ManifestUpdate announces)."""
    if track.partial is not None and state.has_parts and not (state.ended or state.vod):
        return track.partial.msn, len(track.partial.parts) - 1
    return track.last_msn, -1


def listed_edge(text: str) -> tuple[int, int] | None:
    """(msn, part) of the newest media a rendered live playlist lists (part -1: a complete segment)."""
    seq, segments, parts_after = None, 0, 0
    for line in text.splitlines():
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            seq = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-SKIP:"):
            segments += int(line.split("SKIPPED-SEGMENTS=", 1)[1].split(",")[0])
        elif line.startswith("#EXTINF:"):
            segments, parts_after = segments + 1, 0
        elif line.startswith("#EXT-X-PART:"):
            parts_after += 1
    if seq is None or (not segments and not parts_after):
        return None
    return (seq + segments, parts_after - 1) if parts_after else (seq + segments - 1, -1)


def rendition_reports(state: StreamState, name: str) -> list[str]:
    out = []
    for other in sorted(state.tracks):
        t = state.tracks[other]
        if other == name or not t.segments:
            continue
        msn = t.partial.msn if t.partial is not None and state.has_parts else t.last_msn
        lp = f",LAST-PART={last_part(t)}" if state.has_parts else ""
        out.append(f'#EXT-X-RENDITION-REPORT:URI="../{other}/playlist.m3u8",LAST-MSN={msn}{lp}')
    return out


def video_tracks(state: StreamState) -> list[Track]:
    vids = [t for t in state.tracks.values() if t.media_type == "VIDEO" and t.segments]
    return sorted(vids, key=lambda t: (-max(t.bandwidth, t.target_bitrate), t.name))


def audio_track(state: StreamState) -> Track | None:
    auds = [t for t in state.tracks.values() if t.media_type == "AUDIO" and t.segments]
    return sorted(auds, key=lambda t: t.name)[0] if auds else None


def master_playlist(state: StreamState, media: str = "playlist.m3u8") -> str:
    """Multivariant playlist: every video rung with the shared audio group (EXT-X-MEDIA)."""
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{VERSION}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    audio = audio_track(state)
    group = state.config.audio_group
    if audio is not None:
        ch = f',CHANNELS="{audio.channels}"' if audio.channels else ""
        lines.append(f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="{group}",NAME="{audio.name}",LANGUAGE="und",'
                     f'DEFAULT=YES,AUTOSELECT=YES{ch},URI="{audio.name}/{media}"')
    for t in video_tracks(state):
        bw = max(t.bandwidth, t.target_bitrate) + (audio.bandwidth if audio else 0)
        avg = (t.average_bandwidth or t.target_bitrate) + (audio.average_bandwidth if audio else 0)
        codecs = ",".join(_codec_list([t] + ([audio] if audio else [])))
        attrs = [f"BANDWIDTH={bw}", f"AVERAGE-BANDWIDTH={avg}", f'CODECS="{codecs}"']
        if t.width and t.height:
            attrs.append(f"RESOLUTION={t.width}x{t.height}")
        if t.frame_rate:
            attrs.append(f"FRAME-RATE={t.frame_rate:.3f}")
        if audio is not None:
            attrs.append(f'AUDIO="{group}"')
        lines.append("#EXT-X-STREAM-INF:" + ",".join(attrs))
        lines.append(f"{t.name}/{media}")
    return "\n".join(lines) + "\n"


def _codec_list(tracks: Iterable[Track]) -> list[str]:
    return [t.codecs for t in tracks if t.codecs]
