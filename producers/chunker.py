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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any


class FeedProblem(ValueError):
    """The feed is not H.264 + AAC with closed, regular GOPs; the message names the problem."""


@dataclass(slots=True)
class MediaPacket:
    """One encoded access unit as a source adapter hands it over (timestamps in the stream's time base)."""

    kind: str  # "video" | "audio"
    pts: int
    dts: int
    data: bytes
    keyframe: bool = False
    duration: int = 0
    wallclock_ms: int | None = None  # capture time of a video frame, when the source knows it


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
    """Deterministic gop_index / epoch from GOP start PTS (see module doc)."""

    nominal: int | None = None  # GOP duration in video ticks; learnt from the first GOP when None
    max_gap_gops: int = 5
    frame_ticks: int | None = None
    epoch: int = 0
    offset: int = 0
    last_index: int | None = None
    last_end: int | None = None

    def learn(self, first_duration: int) -> None:
        if self.nominal:
            return
        d = first_duration
        if self.frame_ticks:
            d = max(1, round(d / self.frame_ticks)) * self.frame_ticks
        self.nominal = max(1, d)

    def raw_index(self, pts_start: int) -> int:
        assert self.nominal
        return (pts_start + self.nominal // 2) // self.nominal

    def assign(self, pts_start: int, duration: int) -> tuple[int, int, str | None]:
        """Return (gop_index, epoch, discontinuity reason or None) for a GOP and remember it."""
        self.learn(duration)
        assert self.nominal
        reason = None
        idx = self.raw_index(pts_start) + self.offset
        if self.last_index is not None and self.last_end is not None:
            tolerance = self.nominal // 4
            if pts_start < self.last_end - tolerance:
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
        self.last_end = pts_start + duration
        return idx, self.epoch, reason

    def bump_epoch(self) -> int:
        self.epoch += 1
        return self.epoch


@dataclass
class _OpenGop:
    start: int
    wallclock_ms: int | None
    packets: list[MediaPacket] = field(default_factory=list)
    end: int | None = None


Event = Callable[[str, dict[str, Any]], None]


class GopChunker:
    """Feed MediaPackets (video and audio, interleaved as demuxed); collect GopChunk record dicts.

    A GOP is emitted once the next IDR has arrived and audio has caught up with its end (or video
    has run `audio_grace` ticks past it), so its audio is complete. Audio before the first keyframe
    goes with the first GOP; audio that arrives after its GOP was emitted goes with the next one.
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
        wrap_bits: int | None = None,
        max_gap_gops: int = 5,
        audio_grace_s: float = 0.5,
        check_regular: bool = False,
        on_event: Event | None = None,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.ingest_id = ingest_id
        self.video = dict(video)
        self.audio = dict(audio) if audio else None
        self.tb = Fraction(time_base)
        self.atb = Fraction(audio_time_base) if audio_time_base else self.tb
        fr = Fraction(video.get("frame_rate_num") or 0, video.get("frame_rate_den") or 1)
        frame_ticks = round(1 / (fr * self.tb)) if fr else None
        self.frame_ticks = frame_ticks
        self.indexer = GopIndexer(nominal=gop_ticks, max_gap_gops=max_gap_gops, frame_ticks=frame_ticks)
        self.vunwrap = PtsUnwrapper(wrap_bits)
        self.aunwrap = PtsUnwrapper(wrap_bits)
        self.audio_grace = int(audio_grace_s / self.tb)
        self.check_regular = check_regular
        self.on_event = on_event or (lambda kind, info: None)
        self.clock_ms = clock_ms
        self._current: _OpenGop | None = None
        self._waiting: list[_OpenGop] = []
        self._audio: list[MediaPacket] = []  # not yet emitted, in arrival order
        self._audio_watermark: int | None = None  # newest audio pts, in video ticks
        self._video_watermark: int | None = None
        self._pending_epoch_bump = False
        self.gops_out = 0
        self.late_audio = 0
        self.skipped_before_idr = 0

    # --- input ---------------------------------------------------------------------------
    def push(self, pkt: MediaPacket) -> list[dict[str, Any]]:
        if pkt.kind == "audio":
            return self._push_audio(pkt)
        return self._push_video(pkt)

    def change_params(self, video: dict[str, Any], audio: dict[str, Any] | None, reason: str) -> list[dict]:
        """Coding parameters changed (e.g. resolution): close what is open, start a new epoch."""
        out = self.flush()
        self.video = dict(video)
        self.audio = dict(audio) if audio else None
        self._pending_epoch_bump = True
        self.on_event("params_changed", {"reason": reason, "width": video.get("width"),
                                         "height": video.get("height")})
        return out

    def flush(self) -> list[dict[str, Any]]:
        """End of input (or of an epoch): emit everything, audio included."""
        if self._current is not None:
            cur = self._current
            last = max(cur.packets, key=lambda p: p.pts)
            cur.end = last.pts + (last.duration or self.frame_ticks or 1)
            self._waiting.append(cur)
            self._current = None
        out = []
        while self._waiting:
            out.append(self._emit(self._waiting.pop(0), final=not self._waiting))
        return out

    def _push_video(self, pkt: MediaPacket) -> list[dict[str, Any]]:
        pts, dts = self.vunwrap(pkt.pts), pkt.dts
        dts = pts + (pkt.dts - pkt.pts) if pkt.dts is not None else pts
        p = MediaPacket("video", pts, dts, pkt.data, pkt.keyframe, pkt.duration, pkt.wallclock_ms)
        self._video_watermark = pts if self._video_watermark is None else max(self._video_watermark, pts)
        if p.keyframe:
            if self._current is not None:
                self._current.end = pts
                self.indexer.learn(pts - self._current.start)
                if self.check_regular:
                    self._check_regular(self._current)
                self._waiting.append(self._current)
            wc = p.wallclock_ms if p.wallclock_ms is not None else (self.clock_ms() if self.clock_ms else 0)
            self._current = _OpenGop(start=pts, wallclock_ms=wc)
        elif self._current is None:
            self.skipped_before_idr += 1  # nothing decodable before the first IDR
            return []
        elif self.check_regular and pts < self._current.start:
            raise FeedProblem(
                f"open GOP: a frame at pts {pts} after the keyframe at {self._current.start} is shown before it "
                "(leading pictures reference the previous GOP); use --normalize")
        self._current.packets.append(p)
        return self._drain()

    def _push_audio(self, pkt: MediaPacket) -> list[dict[str, Any]]:
        if self.audio is None:
            return []
        pts = self.aunwrap(pkt.pts)
        dts = pts + (pkt.dts - pkt.pts) if pkt.dts is not None else pts
        a = MediaPacket("audio", pts, dts, pkt.data, pkt.keyframe, pkt.duration)
        self._audio.append(a)
        v = self._to_video(pts)
        self._audio_watermark = v if self._audio_watermark is None else max(self._audio_watermark, v)
        return self._drain()

    # --- output ----------------------------------------------------------------------------
    def _to_video(self, audio_pts: int) -> int:
        return int(audio_pts * self.atb / self.tb) if self.atb != self.tb else audio_pts

    def _drain(self) -> list[dict[str, Any]]:
        out = []
        while self._waiting:
            g = self._waiting[0]
            assert g.end is not None
            audio_done = self.audio is None or (
                self._audio_watermark is not None and self._audio_watermark >= g.end)
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
        slack = self.frame_ticks or max(1, self.indexer.nominal // 20)
        if abs(dur - self.indexer.nominal) > slack:
            raise FeedProblem(
                f"irregular GOP: {float(dur * self.tb):.3f} s instead of {float(self.indexer.nominal * self.tb):.3f} s"
                " (scene-cut or variable keyframes); use --normalize")

    def _emit(self, g: _OpenGop, final: bool = False) -> dict[str, Any]:
        assert g.end is not None
        duration = g.end - g.start
        if self._pending_epoch_bump:
            self._pending_epoch_bump = False
            self.indexer.bump_epoch()
        idx, epoch, reason = self.indexer.assign(g.start, duration)
        if reason:
            self.on_event("discontinuity", {"reason": reason, "gop_index": idx, "epoch": epoch})
        if final:
            take, keep = self._audio, []
        else:
            take = [a for a in self._audio if self._to_video(a.pts) < g.end]
            keep = [a for a in self._audio if self._to_video(a.pts) >= g.end]
        if self.gops_out and take and self._to_video(take[0].pts) < g.start - self.frame_ticks_or_1():
            self.late_audio += sum(1 for a in take if self._to_video(a.pts) < g.start)
        self._audio = keep
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

    def frame_ticks_or_1(self) -> int:
        return self.frame_ticks or 1


def _pkt(p: MediaPacket) -> dict[str, Any]:
    return {"pts": p.pts, "dts": p.dts, "duration": p.duration, "keyframe": p.keyframe, "data": p.data}
