"""--normalize auto: a feed's GOP records in, the GOP records to publish out.

Why here, after the chunker: the chunker cuts the feed at its own keyframes without policing it;
each GOP it emits is judged (`producers.gop.conform`). A conforming GOP is published untouched. From
the first one that is not, the feed is re-encoded: its GOPs are decoded by one continuous decoder
(so B-frames that reference the GOP before still decode; the last GOP passed through warms it up)
and encoded by libx264 as closed GOPs on the fixed grid of --normalize, while the AAC audio passes
through untouched (the encoder never re-encodes audio, and the audio timeline stays whole across
switches). After `switch_back_after` conforming GOPs the feed passes through again.

Identities: every leg (a run of GOPs passed through, or re-encoded) is indexed from its PTS as its
own chunker would; a switch is a discontinuity at a GOP boundary (new epoch, index last + 1), so the
same feed gives the same identities in a primary and a backup agent (`conform.LegIdentities`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import av

from producers.encode.gopencoder import VIDEO_TB, VideoGopEncoder
from producers.encode.normalize import NormalizeSpec
from producers.gop.chunker import Event, GopChunker
from producers.gop.conform import ConformancePolicy, Decision, LegIdentities, shape_of
from producers.media import MediaPacket

log = logging.getLogger("producers.encode.auto")

Switch = Callable[[Decision], None]


class AutoNormalize:
    """Judge each source GOP record; publish it, or re-encode it; switch back when the feed conforms."""

    def __init__(self, spec: NormalizeSpec, *, max_gop_seconds: float | None = None,
                 switch_back_after: int | None = None, on_switch: Switch | None = None,
                 on_event: Event | None = None) -> None:
        self.spec = spec
        kw = {"switch_back_after": switch_back_after} if switch_back_after else {}
        self.policy = ConformancePolicy(max_gop_seconds or 2 * spec.gop_seconds, **kw)
        self.ids = LegIdentities()
        self.on_switch = on_switch or (lambda d: None)
        self.on_event = on_event
        self.legs: list[tuple[str, int]] = []  # (pass | normalize | as-is, first gop_index): tests, debugging
        self._source: GopChunker | None = None
        self._as_is = False
        self._reencode: _Reencode | None = None
        self._leg: object | None = None  # what produces the current leg's records
        self._last_pass: dict[str, Any] | None = None  # warms the decoder when re-encoding starts

    @property
    def normalizing(self) -> bool:
        return self.policy.normalizing

    def begin(self, chunker: GopChunker, produced_here: bool) -> None:
        """A session starts on `chunker`; `produced_here`: the session is re-encoded whole (codec)."""
        if chunker is not self._source:
            self._source = chunker
            self.policy.restart()  # a new timeline: learn its GOP length afresh
            self._last_pass = None
        self._as_is = produced_here

    def feed(self, gops: list[dict[str, Any]], final: bool = False) -> list[dict[str, Any]]:
        """Source GOP records in (`final`: ended by the end of the session, not by a keyframe)."""
        out: list[dict[str, Any]] = []
        for g in gops:
            if self._as_is:
                out.append(self._assign(g, "as-is", self._source))
                continue
            d = self.policy.decide(shape_of(g, closed_by_key=not final))
            if d.switched:
                self.on_switch(d)
            if d.normalize:
                if self._reencode is not None and g["epoch"] != self._reencode.src_epoch:
                    out += self._end_reencode(None)  # the source opened an epoch: so does the re-encoding
                if self._reencode is None:
                    before = self._last_pass if self._last_pass and self._last_pass["epoch"] == g["epoch"] else None
                    start = before["pts_start"] + before["duration"] if before else None  # same timeline only
                    self._reencode = _Reencode(self.spec, g, before, start, self.on_event)
                out += [self._assign(r, "normalize", self._reencode) for r in self._reencode.feed(g)]
            else:
                if self._reencode is not None:
                    out += self._end_reencode(g["pts_start"])
                out.append(self._assign(g, "pass", self._source))
                self._last_pass = g
        return out

    def end_session(self) -> list[dict[str, Any]]:
        """The session ended (after its chunker was flushed): finish a re-encoding in progress."""
        out = self._end_reencode(None) if self._reencode is not None else []
        if self.policy.normalizing:
            self.policy.restart()  # the next pusher gets a fresh look
        self._last_pass = None
        return out

    def _end_reencode(self, end: int | None) -> list[dict[str, Any]]:
        assert self._reencode is not None
        r, self._reencode = self._reencode, None
        return [self._assign(g, "normalize", r) for g in r.finish(end)]

    def _assign(self, g: dict[str, Any], kind: str, producer: Any) -> dict[str, Any]:
        if producer is not self._leg:
            like = producer.chunker.indexer if isinstance(producer, _Reencode) else producer.indexer
            self.ids.start_leg(like)
            self._leg = producer
            out = self.ids.assign(g)
            self.legs.append((kind, out["gop_index"]))
            return out
        return self.ids.assign(g)


class _Reencode:
    """One re-encoded leg: source GOP records -> one decoder -> libx264 on the grid -> a grid chunker."""

    def __init__(self, spec: NormalizeSpec, first: dict[str, Any], warmup: dict[str, Any] | None,
                 start: int | None, on_event: Event | None) -> None:
        self.spec = spec
        self.src_epoch = first["epoch"]
        self.tb = Fraction(first["time_base_num"], first["time_base_den"])
        v = first["video"]
        fps = Fraction(v.get("frame_rate_num") or 0, v.get("frame_rate_den") or 1) or Fraction(30)
        self.dec = av.CodecContext.create(v["codec"], "r")
        if v.get("extradata"):
            self.dec.extradata = v["extradata"]
        self.venc = VideoGopEncoder(v["width"] - v["width"] % 2, v["height"] - v["height"] % 2, fps,
                                    preset=spec.preset, threads=spec.threads)
        self.audio = first.get("audio")
        atb = Fraction(self.audio["time_base_num"], self.audio["time_base_den"]) if self.audio else None
        self.chunker = GopChunker(first["stream_id"], first["ingest_id"], self.venc.params(), self.audio, VIDEO_TB,
                                  atb, gop_ticks=spec.gop_ticks, grid=True, on_event=on_event)
        self.start = start  # frames shown before it (source ticks) were published by the leg before
        self.end: int | None = None
        self._next_boundary: int | None = None
        self._last_pts90: int | None = None
        self._clock: tuple[int, int] = (first["pts_start"], first["capture_wallclock_ms"])
        if warmup is not None and warmup["video"].get("extradata") == v.get("extradata"):
            for _ in self._decode(warmup["video_packets"]):
                pass  # reference frames for B-frames that reach back across the switch

    def feed(self, g: dict[str, Any]) -> list[dict[str, Any]]:
        self._clock = (g["pts_start"], g["capture_wallclock_ms"])
        out: list[dict[str, Any]] = []
        for fr in self._decode(g["video_packets"]):
            out += self._frame(fr)
        for a in g["audio_packets"]:
            out += self.chunker.push(MediaPacket("audio", a["pts"], a["dts"], a["data"], True, a["duration"]))
        return out

    def finish(self, end: int | None) -> list[dict[str, Any]]:
        """End the leg at source pts `end` (where pass-through resumes), or with its last frame."""
        self.end = end
        out: list[dict[str, Any]] = []
        try:
            frames = self.dec.decode(None)
        except av.error.FFmpegError:
            frames = []
        for fr in frames:
            out += self._frame(fr)
        for p in self.venc.flush():
            out += self.chunker.push(p)
        return out + self.chunker.flush()

    def _decode(self, packets: list[dict[str, Any]]) -> list[Any]:
        frames: list[Any] = []
        for p in packets:
            pkt = av.Packet(p["data"])
            pkt.pts, pkt.dts, pkt.time_base = p["pts"], p["dts"], self.tb
            try:
                frames += self.dec.decode(pkt)
            except av.error.FFmpegError as exc:
                log.warning("undecodable packet skipped", extra={"reason": str(exc), "pts": p["pts"]})
        return frames

    def _frame(self, fr: Any) -> list[dict[str, Any]]:
        if fr.pts is None or (self.start is not None and fr.pts < self.start) or (
                self.end is not None and fr.pts >= self.end):
            return []  # shown by the leg before or after this one
        pts90 = int(Fraction(fr.pts) * self.tb / VIDEO_TB)
        if self._last_pts90 is not None and pts90 <= self._last_pts90:
            return []  # x264 needs increasing pts
        self._last_pts90 = pts90
        out: list[dict[str, Any]] = []
        if (fr.width - fr.width % 2, fr.height - fr.height % 2) != (self.venc.width, self.venc.height):
            for p in self.venc.flush():
                out += self.chunker.push(p)
            old = f"{self.venc.width}x{self.venc.height}"
            self.venc = VideoGopEncoder(fr.width - fr.width % 2, fr.height - fr.height % 2, self.venc.fps,
                                        preset=self.spec.preset, threads=self.spec.threads)
            self._next_boundary = None
            out += self.chunker.change_params(self.venc.params(), self.audio,
                                              f"resolution {old} -> {self.venc.width}x{self.venc.height}")
        gop = self.spec.gop_ticks
        new_gop = self._next_boundary is None or pts90 >= self._next_boundary
        if new_gop:
            self._next_boundary = (pts90 // gop + 1) * gop
        if (fr.width, fr.height) != (self.venc.width, self.venc.height) or fr.format.name != "yuv420p":
            fr = fr.reformat(width=self.venc.width, height=self.venc.height, format="yuv420p")
        pts0, wc0 = self._clock
        wallclock = wc0 + int((fr.pts - pts0) * self.tb * 1000)
        for p in self.venc.encode(fr, pts90, new_gop, wallclock_ms=wallclock):
            out += self.chunker.push(p)
        return out
