"""The per-stream packaging model: tracks of segments (with parts, gaps, keys), cues and the DVR window.

Pure data plus the rules that change it; no I/O. The packaging core (core.py) changes the model only
through the transitions below, named for what happens (a segment is added, the window slides, the
stream ends), never by assigning fields. Playlists and the MPD are rendered from this
(playlist.py, mpd.py), and it round-trips through JSON so a restarted packager continues with the
same media sequence numbers (DESIGN §3.3, §3.6).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

STATE_VERSION = 1


@dataclass
class Part:
    duration: float
    independent: bool


@dataclass
class Segment:
    """Segment `msn` of one track: the CMAF media of GOP base+msn, or a gap standing in for it."""

    msn: int
    pts: int
    duration: int
    timescale: int
    pdt_ms: int
    epoch: int = 0
    init_hash: str = ""
    parts: list[Part] = field(default_factory=list)
    gap: bool = False
    key_id: str | None = None
    iv_hex: str | None = None
    size: int = 0

    @property
    def seconds(self) -> float:
        return self.duration / self.timescale if self.timescale else 0.0

    @property
    def end_ms(self) -> int:
        return self.pdt_ms + round(self.seconds * 1000)


@dataclass
class Track:
    """One rendition (a video rung or `audio`) and its segments in the DVR window, keyed by msn."""

    name: str
    media_type: str  # VIDEO | AUDIO
    codecs: str
    bandwidth: int = 0
    average_bandwidth: int = 0
    target_bitrate: int = 0
    width: int = 0
    height: int = 0
    frame_rate: float = 0.0
    sample_rate: int = 0
    channels: int = 0
    timescale: int = 0
    inits: dict[str, str] = field(default_factory=dict)  # init_hash -> object name (init.mp4, init-<h>.mp4)
    segments: dict[int, Segment] = field(default_factory=dict)
    version: int = 0
    disc_base: int = 0  # discontinuity sequence number of the first kept segment
    pto: int = -1  # DASH presentationTimeOffset, fixed by the track's first segment
    hi: int = -1  # highest msn inserted
    partial: Segment | None = None  # the segment being built after the newest one: its parts so far (not saved)

    def ordered(self) -> list[Segment]:
        return [self.segments[m] for m in sorted(self.segments)]

    @property
    def last_msn(self) -> int:
        if self.hi in self.segments:  # kept by the core on every insert: no scan on the hot path
            return self.hi
        return max(self.segments) if self.segments else -1

    def insert(self, seg: Segment) -> None:
        self.segments[seg.msn] = seg
        self.hi = max(self.hi, seg.msn)

    def describe(self, *, codecs: str, timescale: int, bandwidth: int = 0, average_bandwidth: int = 0,
                 target_bitrate: int = 0, width: int = 0, height: int = 0, frame_rate: float = 0.0,
                 sample_rate: int = 0, channels: int = 0) -> None:
        """What the newest RenditionSegment says about the rendition: bandwidths only grow, and an
        attribute it leaves at zero keeps its known value."""
        self.codecs = codecs or self.codecs
        self.timescale = timescale
        self.bandwidth = max(self.bandwidth, bandwidth)
        self.average_bandwidth = max(self.average_bandwidth, average_bandwidth)
        self.target_bitrate = target_bitrate or self.target_bitrate
        self.width = width or self.width
        self.height = height or self.height
        self.frame_rate = frame_rate or self.frame_rate
        self.sample_rate = sample_rate or self.sample_rate
        self.channels = channels or self.channels

    def publish(self, wall_ms: int) -> int:
        """Its playlist changed: the next version (monotonic, and at least the wall clock)."""
        self.version = max(self.version + 1, wall_ms)
        return self.version

    def init_name(self, init_hash: str) -> str:
        """Object name of an init segment; the first one is the contract's `init.mp4`."""
        name = self.inits.get(init_hash)
        if name is None:
            name = "init.mp4" if not self.inits else f"init-{init_hash[:16]}.mp4"
            self.inits[init_hash] = name
        return name


@dataclass
class CueEntry:
    """An ad break: requested start snapped to the first segment starting at or after it."""

    cue_id: str
    splice_event_id: int
    start_ms: int
    duration_ms: int
    scte35_hex: str | None = None
    out_msn: int | None = None  # segment where the break starts (CUE-OUT)
    in_msn: int | None = None  # segment where programming resumes (CUE-IN)
    after_msn: int = 0  # the live edge when the cue arrived: it is never placed in the past


@dataclass
class StreamConfig:
    """What the registry (or the replay tool) says about how to package a stream."""

    latency_mode: str = "STANDARD"
    dvr_window_s: int = 7200
    drm: bool = False
    key_rotation_segments: int = 10
    live_window_s: float = 60.0
    audio_group: str = "aac"


@dataclass
class StreamState:
    stream_id: str
    prefix: str = "live"  # "live" (keys live/{stream_id}/...) or "vod/<asset>" (keys vod/<asset>/...)
    base_gop: int | None = None  # gop_index of msn 0, fixed at the first GOP and persisted
    tracks: dict[str, Track] = field(default_factory=dict)
    cues: dict[str, CueEntry] = field(default_factory=dict)
    config: StreamConfig = field(default_factory=StreamConfig)
    target_duration: int = 0  # fixed once known (RFC 8216bis: must not change); raised only if exceeded
    part_target: float = 0.0
    max_segment_s: float = 0.0  # longest segment seen (DASH maxSegmentDuration)
    lag_ms: int = 0  # how long after its end a segment reaches the packager (decaying max; DASH delay)
    period_origin: int = 0  # msn the first DASH Period in the window began at
    period_start_s: float = 0.0  # and its start after availabilityStartTime
    period_ptos: dict[str, int] = field(default_factory=dict)  # and its presentationTimeOffset per rendition
    ast_ms: int = 0  # DASH availabilityStartTime: wall-clock of msn 0's start
    ended: bool = False
    vod: bool = False  # finalised as VOD (replay): PLAYLIST-TYPE:VOD + static MPD
    version: int = 0  # master/mpd version

    # --- identity ---------------------------------------------------------------------------
    @property
    def root(self) -> str:
        return stream_root(self.prefix, self.stream_id)

    def msn_of(self, gop_index: int) -> int:
        if self.base_gop is None:
            self.base_gop = gop_index
        return gop_index - self.base_gop

    def start_msn(self) -> int:
        """Lowest msn any track holds (new tracks start here so MEDIA-SEQUENCE never goes back)."""
        firsts = [min(t.segments) for t in self.tracks.values() if t.segments]
        return min(firsts) if firsts else 0

    # --- transitions ------------------------------------------------------------------------
    def reconfigure(self, config: StreamConfig) -> None:
        """The registry (or the replay tool) changed how the stream is packaged."""
        self.config = config

    def track_for(self, name: str, media_type: str, codecs: str) -> Track:
        """The rendition's track, opened on its first segment."""
        track = self.tracks.get(name)
        if track is None:
            track = self.tracks[name] = Track(name=name, media_type=media_type, codecs=codecs)
        return track

    def add_segment(self, track: Track, seg: Segment, now_ms: int) -> None:
        """A GOP's media is written: list it (over a gap, if one stood in for it) and let it fix the
        stream's clocks: availabilityStartTime, the track's presentationTimeOffset, the arrival lag
        of live segments and the target durations."""
        fills_gap = seg.msn in track.segments
        if not self.ast_ms:
            self.ast_ms = seg.pdt_ms
        lag = now_ms - seg.end_ms
        if not fills_gap and 0 <= lag < 120_000:  # live arrival (not a replay of old media)
            self.lag_ms = max(lag, int(self.lag_ms * 0.95))
        if track.pto < 0:
            track.pto = max(0, seg.pts - round((seg.pdt_ms - self.ast_ms) * seg.timescale / 1000))
        track.insert(seg)
        self.note_durations(seg)

    def add_gap(self, track: Track, msn: int, nxt: Segment | None, key_id: str | None = None,
                iv_hex: str | None = None) -> Segment:
        """A GOP never arrived: list a gap in its place, timed from its neighbours."""
        seg = gap_segment(track, msn, nxt)
        seg.key_id, seg.iv_hex = key_id, iv_hex
        track.insert(seg)
        return seg

    def slide_window(self, track: Track) -> list[Segment]:
        """Drop the segments that left the DVR window; returns them (their objects are to be deleted)."""
        gone = self.expired(track)
        self.drop(track, [s.msn for s in gone])
        return gone

    def keep_period(self, origin: int, start_s: float, ptos: dict[str, int]) -> None:
        """The window moved past the msn the first DASH Period began at: keep its id, start and offsets."""
        self.period_origin, self.period_start_s, self.period_ptos = origin, start_s, dict(ptos)

    def publish(self, wall_ms: int) -> int:
        """The master playlist or MPD changed: the next version (monotonic, and at least the wall clock)."""
        self.version = max(self.version + 1, wall_ms)
        return self.version

    def end(self, vod: bool = False) -> None:
        """The stream is over (ENDLIST everywhere); a replay finalises it as VOD."""
        self.ended = True
        self.vod = self.vod or vod

    def reopen(self) -> bool:
        """A live stream went live again after an end; False when there is nothing to reopen (or VOD)."""
        if not self.ended or self.vod:
            return False
        self.ended = False
        return True

    # --- cues -------------------------------------------------------------------------------
    def add_cue(self, cue_id: str, splice_event_id: int, start_ms: int, duration_ms: int,
                scte35_hex: str | None = None) -> bool:
        """Register an ad break, never placed before the current live edge; False if already known."""
        if cue_id in self.cues:
            return False
        edge = max((t.last_msn for t in self.tracks.values()), default=-1) + 1
        self.cues[cue_id] = CueEntry(cue_id=cue_id, splice_event_id=splice_event_id, start_ms=start_ms,
                                     duration_ms=duration_ms, scte35_hex=scte35_hex, after_msn=edge)
        return True

    def place_cues(self) -> bool:
        """Snap pending cue starts/ends to segment boundaries once the boundary segment exists;
        True when a boundary was placed (every playlist then changes)."""
        pending = [c for c in self.cues.values() if c.in_msn is None]
        if not pending:
            return False
        lo = min(c.after_msn if c.out_msn is None else c.out_msn for c in pending)
        hi = max((t.last_msn for t in self.tracks.values()), default=-1)
        known: dict[int, int] = {}  # msn -> PDT, only from where a pending cue can land
        for t in self.tracks.values():
            for m in range(lo, hi + 1):
                s = t.segments.get(m)
                if s is not None and not s.gap:
                    known.setdefault(m, s.pdt_ms)
        if not known:
            return False
        placed = False
        for cue in pending:
            if cue.out_msn is None:
                cands = [m for m, pdt in known.items() if m >= cue.after_msn and pdt >= cue.start_ms - 5]
                if cands:
                    cue.out_msn = min(cands)
                    placed = True
            if cue.out_msn is not None and cue.in_msn is None:
                out_pdt = known.get(cue.out_msn)
                if out_pdt is None:
                    continue
                cands = [m for m, pdt in known.items() if m > cue.out_msn and pdt >= out_pdt + cue.duration_ms - 5]
                if cands:
                    cue.in_msn = min(cands)
                    placed = True
        return placed

    # --- timing -----------------------------------------------------------------------------
    def note_durations(self, seg: Segment) -> None:
        """Fix TARGETDURATION and PART-TARGET from the first segment; raise them only if exceeded."""
        if seg.gap:
            return
        self.max_segment_s = max(self.max_segment_s, seg.seconds)
        td = max(1, round(seg.seconds))
        if td > self.target_duration:
            self.target_duration = td
        if seg.parts:
            longest = max(p.duration for p in seg.parts)
            pt = math.ceil(longest * 1000 - 1e-6) / 1000
            if pt > self.part_target:
                self.part_target = pt

    def note_part(self, duration: float) -> None:
        """A part arrived on its own (before its segment is complete): PART-TARGET covers it."""
        pt = math.ceil(duration * 1000 - 1e-6) / 1000
        if pt > self.part_target:
            self.part_target = pt

    @property
    def has_parts(self) -> bool:
        """LL-HLS part tags: low-latency streams whose newest segments really come in parts."""
        if self.part_target <= 0 or self.config.latency_mode != "LOW":
            return False
        for t in self.tracks.values():
            last = t.segments.get(t.last_msn)
            if (last is not None and len(last.parts) > 1) or t.partial is not None:
                return True
        return False

    # --- discontinuities --------------------------------------------------------------------
    def discontinuities(self, track: Track, ordered: list[Segment] | None = None) -> dict[int, int]:
        """msn -> discontinuity sequence number, and which segments start a discontinuity (value changes)."""
        out: dict[int, int] = {}
        seq = track.disc_base
        prev: Segment | None = None
        for seg in ordered if ordered is not None else track.ordered():
            if prev is not None and not seg.gap and starts_discontinuity(prev, seg):
                seq += 1
            out[seg.msn] = seq
            if not seg.gap:
                prev = seg
        return out

    # --- DVR --------------------------------------------------------------------------------
    def expired(self, track: Track) -> list[Segment]:
        """Segments that left the DVR window (or the live window when DVR is off)."""
        segs = track.ordered()
        if not segs or self.ended:
            return []
        cutoff = segs[-1].end_ms - (self.config.dvr_window_s or self.config.live_window_s) * 1000
        out = []
        for s in segs:  # oldest first: stop at the first one still inside the window
            if s.end_ms > cutoff:
                break
            out.append(s)
        return out

    def drop(self, track: Track, msns: list[int]) -> None:
        """Forget expired segments; the first kept one keeps its discontinuity sequence number."""
        if not msns:
            return
        disc = self.discontinuities(track)
        gone = set(msns)
        keep = [m for m in track.segments if m not in gone]
        if keep:
            track.disc_base = max(track.disc_base, disc[min(keep)])
        for m in msns:
            track.segments.pop(m, None)

    # --- persistence ------------------------------------------------------------------------
    def to_dict(self, with_segments: bool = True) -> dict[str, Any]:
        """JSON-ready dict; segments as compact rows (or left out: the checkpoint stores them in chunks)."""
        d = {k: v for k, v in vars(self).items() if k not in ("tracks", "cues", "config")}
        d["state_version"] = STATE_VERSION
        d["config"] = asdict(self.config)
        d["cues"] = {k: asdict(c) for k, c in self.cues.items()}
        d["tracks"] = {}
        for name, t in self.tracks.items():
            td = {k: v for k, v in vars(t).items() if k not in ("segments", "inits", "partial")}
            td["inits"] = dict(t.inits)
            td["segments"] = [seg_row(s) for s in t.ordered()] if with_segments else []
            d["tracks"][name] = td
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StreamState:
        d = dict(d)
        d.pop("state_version", None)
        tracks = {}
        for name, t in d.pop("tracks").items():
            t = dict(t)
            rows = t.pop("segments", [])
            track = Track(**t)
            for row in rows:
                track.insert(seg_from_row(row))
            tracks[name] = track
        cues = {k: CueEntry(**v) for k, v in d.pop("cues").items()}
        config = StreamConfig(**d.pop("config"))
        return cls(tracks=tracks, cues=cues, config=config, **d)


def stream_root(prefix: str, stream_id: str) -> str:
    """Where a stream's objects live: `live/{stream_id}`, or `vod/{asset_id}` (the prefix) for a replay."""
    return prefix if prefix.startswith("vod/") else f"{prefix}/{stream_id}"


def starts_discontinuity(prev: Segment, seg: Segment) -> bool:
    """A new epoch (source restart/failover) or new encoding parameters (different init)."""
    return seg.epoch != prev.epoch or (bool(seg.init_hash) and seg.init_hash != prev.init_hash)


def seg_row(s: Segment) -> list[Any]:
    return [s.msn, s.pts, s.duration, s.timescale, s.pdt_ms, s.epoch, s.init_hash,
            [[p.duration, p.independent] for p in s.parts], s.gap, s.key_id, s.iv_hex, s.size]


def seg_from_row(r: list[Any]) -> Segment:
    return Segment(msn=r[0], pts=r[1], duration=r[2], timescale=r[3], pdt_ms=r[4], epoch=r[5], init_hash=r[6],
                   parts=[Part(d, i) for d, i in r[7]], gap=r[8], key_id=r[9], iv_hex=r[10], size=r[11])


def gap_segment(track: Track, msn: int, nxt: Segment | None) -> Segment:
    """Stand-in for a GOP that never arrived: timing interpolated from its neighbours."""
    before = [track.segments[m] for m in track.segments if m < msn]
    prev = max(before, key=lambda s: s.msn) if before else None
    if prev is not None:
        missing = (nxt.msn - prev.msn - 1) if nxt is not None else 1
        if nxt is not None and nxt.timescale == prev.timescale and missing > 0 and nxt.epoch == prev.epoch:
            span = nxt.pts - (prev.pts + prev.duration)
            dur = max(1, span // missing) if span > 0 else prev.duration
        else:
            dur = prev.duration
        k = msn - prev.msn - 1
        return Segment(msn=msn, pts=prev.pts + prev.duration + k * dur, duration=dur, timescale=prev.timescale,
                       pdt_ms=prev.end_ms + round(k * dur * 1000 / prev.timescale), epoch=prev.epoch,
                       init_hash=prev.init_hash, gap=True)
    assert nxt is not None, "a gap needs a neighbour"
    k = nxt.msn - msn
    return Segment(msn=msn, pts=nxt.pts - k * nxt.duration, duration=nxt.duration, timescale=nxt.timescale,
                   pdt_ms=nxt.pdt_ms - round(k * nxt.seconds * 1000), epoch=nxt.epoch, init_hash=nxt.init_hash,
                   gap=True)
