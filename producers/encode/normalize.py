"""Re-encode a whole session at the venue to closed, fixed GOPs (libx264) + AAC 48 kHz stereo:
every session with --normalize always; with auto, a session that is not H.264 + AAC (an H.264 feed
is re-encoded GOP by GOP, only where it does not conform: `producers.encode.auto`).

GOP boundaries fall on multiples of the GOP duration of the *source* timeline (PTS rescaled to
1/90000), so two agents normalizing the same feed cut at the same instants and give the same
identities (DESIGN §3.1). A change of resolution opens a fresh encoder and a new epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from producers.encode.gopencoder import VIDEO_TB, AacEncoder, VideoGopEncoder
from producers.media import MediaPacket, ParamsChange, StreamInfo

log = logging.getLogger("producers.encode.normalize")
SAMPLE_RATE = 48000


@dataclass(frozen=True)
class NormalizeSpec:
    gop_seconds: float
    preset: str = "ultrafast"
    threads: int = 0
    mode: str = "always"  # always: every session re-encoded; auto: only what does not conform

    @property
    def gop_ticks(self) -> int:
        return round(self.gop_seconds * 90000)


class Normalizer:
    def __init__(self, vs: Any, aus: Any, spec: NormalizeSpec) -> None:
        import av

        self.vs, self.aus, self.spec = vs, aus, spec
        rate = vs.average_rate or vs.guessed_rate or Fraction(30)
        self.fps = Fraction(rate).limit_denominator(1001)
        self.vdec = av.CodecContext.create(vs.codec_context.name, "r")
        if vs.codec_context.extradata:
            self.vdec.extradata = vs.codec_context.extradata
        self.adec = None
        if aus is not None:
            self.adec = av.CodecContext.create(aus.codec_context.name, "r")
            if aus.codec_context.extradata:
                self.adec.extradata = aus.codec_context.extradata
            self.resampler = av.AudioResampler(format="fltp", layout="stereo", rate=SAMPLE_RATE)
            self.aenc: AacEncoder | None = AacEncoder(SAMPLE_RATE)
        else:
            self.aenc = None
        w, h = vs.codec_context.width or 640, vs.codec_context.height or 360
        self.venc = self._encoder(w, h)
        self._pending: list[np.ndarray] = []
        self._next_sample: int | None = None
        self._next_boundary: int | None = None
        self._last_pts90: int | None = None

    def _encoder(self, w: int, h: int) -> VideoGopEncoder:
        return VideoGopEncoder(w - w % 2, h - h % 2, self.fps, preset=self.spec.preset, threads=self.spec.threads)

    def info(self, label: str, reason: str | None = None) -> StreamInfo:
        return StreamInfo(self.venc.params(), self.aenc.params() if self.aenc else None, VIDEO_TB,
                          Fraction(1, SAMPLE_RATE) if self.aenc else None, gop_ticks=self.spec.gop_ticks,
                          produced_here=True, label=label + " (normalized)", normalize_reason=reason)

    def run(self, packets: Iterator[tuple[Any, int, int]]) -> Iterator[Any]:
        import av

        for pkt, voff, aoff in packets:
            now_ms = _now_ms()
            is_video = pkt.stream is self.vs
            dec = self.vdec if is_video else self.adec
            if dec is None:
                continue
            try:
                frames = dec.decode(_packet(pkt, voff if is_video else aoff))
            except av.error.FFmpegError as exc:
                log.warning("undecodable packet skipped", extra={"reason": str(exc), "kind": pkt.stream.type})
                continue
            yield from self._frames(frames, is_video, now_ms)
        # drain the decoders (frames held for reordering), then the encoders
        for dec, is_video in ((self.vdec, True), (self.adec, False)):
            if dec is not None:
                try:
                    yield from self._frames(dec.decode(None), is_video, _now_ms())
                except av.error.FFmpegError:
                    pass
        yield from self.venc.flush()
        if self.aenc is not None:
            yield from self.aenc.encode(None)

    def _frames(self, frames: list[Any], is_video: bool, now_ms: int) -> Iterator[Any]:
        for fr in frames:
            if not is_video:
                yield from self._audio(fr)
                continue
            if (fr.width - fr.width % 2, fr.height - fr.height % 2) != (self.venc.width, self.venc.height):
                yield from self.venc.flush()
                old = f"{self.venc.width}x{self.venc.height}"
                self.venc = self._encoder(fr.width, fr.height)
                self._next_boundary = None
                yield ParamsChange(self.venc.params(), self.aenc.params() if self.aenc else None,
                                   f"resolution {old} -> {self.venc.width}x{self.venc.height}")
            yield from self._video(fr, now_ms)

    def _video(self, fr: Any, now_ms: int) -> list[MediaPacket]:
        if fr.pts is None:
            return []
        tb = fr.time_base or self.vs.time_base  # frames drained at the end carry no time base
        pts90 = int(Fraction(fr.pts) * tb * 90000)
        if self._last_pts90 is not None and pts90 <= self._last_pts90:
            return []  # duplicate/out-of-order frame after decode: x264 needs increasing pts
        self._last_pts90 = pts90
        gop = self.spec.gop_ticks
        new_gop = self._next_boundary is None or pts90 >= self._next_boundary
        if new_gop:
            self._next_boundary = (pts90 // gop + 1) * gop
        if (fr.width, fr.height) != (self.venc.width, self.venc.height) or fr.format.name != "yuv420p":
            fr = fr.reformat(width=self.venc.width, height=self.venc.height, format="yuv420p")
        return self.venc.encode(fr, pts90, new_gop, wallclock_ms=now_ms)

    def _audio(self, fr: Any) -> list[MediaPacket]:
        import av

        assert self.aenc is not None
        if fr.pts is None:
            return []
        if self._next_sample is None:
            self._next_sample = int(Fraction(fr.pts) * (fr.time_base or self.aus.time_base) * SAMPLE_RATE)
        out: list[MediaPacket] = []
        for r in self.resampler.resample(fr):
            self._pending.append(r.to_ndarray())
        buf = np.concatenate(self._pending, axis=1) if self._pending else np.zeros((2, 0), np.float32)
        n = self.aenc.frame_size
        while buf.shape[1] >= n:
            chunk, buf = buf[:, :n], buf[:, n:]
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="stereo")
            af.sample_rate = SAMPLE_RATE
            af.pts = self._next_sample
            af.time_base = Fraction(1, SAMPLE_RATE)
            self._next_sample += n
            out += self.aenc.encode(af)
        self._pending = [buf] if buf.shape[1] else []
        return out


def _packet(pkt: Any, offset: int) -> Any:
    if offset:
        if pkt.pts is not None:
            pkt.pts += offset
        if pkt.dts is not None:
            pkt.dts += offset
    return pkt


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
