"""GOP chunker: a demuxed packet stream in, closed-GOP GopChunk records out (pure, no I/O, no PyAV).

Why pure: the rules that make GOP identities deterministic (DESIGN §3.1) — cut at IDR frames,
index from the source PTS, unwrap 33-bit PTS, open a new epoch on a timestamp jump or a change of
coding parameters, keep audio that precedes the first keyframe — must be identical in a primary
and a backup agent and are unit-tested on synthetic packets.

Index rule: `gop_index = floor((pts_start + nominal/2) / nominal) + offset`, where `nominal` is the
GOP duration (given, or learnt from the first complete GOP, rounded to whole frames) and `offset`
is 0 until a discontinuity. On a discontinuity (PTS going backwards, or jumping forward by more
than `max_gap_gops` GOPs) the epoch is bumped and `offset` is chosen so the index continues at
last + 1; a small forward gap (lost GOPs) keeps the PTS-derived index, so identities still match.

Memory is bounded whatever the feed does: an open GOP over `max_gop_bytes` (the Kafka message limit:
it could never be published) or longer than `max_gop_seconds` is dropped as soon as it crosses the
limit (a "gop_dropped" event; the frames up to the next keyframe, and the audio of that span, go too),
and the stream goes on at the next keyframe with its PTS-derived index. Audio waiting for video and
closed GOPs waiting for their audio are bounded by the same byte limit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from producers.media import FeedProblem, MediaPacket

MAX_GOP_BYTES = 16 * 1024 * 1024  # floodlight.kafka.MAX_MESSAGE_BYTES; the agent passes the real limit
MAX_GOP_SECONDS = 10.0


class PtsUnwrapper:
    """Makes an N-bit wrapping timestamp monotonic (MPEG-TS PTS wrap every 2^33 ticks, ~26.5 h)."""

    def __init__(self, bits: int | None = 33) -> None:
        self.period = 1 << bits if bits else 0
        self.offset = 0
        self.last: int | None = None

    def __call__(self, raw: int) -> int:
        if not self.period:
            return raw
        if self.last is not None:
            delta = raw - self.last
            if delta < -self.period // 2:
                self.offset += self.period
            elif delta > self.period // 2:
                self.offset -= self.period
        self.last = raw
        return raw + self.offset


@dataclass
class GopIndexer:
    """Deterministic gop_index / epoch from GOP start PTS (see module doc).

    `nominal` is a Fraction of ticks so a 2 s GOP in a 1/1000 time base at 30 fps (60 frames of
    33.3 ms) indexes without drift.
    """

    nominal: Fraction | None = None  # GOP duration in video ticks; learnt from the first GOP when None
    max_gap_gops: int = 5
    frame_ticks: Fraction | None = None  # exact frame duration in ticks, when the frame rate is known
    epoch: int = 0
    offset: int = 0
    last_index: int | None = None
    last_end: int | None = None
    grid: bool = False  # GOPs start on multiples of nominal (testsrc, --normalize): floor, not round
    _forced: bool = False

    def learn(self, first_duration: int, frames: int = 0) -> None:
        if self.nominal:
            return
        if self.frame_ticks and frames:
            self.nominal = frames * self.frame_ticks
        else:
            self.nominal = Fraction(max(1, first_duration))

    def raw_index(self, pts_start: int) -> int:
        assert self.nominal
        if self.grid:
            return math.floor(pts_start / self.nominal)
        return math.floor((pts_start + self.nominal / 2) / self.nominal)

    def assign(self, pts_start: int, duration: int, frames: int = 0) -> tuple[int, int, str | None]:
        """Return (gop_index, epoch, discontinuity reason or None) for a GOP and remember it."""
        self.learn(duration, frames)
        out = self.begin(pts_start)
        self.end(pts_start + duration)
        return out

    def begin(self, pts_start: int) -> tuple[int, int, str | None]:
        """The identity of a GOP from its start alone (a GOP published while it is captured, in
        chunks): the nominal length must be known; `end` is told where it ended, once it has."""
        assert self.nominal
        reason = None
        idx = self.raw_index(pts_start) + self.offset
        forced, self._forced = self._forced, False
        if forced and self.last_index is None:
            self.epoch += 1
        elif forced and self.last_index is not None:
            self.epoch += 1
            self.offset = self.last_index + 1 - self.raw_index(pts_start)
            idx = self.last_index + 1
        elif self.last_index is not None:
            tolerance = self.nominal / 4
            if self.last_end is None:
                pass  # the GOP before was dropped while it was being captured: no end to compare with
            elif pts_start < self.last_end - tolerance:
                reason = f"timestamps went back by {self.last_end - pts_start} ticks"
            elif pts_start > self.last_end + self.max_gap_gops * self.nominal:
                reason = f"timestamps jumped forward by {pts_start - self.last_end} ticks"
            if reason:
                self.epoch += 1
                self.offset = self.last_index + 1 - self.raw_index(pts_start)
                idx = self.last_index + 1
            elif idx <= self.last_index:  # a short GOP drifted onto the previous index: keep order
                self.offset += self.last_index + 1 - idx
                idx = self.last_index + 1
        self.last_index = idx
        self.last_end = None
        return idx, self.epoch, reason

    def end(self, pts_end: int) -> None:
        """Where the GOP last given to `begin` ended (the next one's discontinuity check)."""
        self.last_end = pts_end

    def force_break(self) -> None:
        """The next GOP starts a new epoch and continues at last + 1, whatever its PTS."""
        self._forced = True


@dataclass
class _OpenGop:
    start: int
    wallclock_ms: int | None
    gen: int = 0
    packets: list[MediaPacket] = field(default_factory=list)
    end: int | None = None
    size: int = 0  # payload bytes of its video packets
    # published while it is captured (sub-GOP chunks): identity fixed at its start
    streamed: bool = False
    index: int = 0
    epoch: int = 0
    chunk: int = 0  # index of the next chunk
    sent: int = 0  # video packets already published in chunks
    chunk_start: int = 0  # where the next chunk starts (ticks)


Event = Callable[[str, dict[str, Any]], None]


class GopChunker:
    """Feed MediaPackets (video and audio, interleaved as demuxed); collect GopChunk record dicts.

    A GOP is emitted once the next IDR has arrived and audio has caught up with its end (or video
    has run `audio_grace` ticks past it), so its audio is complete. Audio before the first keyframe
    goes with the first GOP; audio that arrives after its GOP was emitted goes with the next one.
    A timestamp jump in the packets (a pusher reconnecting at 0, a splice) ends the open GOP at its
    last frame and starts a new "generation": audio is matched only with video of its generation.
    Size and duration are capped (see the module doc): `gops_dropped` counts what the caps dropped.
    """

    def __init__(
        self,
        stream_id: str,
        ingest_id: str,
        video: dict[str, Any],
        audio: dict[str, Any] | None,
        time_base: Fraction,
        audio_time_base: Fraction | None = None,
        *,
        gop_ticks: int | None = None,
        grid: bool = False,
        wrap_bits: int | None = None,
        max_gap_gops: int = 5,
        audio_grace_s: float = 0.5,
        check_regular: bool = False,
        idr_check: Callable[[bytes], bool] | None = None,
        on_event: Event | None = None,
        clock_ms: Callable[[], int] | None = None,
        max_gop_bytes: int = MAX_GOP_BYTES,
        max_gop_seconds: float = MAX_GOP_SECONDS,
        part_seconds: float | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.ingest_id = ingest_id
        self.video = dict(video)
        self.audio = dict(audio) if audio else None
        self.tb = Fraction(time_base)
        self.atb = Fraction(audio_time_base) if audio_time_base else self.tb
        fr = Fraction(video.get("frame_rate_num") or 0, video.get("frame_rate_den") or 1)
        exact = 1 / (fr * self.tb) if fr else None
        self.frame_ticks = max(1, round(exact)) if exact else None  # for durations of last packets
        self.indexer = GopIndexer(nominal=Fraction(gop_ticks) if gop_ticks else None, max_gap_gops=max_gap_gops,
                                  frame_ticks=exact, grid=grid)
        self.vunwrap = PtsUnwrapper(wrap_bits)
        self.aunwrap = PtsUnwrapper(wrap_bits)
        self.audio_grace = int(audio_grace_s / self.tb)
        self.back_tolerance = int(1 / self.tb)  # reordering never moves a frame back by 1 s
        self.check_regular = check_regular
        self.idr_check = idr_check
        self.on_event = on_event or (lambda kind, info: None)
        self.clock_ms = clock_ms
        self.max_gop_bytes = max_gop_bytes
        self.max_gop_ticks = int(max_gop_seconds / self.tb)
        self._current: _OpenGop | None = None
        self._waiting: list[_OpenGop] = []
        self._ready: list[dict[str, Any]] = []  # chunks of streamed GOPs, out with the next push/flush
        self._audio_before: list[tuple[int, MediaPacket]] = []
        self.part_ticks = self._part_ticks(part_seconds)
        self._audio_bytes = 0  # payload bytes in self._audio
        self._dropping = False  # a GOP was dropped: discard video until the next keyframe
        self._drop_audio: tuple[int, int, int | None] | None = None  # (generation, from, to) in video ticks
        self.gops_dropped = 0
        self.dropped_bytes = 0
        self._audio: list[tuple[int, MediaPacket]] = []  # (generation, packet), not yet emitted
        self._vgen = self._agen = 0
        self._last_v: MediaPacket | None = None
        self._last_apts: int | None = None  # in video ticks
        self._audio_watermark: int | None = None  # newest audio pts of the current audio generation
        self._video_watermark: int | None = None
        self._pending_break: str | None = None
        self.gops_out = 0
        self.late_audio = 0
        self.stale_audio = 0  # audio packets dropped for being from well before their GOP (_drop_stale)
        self.skipped_before_idr = 0

    def _part_ticks(self, part_seconds: float | None) -> int | None:
        """Sub-GOP chunks: only for GOPs regular by construction (a grid of known length, so a GOP's
        identity and its end are known at its first frame), cut into equal whole-frame parts of
        about `part_seconds`."""
        if not part_seconds or not self.indexer.grid or not self.indexer.nominal or not self.frame_ticks:
            return None
        frames = max(1, round(self.indexer.nominal / self.frame_ticks))
        parts = max(1, round(self.indexer.nominal * self.tb / Fraction(part_seconds).limit_denominator(1000)))
        if parts <= 1:
            return None
        return -(-frames // parts) * self.frame_ticks  # ceil: the last part is the short one

    # --- input ---------------------------------------------------------------------------
    def push(self, pkt: MediaPacket) -> list[dict[str, Any]]:
        out = self._push_audio(pkt) if pkt.kind == "audio" else self._push_video(pkt)
        if self._ready:
            out, self._ready = self._ready + out, []
        return out

    def change_params(self, video: dict[str, Any], audio: dict[str, Any] | None, reason: str) -> list[dict]:
        """Coding parameters changed (e.g. resolution): close what is open, start a new epoch."""
        out = self.flush()
        self.video = dict(video)
        self.audio = dict(audio) if audio else None
        self._pending_break = "params: " + reason
        self.on_event("params_changed", {"reason": reason, "width": video.get("width"),
                                         "height": video.get("height")})
        return out

    def flush(self) -> list[dict[str, Any]]:
        """End of input (or of an epoch): emit everything, audio included."""
        self._close_current_at_last_frame(final=True)
        out, self._ready = self._ready, []
        while self._waiting:
            out.append(self._emit(self._waiting.pop(0), final=not self._waiting))
        return out

    def _close_current_at_last_frame(self, final: bool = False) -> None:
        if self._current is not None:
            cur = self._current
            last = max(cur.packets, key=lambda p: p.pts)
            cur.end = last.pts + (last.duration or self.frame_ticks or 1)
            self._current = None
            if cur.streamed:  # the rest of it (maybe no frame at all) as its last chunk
                self._ready.append(self._emit_chunk(cur, cur.end, last=True, final=final))
            else:
                self._waiting.append(cur)

    def _end_before(self, g: _OpenGop, next_key: int) -> int:
        """End of a GOP closed by the keyframe at `next_key`: that keyframe, unless frames are missing
        in between (a gap of lost or skipped GOPs), in which case the GOP ends with its last frame."""
        last = max(g.packets, key=lambda p: p.pts)
        own_end = last.pts + (last.duration or self.frame_ticks or 1)
        gap_limit = 1.5 * (self.frame_ticks or last.duration or 1)
        return own_end if next_key - own_end > gap_limit else next_key

    def _jump(self, pts: int, last: int) -> str | None:
        if pts < last - self.back_tolerance:
            return f"timestamps went back by {last - pts} ticks"
        nominal = self.indexer.nominal or Fraction(10, 1) / self.tb
        if pts > last + self.indexer.max_gap_gops * nominal:
            return f"timestamps jumped forward by {pts - last} ticks"
        return None

    def _push_video(self, pkt: MediaPacket) -> list[dict[str, Any]]:
        pts = self.vunwrap(pkt.pts)
        dts = pts + (pkt.dts - pkt.pts) if pkt.dts is not None else pts
        p = MediaPacket("video", pts, dts, pkt.data, pkt.keyframe, pkt.duration, pkt.wallclock_ms)
        out: list[dict[str, Any]] = []
        if self._last_v is not None:
            reason = self._jump(pts, self._last_v.pts)
            if reason:
                # the old timeline ends with its last frame; emit it with the audio of its generation
                self._close_current_at_last_frame()
                while self._waiting:
                    out.append(self._emit(self._waiting.pop(0), final=not self._waiting))
                self._vgen += 1
                self._pending_break = reason
                self._video_watermark = None
        self._last_v = p
        self._video_watermark = pts if self._video_watermark is None else max(self._video_watermark, pts)
        if p.keyframe and self.idr_check is not None and not self.idr_check(p.data):
            raise FeedProblem(f"keyframe at pts {pts} is not an IDR (open GOP / recovery-point I-frame); "
                              "use --normalize")
        if p.keyframe:
            if self._current is not None and self._current.streamed:  # a GOP shorter than the grid says
                self._close_current_at_last_frame()
            if self._current is not None:
                self._current.end = self._end_before(self._current, pts)
                self.indexer.learn(self._current.end - self._current.start, len(self._current.packets))
                if self.check_regular:
                    self._check_regular(self._current)
                self._waiting.append(self._current)
            if self._dropping:  # the dropped span ends here: its audio ends here too
                self._dropping = False
                if self._drop_audio is not None and self._drop_audio[0] == self._vgen:
                    self._drop_audio = (self._vgen, self._drop_audio[1], pts)
                    self._discard_dropped_audio()
            wc = p.wallclock_ms if p.wallclock_ms is not None else (self.clock_ms() if self.clock_ms else 0)
            self._current = _OpenGop(start=pts, wallclock_ms=wc, gen=self._vgen)
            if self.part_ticks and not self._waiting:
                self._begin_streamed(self._current)
        elif self._current is None:
            if self._dropping:
                self.dropped_bytes += len(p.data)
                return out + self._drain()
            self.skipped_before_idr += 1  # nothing decodable before the first IDR
            return out
        elif self.check_regular and pts < self._current.start:
            raise FeedProblem(
                f"open GOP: a frame at pts {pts} after the keyframe at {self._current.start} is shown before it "
                "(leading pictures reference the previous GOP); use --normalize")
        self._current.packets.append(p)
        self._current.size += len(p.data)
        cur = self._current
        self._check_caps(cur, pts)
        if cur.streamed and self._current is cur:
            out += self._next_chunk(cur, p)
        out += self._drain()
        return out + self._bound_pending()

    def _push_audio(self, pkt: MediaPacket) -> list[dict[str, Any]]:
        if self.audio is None:
            return []
        pts = self.aunwrap(pkt.pts)
        dts = pts + (pkt.dts - pkt.pts) if pkt.dts is not None else pts
        a = MediaPacket("audio", pts, dts, pkt.data, pkt.keyframe, pkt.duration)
        v = self._to_video(pts)
        if self._last_apts is not None and self._jump(v, self._last_apts):
            self._agen += 1
            self._audio_watermark = None
        self._last_apts = v
        self._audio_watermark = v if self._audio_watermark is None else max(self._audio_watermark, v)
        if self._in_dropped_span(self._agen, v):
            self.dropped_bytes += len(a.data)
            return self._drain()
        self._audio.append((self._agen, a))
        self._audio_bytes += len(a.data)
        return self._drain() + self._bound_pending()

    # --- caps -------------------------------------------------------------------------------
    def _check_caps(self, g: _OpenGop, pts: int) -> None:
        """Drop the open GOP the moment it could never be published, or is longer than any GOP may be."""
        if g.size + self._audio_bytes > self.max_gop_bytes:
            kind = "gop_too_large"
            reason = (f"GOP at pts {g.start} passed {self.max_gop_bytes} bytes (the Kafka message limit) "
                      f"after {len(g.packets)} frames without a keyframe")
        elif pts - g.start > self.max_gop_ticks:
            kind = "gop_too_long"
            reason = (f"no keyframe for {float((pts - g.start) * self.tb):.1f} s after the one at pts {g.start} "
                      f"(the longest GOP allowed is {float(self.max_gop_ticks * self.tb):.1f} s)")
        else:
            return
        self._current = None
        self._dropping = True
        self.gops_dropped += 1
        self.dropped_bytes += g.size
        self._drop_audio = (g.gen, g.start, None)
        self._discard_dropped_audio()
        index = (self.indexer.raw_index(g.start) + self.indexer.offset) if self.indexer.nominal else None
        self.on_event("gop_dropped", {"kind": kind, "reason": reason + "; dropped up to the next keyframe",
                                      "pts_start": g.start, "bytes": g.size, "frames": len(g.packets),
                                      "gop_index": index})

    def _in_dropped_span(self, gen: int, v: int) -> bool:
        d = self._drop_audio
        return d is not None and gen == d[0] and v >= d[1] and (d[2] is None or v < d[2])

    def _discard_dropped_audio(self) -> None:
        keep = [(gen, a) for gen, a in self._audio if not self._in_dropped_span(gen, self._to_video(a.pts))]
        if len(keep) != len(self._audio):
            self._audio = keep
            self._audio_bytes = sum(len(a.data) for _, a in keep)

    def _bound_pending(self) -> list[dict[str, Any]]:
        """Closed GOPs waiting for audio go out early, and audio with no video to go with is trimmed
        (oldest first), before either holds more than one message's worth of bytes."""
        out = []
        while self._waiting and sum(g.size for g in self._waiting) > self.max_gop_bytes:
            out.append(self._emit(self._waiting.pop(0)))
        if self._audio_bytes > self.max_gop_bytes:
            dropped = 0
            while self._audio and self._audio_bytes > self.max_gop_bytes // 2:
                _, a = self._audio.pop(0)
                self._audio_bytes -= len(a.data)
                dropped += len(a.data)
            self.dropped_bytes += dropped
            self.on_event("gop_dropped", {"kind": "audio_backlog", "bytes": dropped, "gop_index": None,
                                          "reason": f"{dropped} bytes of audio with no video to go with were dropped"})
        return out

    # --- output ----------------------------------------------------------------------------
    def _to_video(self, audio_pts: int) -> int:
        return int(audio_pts * self.atb / self.tb) if self.atb != self.tb else audio_pts

    def _drain(self) -> list[dict[str, Any]]:
        out = []
        while self._waiting:
            g = self._waiting[0]
            assert g.end is not None
            audio_done = self.audio is None or self._agen > g.gen or (
                self._agen == g.gen and self._audio_watermark is not None and self._audio_watermark >= g.end)
            video_past = self._video_watermark is not None and self._video_watermark >= g.end + self.audio_grace
            if not (audio_done or video_past):
                break
            out.append(self._emit(self._waiting.pop(0)))
        return out

    def _check_regular(self, g: _OpenGop) -> None:
        assert g.end is not None
        if self.indexer.nominal is None:
            return
        dur = g.end - g.start
        slack = self.frame_ticks or max(1, self.indexer.nominal / 20)
        if abs(dur - self.indexer.nominal) > slack:
            raise FeedProblem(
                f"irregular GOP: {float(dur * self.tb):.3f} s instead of {float(self.indexer.nominal * self.tb):.3f} s"
                " (scene-cut or variable keyframes); use --normalize")

    # --- sub-GOP chunks ----------------------------------------------------------------------
    def _begin_streamed(self, g: _OpenGop) -> None:
        """Fix the identity of a GOP at its keyframe, so its chunks can leave while it is captured."""
        if self._pending_break:
            self.indexer.force_break()
        idx, epoch, reason = self.indexer.begin(g.start)
        if self._pending_break:
            reason, self._pending_break = self._pending_break, None
        if reason:
            self.on_event("discontinuity", {"reason": reason, "gop_index": idx, "epoch": epoch})
        g.streamed, g.index, g.epoch, g.chunk_start = True, idx, epoch, g.start

    def _next_chunk(self, g: _OpenGop, p: MediaPacket) -> list[dict[str, Any]]:
        """The frame just added completes a part (or the GOP's length on the grid): publish it."""
        assert self.part_ticks and self.indexer.nominal
        half = (self.frame_ticks or 1) // 2
        covered = p.pts + (p.duration or self.frame_ticks or 1) - g.start
        nominal = int(self.indexer.nominal)
        if covered >= nominal - half:  # on the grid the next frame is the next GOP's keyframe
            self._current = None
            return [self._emit_chunk(g, g.start + nominal, last=True)]
        if covered >= (g.chunk + 1) * self.part_ticks - half:
            return [self._emit_chunk(g, g.start + covered, last=False)]
        return []

    def _emit_chunk(self, g: _OpenGop, end: int, *, last: bool, final: bool = False) -> dict[str, Any]:
        """One chunk of a streamed GOP: its new frames and the audio before `end` (all of the
        generation's audio at the end of input). `duration` is the chunk's own span, so a GOP's
        chunks add up to it; `pts_start` is the GOP's first frame in every chunk (its identity)."""
        packets, g.sent = g.packets[g.sent:], len(g.packets)
        self._audio_before = list(self._audio)
        take, keep = [], []
        for gen, a in self._audio:
            mine = gen < g.gen or (gen == g.gen and (final or self._to_video(a.pts) < end))
            (take if mine else keep).append(a if mine else (gen, a))
        self._audio = keep
        self._audio_bytes = sum(len(a.data) for _, a in keep)
        if g.chunk == 0:
            take = self._drop_stale(take, g, [a for gen, a in self._audio_before if gen == g.gen])
        take.sort(key=lambda a: a.pts)
        video = dict(self.video)
        if g.chunk:
            video["extradata"] = b""  # the first chunk carries the codec parameters
        rec = {
            "stream_id": self.stream_id, "ingest_id": self.ingest_id, "gop_index": g.index, "epoch": g.epoch,
            "chunk_index": g.chunk, "is_last_chunk": last, "pts_start": g.start,
            "duration": max(0, end - g.chunk_start), "time_base_num": self.tb.numerator,
            "time_base_den": self.tb.denominator, "capture_wallclock_ms": int(g.wallclock_ms or 0),
            "published_wallclock_ms": 0, "video": video, "audio": dict(self.audio) if self.audio else None,
            "video_packets": [_pkt(v) for v in packets], "audio_packets": [_pkt(a) for a in take],
        }
        g.chunk += 1
        g.chunk_start = end
        if last:
            self.indexer.end(end)
            self.gops_out += 1
        return rec

    def _drop_stale(self, take: list[MediaPacket], g: _OpenGop, same_gen: list[MediaPacket]) -> list[MediaPacket]:
        """Audio of this GOP's timeline from well before it (a source that skipped ahead: a testsrc behind
        real time) would put a hole of that length into the GOP's audio segment (and raise the playlists'
        target duration for good): it is dropped. The first GOP keeps what preceded it; leftovers of an
        older timeline (generation) are never dropped."""
        if not self.gops_out:
            return take
        floor = g.start - self.audio_grace
        stale = {id(a) for a in same_gen if self._to_video(a.pts) < floor}
        self.stale_audio += len(stale)
        return [a for a in take if id(a) not in stale] if stale else take

    def _emit(self, g: _OpenGop, final: bool = False) -> dict[str, Any]:
        assert g.end is not None
        duration = g.end - g.start
        if self._pending_break:
            self.indexer.force_break()
        idx, epoch, reason = self.indexer.assign(g.start, duration, len(g.packets))
        if self._pending_break:
            reason, self._pending_break = self._pending_break, None
        if reason:
            self.on_event("discontinuity", {"reason": reason, "gop_index": idx, "epoch": epoch})
        take, keep = [], []
        for gen, a in self._audio:
            # older generations' leftovers are never dropped; newer ones wait for their video
            mine = gen < g.gen or (gen == g.gen and (final or self._to_video(a.pts) < g.end))
            (take if mine else keep).append(a if mine else (gen, a))
        if self.gops_out:  # audio of an earlier GOP that arrived after that GOP was emitted
            self.late_audio += sum(1 for a in take if self._to_video(a.pts) + (self.frame_ticks or 1) < g.start)
        take = self._drop_stale(take, g, [a for gen, a in self._audio if gen == g.gen])
        self._audio = keep
        self._audio_bytes = sum(len(a.data) for _, a in keep)
        take.sort(key=lambda a: a.pts)
        self.gops_out += 1
        return {
            "stream_id": self.stream_id,
            "ingest_id": self.ingest_id,
            "gop_index": idx,
            "epoch": epoch,
            "chunk_index": 0,
            "is_last_chunk": True,
            "pts_start": g.start,
            "duration": duration,
            "time_base_num": self.tb.numerator,
            "time_base_den": self.tb.denominator,
            "capture_wallclock_ms": int(g.wallclock_ms or 0),
            "published_wallclock_ms": 0,
            "video": dict(self.video),
            "audio": dict(self.audio) if self.audio else None,
            "video_packets": [_pkt(p) for p in g.packets],
            "audio_packets": [_pkt(a) for a in take],
        }


def _pkt(p: MediaPacket) -> dict[str, Any]:
    return {"pts": p.pts, "dts": p.dts, "duration": p.duration, "keyframe": p.keyframe, "data": p.data}
