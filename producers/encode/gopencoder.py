"""Venue-side encoding (test pattern and --normalize): closed fixed GOPs with libx264, AAC audio.

Why a fresh libx264 encoder per GOP: every GOP is closed by construction (nothing can reference
across the boundary, no scene-cut keyframes), and the bytes of a GOP depend only on its frames, so
two agents rendering the same instants produce the same GOPs. Opening an encoder costs 1-14 ms
(MEDIA-NOTES), small beside a GOP. Audio uses one continuous AAC encoder (priming only once).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import av

from producers.media import MediaPacket

VIDEO_TB = Fraction(1, 90000)


class VideoGopEncoder:
    """H.264 High profile, zerolatency, global header (SPS/PPS in extradata, not in-band)."""

    def __init__(self, width: int, height: int, fps: Fraction, *, preset: str = "ultrafast",
                 threads: int = 0, time_base: Fraction = VIDEO_TB, bitrate_kbps: int | None = None) -> None:
        self.width, self.height, self.fps = width, height, Fraction(fps)
        self.preset, self.threads, self.tb, self.bitrate_kbps = preset, threads, time_base, bitrate_kbps
        self.frame_ticks = int(1 / (self.fps * self.tb))
        self._cc: Any = None
        self.extradata = self._open().extradata or b""
        self._cc = None

    def _open(self) -> Any:
        cc = av.CodecContext.create("libx264", "w")
        cc.width, cc.height, cc.pix_fmt = self.width, self.height, "yuv420p"
        cc.time_base, cc.framerate = self.tb, self.fps
        if self.threads:
            cc.thread_count = self.threads
        if self.bitrate_kbps:
            cc.bit_rate = self.bitrate_kbps * 1000
        # ultrafast alone gives Constrained Baseline; 8x8dct+cabac make it High profile.
        cc.options = {"preset": self.preset, "tune": "zerolatency", "profile": "high",
                      "x264-params": "keyint=100000:min-keyint=100000:scenecut=0:8x8dct=1:cabac=1:open-gop=0"}
        cc.flags = cc.flags | av.codec.context.Flags.global_header
        cc.open()
        return cc

    def encode(self, frame: av.VideoFrame, pts: int, new_gop: bool, wallclock_ms: int | None = None
               ) -> list[MediaPacket]:
        """Encode one frame at `pts` (1/90000 unless configured); `new_gop` starts a fresh IDR GOP."""
        out = []
        if new_gop or self._cc is None:
            out += self.flush()
            self._cc = self._open()
        frame.pts, frame.time_base = pts, self.tb
        frame.pict_type = av.video.frame.PictureType.NONE  # a decoded I-frame would force an extra IDR
        out += self._convert(self._cc.encode(frame), wallclock_ms)
        return out

    def flush(self) -> list[MediaPacket]:
        if self._cc is None:
            return []
        pkts = self._convert(self._cc.encode(None), None)
        self._cc = None
        return pkts

    def _convert(self, packets: list[av.Packet], wallclock_ms: int | None) -> list[MediaPacket]:
        return [MediaPacket("video", int(p.pts), int(p.dts if p.dts is not None else p.pts), bytes(p),
                            bool(p.is_keyframe), int(p.duration or self.frame_ticks), wallclock_ms)
                for p in packets]

    def params(self) -> dict[str, Any]:
        return {"codec": "h264", "width": self.width, "height": self.height,
                "frame_rate_num": self.fps.numerator, "frame_rate_den": self.fps.denominator,
                "extradata": self.extradata}


class AacEncoder:
    """One continuous AAC-LC encoder; frame pts are sample counts (time base 1/sample_rate)."""

    def __init__(self, sample_rate: int = 48000, layout: str = "stereo", bitrate_kbps: int = 128) -> None:
        self.sample_rate, self.layout = sample_rate, layout
        cc = av.CodecContext.create("aac", "w")
        cc.sample_rate, cc.layout, cc.format = sample_rate, layout, "fltp"
        cc.time_base = Fraction(1, sample_rate)
        cc.bit_rate = bitrate_kbps * 1000
        cc.flags = cc.flags | av.codec.context.Flags.global_header
        cc.open()
        self.cc = cc
        self.frame_size = cc.frame_size or 1024
        self.channels = cc.layout.nb_channels

    def encode(self, frame: av.AudioFrame | None) -> list[MediaPacket]:
        return [MediaPacket("audio", int(p.pts), int(p.dts if p.dts is not None else p.pts), bytes(p), True,
                            int(p.duration or self.frame_size)) for p in self.cc.encode(frame)]

    def params(self) -> dict[str, Any]:
        return {"codec": "aac", "sample_rate": self.sample_rate, "channels": self.channels,
                "extradata": bytes(self.cc.extradata or b""), "time_base_num": 1, "time_base_den": self.sample_rate}
